"""Sparsity / FLOPs vs robustness frontier of a set of evaluated runs (README, "CPU protocol").

Usage: ``python scripts/frontier.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] --out docs/figures/frontier.png``.
Each RUN_DIR holds ``eval.json`` (``anpvs eval``) and ``config.yaml``; the script prints a Markdown
table (setting, clean, PGD-40, vulnerability, unit sparsity, FLOPs speed-up, memory) and draws
unit sparsity and FLOPs speed-up against PGD-40 accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    p.add_argument("--out", default="frontier.png")
    args = p.parse_args()
    rows = []
    for spec in args.runs:
        label, _, run = spec.rpartition("=")
        m = json.loads((Path(run) / "eval.json").read_text())["metrics"]
        rows.append((label, m))
    print("| Setting | Clean (%) | PGD-40 (%) | Vulnerability | Unit sparsity (%) | FLOPs (x) | Memory (%) "
          "| Active units |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, m in rows:
        print(f"| {label} | {m['clean_acc']:.1f} | {m['pgd_acc']:.1f} | {m['pgd_vulnerability']:.3f} | "
              f"{m['unit_sparsity']:.1f} | {m['flops_speedup']:.2f} | {m['memory_pct']:.1f} | {m['active_units']} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = ((axes[0], "unit_sparsity", "unit sparsity (%)"), (axes[1], "flops_speedup", "FLOPs speed-up (x)"))
    for ax, key, name in panels:
        for label, m in rows:
            ax.scatter(m["pgd_acc"], m[key], s=40)
            ax.annotate(label, (m["pgd_acc"], m[key]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("PGD-40 accuracy (%), eps 0.3")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    fig.suptitle("ANP-VS on the bundled MNIST sample (CPU protocol): compression vs robustness")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
