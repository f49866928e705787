"""Per-epoch validation curves of runs trained with a validation split (``--val-size``), from their log.jsonl:
``python scripts/plot_training_curves.py --out FIG.png LABEL=RUN_DIR ...``.

Three panels: validation PGD accuracy of the test-mode network (the training attack), validation vulnerability,
active units (sum over layers; all units for unmasked models). Also prints the numbers as a Markdown table.
Needs matplotlib (``pip install 'anpvs[plots]'``). Used for docs/results/mnist_full/long_run.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _units(row: dict, full: int | None) -> int | None:
    units = row.get("active_units")
    return sum(units.values()) if isinstance(units, dict) else full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    ap.add_argument("--out", required=True, help="the figure (.png)")
    ap.add_argument("--full-units", type=int, default=1370, help="active units of an unmasked model (LeNet5-Caffe)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for item in args.runs:
        label, _, run = item.rpartition("=")
        log = [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines() if line.strip()]
        log = [r for r in log if "val_clean_acc" in r]
        pgd_key = next(k for k in log[0] if k.startswith("val_pgd") and k.endswith("_acc"))
        curves[label] = {"epoch": [r["epoch"] for r in log], "clean": [r["val_clean_acc"] for r in log],
                         "pgd": [r[pgd_key] for r in log], "v": [r.get("val_vulnerability") for r in log],
                         "units": [_units(r, args.full_units) for r in log], "pgd_key": pgd_key}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = next(iter(curves.values()))["pgd_key"].removeprefix("val_pgd").removesuffix("_acc")
    for label, c in curves.items():
        axes[0].plot(c["epoch"], c["pgd"], marker="o", label=label)
        axes[1].plot(c["epoch"], c["v"], marker="o", label=label)
        axes[2].plot(c["epoch"], c["units"], marker="o", label=label)
    for ax, title in zip(axes, (f"validation PGD-{steps} accuracy (%)", "validation vulnerability",
                                "active units (all layers)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"| Run | Epoch | Val clean (%) | Val PGD-{steps} (%) | Val vuln. | Active units |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, c in curves.items():
        for e, cl, p, v, u in zip(c["epoch"], c["clean"], c["pgd"], c["v"], c["units"], strict=True):
            print(f"| {label} | {e} | {cl:.2f} | {p:.2f} | {v:.4f} | {u} |")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
