"""Wall time of every run of a reproduction folder, from its own logs and records: ``python scripts/run_times.py DIR``.

Training: the sum of ``epoch_time_s`` in each run's ``log.jsonl`` (epochs redone after an interruption count
once, the last time); evaluation: the ``eval_time_s`` of every ``eval*.json`` record of the run (the table's
white-box and black-box evaluation, AutoAttack with its PGD-40, and any other radius). Prints a Markdown table
and the total; times are what the machine took while it ran, including any other work that shared it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_times(run_dir: Path) -> tuple[int, float, float]:
    """(epochs, training seconds, evaluation seconds) of one run folder."""
    per_epoch: dict[int, float] = {}
    log = run_dir / "log.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            rec = json.loads(line) if line.strip() else {}
            if "epoch" in rec and "epoch_time_s" in rec:
                per_epoch[int(rec["epoch"])] = float(rec["epoch_time_s"])
    evaluation = 0.0
    for path in sorted(run_dir.glob("eval*.json")):
        evaluation += float(json.loads(path.read_text()).get("metrics", {}).get("eval_time_s", 0.0))
    return len(per_epoch), sum(per_epoch.values()), evaluation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="the --out folder of anpvs reproduce")
    args = ap.parse_args()
    runs = sorted(p.parent for p in (args.dir / "runs").rglob("log.jsonl"))
    print("| Run | Epochs | Training (min) | Evaluation (min) | Total (min) |")
    print("|---|---:|---:|---:|---:|")
    total_train = total_eval = 0.0
    for run in runs:
        epochs, train, evaluation = run_times(run)
        total_train, total_eval = total_train + train, total_eval + evaluation
        print(f"| `{run.relative_to(args.dir).as_posix()}` | {epochs} | {train / 60:.1f} | {evaluation / 60:.1f} | "
              f"{(train + evaluation) / 60:.1f} |")
    print(f"| **all** | | {total_train / 60:.1f} | {total_eval / 60:.1f} | "
          f"**{(total_train + total_eval) / 60:.1f}** ({(total_train + total_eval) / 3600:.2f} h) |")


if __name__ == "__main__":
    main()
