"""Re-time the masked and the compacted network of finished runs on an idle machine, without re-running their
attacks: ``python scripts/latency_table.py [--threads 1] LABEL=CHECKPOINT ...`` prints a Markdown table.

A reproduction's "Measured speed-up" column comes from the evaluation record, timed on whatever load the machine
had while the table was being trained. This script measures the same thing
(:func:`anpvs.evaluation.evaluate.efficiency`: median latency at batch 1 and 256, interleaved) for the checkpoints
given, with a longer timing budget, and prints it beside the analytic FLOPs speed-up.
Used for docs/results/mnist_full/latency.md.
"""

from __future__ import annotations

import argparse

import torch

from anpvs.evaluation.evaluate import efficiency
from anpvs.models.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=CHECKPOINT")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--budget-s", type=float, default=1.5, help="seconds of timing per network and batch size")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| Row | Active units | FLOPs (x) | Masked B=1 (ms) | Compacted B=1 (ms) | Measured B=1 (x) "
          "| Masked B=256 (ms) | Compacted B=256 (ms) | Measured B=256 (x) |")
    print("|---|---|" + "---:|" * 7)
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"error: expected LABEL=CHECKPOINT, got {item!r}")
        model, _ = load_model(path)
        eff = efficiency(model, latency_budget_s=args.budget_s)
        ms = eff["latency_ms"]
        print(f"| {label} | {eff['active_units']} | {eff['flops_speedup']:.2f} | {ms['masked']['b1']:.3f} "
              f"| {ms['compact']['b1']:.3f} | {eff['wallclock_speedup_b1']:.2f} | {ms['masked']['b256']:.2f} "
              f"| {ms['compact']['b256']:.2f} | {eff['wallclock_speedup_b256']:.2f} |")


if __name__ == "__main__":
    main()
