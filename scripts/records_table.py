"""Print a Markdown table of anpvs evaluation records: ``python scripts/records_table.py LABEL=RUN_DIR ...``.

Each RUN_DIR holds ``eval.json`` (or ``eval_bb.json``) written by ``anpvs eval`` / ``anpvs reproduce``. A
``LABEL`` may contain ``|`` to fill leading columns (e.g. ``"PGD-20, 0.01|ANP-VS, lambda 1e-2=runs/x"``), given
their headers with ``--lead "Training attack|Row"``. Used for docs/results/mnist_full/vs_and_training_attack.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    ap.add_argument("--lead", default="Row", help="headers of the label's |-separated cells")
    args = ap.parse_args()
    lead = args.lead.split("|")
    cols = ["Clean (%)", "PGD-40 (%)", "White-box vuln.", "Active units", "Unit sparsity (%)", "FLOPs (x)",
            "Memory (%)", "Train time (min)"]
    print("| " + " | ".join(lead + cols) + " |")
    print("|" + "---|" * len(lead) + "---:|" * 3 + "---|" + "---:|" * 4)
    for item in args.runs:
        label, _, run = item.rpartition("=")
        run_dir = Path(run)
        rec_path = next(p for p in (run_dir / "eval.json", run_dir / "eval_bb.json") if p.is_file())
        m = json.loads(rec_path.read_text())["metrics"]
        log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
        minutes = sum(r.get("epoch_time_s", 0.0) for r in log) / 60
        cells = label.split("|") + [f"{m['clean_acc']:.2f}", f"{m['pgd_acc']:.2f}", f"{m['pgd_vulnerability']:.3f}",
                                    str(m["active_units"]), f"{m['unit_sparsity']:.1f}", f"{m['flops_speedup']:.2f}",
                                    f"{m['memory_pct']:.1f}", f"{minutes:.1f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
