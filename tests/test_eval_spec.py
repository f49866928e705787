"""One evaluation spec: ``anpvs eval``, ``check``, ``figures`` and ``reproduce`` evaluate a run at the radius,
norm and attack of its ``eval`` section (:class:`anpvs.core.config.EvalSpec`), even when it differs from the
training attack."""

from __future__ import annotations

from pathlib import Path

import pytest

from anpvs.core.config import EvalSpec
from anpvs.evaluation.checks import sweep_eps
from anpvs.jobs.check import check_checkpoint
from anpvs.jobs.context import open_run
from anpvs.jobs.evaluate import evaluate_checkpoint
from anpvs.jobs.figures.draw import figure_spec
from anpvs.jobs.figures.plot import FiguresUnavailable
from anpvs.jobs.reproduce import run as rp_run
from anpvs.jobs.reproduce.plan import Job
from anpvs.training.loop import fit
from anpvs.training.run_config import build_config


@pytest.fixture(scope="module")
def eval_apart(tiny_mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny AT run trained at attack.eps 0.3 whose evaluation radius is 0.1 (``--set eval.eps=0.1``)."""
    out = tmp_path_factory.mktemp("eval_apart") / "run"
    cfg = build_config({"data.name": "mnist", "data.dir": str(tiny_mnist_dir), "data.train_limit": 64,
                        "data.test_limit": 16, "device": "cpu", "method.name": "at", "train.epochs": 1,
                        "train.batch_size": 32, "attack.steps": 1, "attack.step_size": 0.1, "eval.eps": 0.1,
                        "eval.steps": 1, "eval.latency": False, "out": str(out)})
    assert (cfg.attack.eps, cfg.eval.eps) == (0.3, 0.1)
    return Path(fit(cfg, progress=False)["checkpoint"])


@pytest.mark.filterwarnings("ignore:the accuracy does not fall")  # one PGD step on an untrained net
def test_every_command_evaluates_at_the_runs_eval_radius(eval_apart: Path) -> None:
    cfg = open_run(eval_apart, device="cpu").cfg
    spec = EvalSpec.of(cfg)
    assert (spec.eps, spec.norm, spec.steps) == (0.1, "linf", 1)

    rec = evaluate_checkpoint(eval_apart, test_limit=16, device="cpu")  # anpvs eval
    assert rec["attack"]["eps"] == 0.1 and rec["attack"]["steps"] == 1
    assert rec["attack"]["eps_source"].startswith("the run's evaluation radius")

    check = check_checkpoint(eval_apart, test_limit=16, probe_size=16, device="cpu")  # anpvs check
    swept = [r["eps"] for r in check["metrics"]["sweep"]]
    assert swept == sweep_eps(0.1, "linf", (1, 28, 28)) and 0.3 not in swept

    assert figure_spec({"at": spec}).eps == 0.1  # anpvs figures: each run's own spec

    seen: dict = {}
    real = rp_run.evaluate_checkpoint

    def spy(ckpt, **kw):
        seen.update(kw)
        return real(ckpt, **kw)

    job = Job(name="at/seed0", kind="row", cfg=cfg, evaluate=True, deps=[], row="at", seed=0)
    with pytest.MonkeyPatch.context() as mp:  # anpvs reproduce
        mp.setattr(rp_run, "evaluate_checkpoint", spy)
        rec, reused = rp_run._evaluate(job, epoch=1, source=None, source_epoch=None, device="cpu", progress=False)
    assert not reused and seen["spec"] == spec and rec["attack"]["eps"] == 0.1


def test_overrides_replace_the_spec_and_unknown_ones_fail(eval_apart: Path) -> None:
    rec = evaluate_checkpoint(eval_apart, test_limit=16, device="cpu", eps=0.05, restarts=2)
    assert (rec["attack"]["eps"], rec["attack"]["restarts"], rec["attack"]["eps_source"]) == (0.05, 2, "command line")
    with pytest.raises(TypeError, match="unknown evaluation setting"):
        evaluate_checkpoint(eval_apart, device="cpu", radius=0.1)


def test_a_figure_refuses_runs_evaluated_under_different_attacks() -> None:
    spec = EvalSpec.of(build_config())
    assert figure_spec({"a": spec, "b": spec.with_overrides(latency=False)}) == spec  # not an attack setting
    with pytest.raises(FiguresUnavailable, match="different attacks"):
        figure_spec({"a": spec, "b": spec.with_overrides(eps=0.1)})
