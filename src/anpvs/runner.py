"""Old import path of ``anpvs eval`` and ``anpvs demo`` (now :mod:`anpvs.jobs.evaluate`, :mod:`anpvs.jobs.demo`)."""

from .jobs.context import SAMPLED_ENSEMBLE, SAMPLED_EOT, sampling_setup
from .jobs.demo import DEMO_COMMON, DEMO_RUNS, run_demo
from .jobs.evaluate import evaluate_checkpoint, format_cost, format_eval

__all__ = ["DEMO_COMMON", "DEMO_RUNS", "SAMPLED_ENSEMBLE", "SAMPLED_EOT", "evaluate_checkpoint", "format_cost",
           "format_eval", "run_demo", "sampling_setup"]
