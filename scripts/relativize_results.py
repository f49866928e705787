"""Replace the absolute paths of the machine that ran an experiment in committed files (run once after copying
results in): ``python scripts/relativize_results.py --work WORK [--dry-run]``, WORK the machine's work folder.

* Records, run ``config.yaml`` files, logs and tables under ``docs/results/``: a path into a folder that was copied
  into ``docs/results`` (``--map FOLDER=REPO``, FOLDER under WORK) becomes relative to the results folder the file
  is in (``docs/results/<name>/``): ``WORK/full_run/mnist_full/runs/at/seed0/checkpoint.pt`` in
  ``docs/results/mnist_full/`` is ``runs/at/seed0/checkpoint.pt``, and in ``docs/results/recipe/``
  ``../mnist_full/runs/at/seed0/checkpoint.pt``. A data folder (``--data FOLDER=PORTABLE``) becomes the portable
  name the README's commands use (``~/data/mnist``).
* The experiment scripts under ``scripts/experiments/``: ``WORK/`` becomes ``$WORK/``, which the script requires.

Relative paths keep what the code compares (``anpvs reproduce`` matches a record's black-box source by its place
relative to the evaluated checkpoint). Any absolute path left over is listed and the exit status is 1;
``tests/test_no_machine_paths.py`` keeps it that way.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path("docs/results")
EXPERIMENTS = Path("scripts/experiments")
#: where the folders of the committed results were, under the work folder of the machine that ran them
MAPS = ["full_run/mnist_full=docs/results/mnist_full", "full_run/long=docs/results/mnist_full/long",
        "full_run/sweep=docs/results/mnist_full/sweep", "full_run/recipe=docs/results/recipe",
        "exp/mnist_cpu=docs/results/mnist_cpu", "runs/cifar10_full=docs/results/cifar10",
        "runs/mnist_frontier=docs/results/mnist_frontier"]
DATA = ["shared/data=~/data"]
TEXT = {".json", ".jsonl", ".yaml", ".yml", ".md", ".csv", ".txt", ".log"}
#: an absolute path of a home or work folder (built from parts so that this file does not match itself)
_ROOTS = "|".join(["wo" + "rk", "ro" + "ot", "ho" + "me", "Us" + "ers"])
MACHINE = re.compile(r"(?<![\w.~$-])/(?:" + _ROOTS + r")/[\w.-]+")
PATH_CHARS = r"[\w.+-]*(?:/[\w.+-]+)*/?"
WORK_HEADER = ('# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),\n'
               '# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.\n'
               ': "${WORK:?set WORK (see the comment above)}"\n')


def _pairs(items: list[str], work: str) -> list[tuple[str, str]]:
    out = [(f"{work.rstrip('/')}/{a}", b) for a, b in (item.split("=", 1) for item in items)]
    return sorted(out, key=lambda p: len(p[0]), reverse=True)  # the longest machine prefix first


def relativize(text: str, results_folder: Path, maps: list[tuple[str, str]], data: list[tuple[str, str]]) -> str:
    """``text`` with every mapped machine path made relative to ``results_folder`` (a repository path)."""
    for machine, repo in maps:
        def rel(m: re.Match, repo: str = repo) -> str:
            target = Path(repo + m.group(1))
            return os.path.relpath(target, results_folder) + ("/" if m.group(1).endswith("/") else "")
        text = re.sub(re.escape(machine) + rf"(/{PATH_CHARS}|(?![\w.-]))", rel, text)
    for machine, portable in data:
        text = re.sub(re.escape(machine) + r"(?![\w.-])", portable, text)
    return text


def results_folder(path: Path) -> Path:
    return Path(*path.parts[:3])  # docs/results/<name>


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=os.environ.get("WORK"), help="the machine's work folder (default: $WORK)")
    ap.add_argument("--map", action="append", default=None, help="FOLDER=REPO (default: this repository's)")
    ap.add_argument("--data", action="append", default=None, help="FOLDER=PORTABLE data folder")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    if not args.work:
        ap.error("--work (or $WORK) is required")
    maps, data = _pairs(args.map or MAPS, args.work), _pairs(args.data or DATA, args.work)
    os.chdir(ROOT)
    changed, left = [], []
    for path in sorted(p for p in RESULTS.rglob("*") if p.is_file() and p.suffix in TEXT):
        text = path.read_text()
        new = relativize(text, results_folder(path), maps, data)
        if new != text:
            changed.append(path)
            if not args.dry_run:
                path.write_text(new)
        left += [f"{path}: {m.group(0)}" for m in MACHINE.finditer(new)]
    for path in sorted(EXPERIMENTS.rglob("*.sh")):
        text = path.read_text()
        new = re.sub(r"(?<![\w.~$-])" + re.escape(args.work.rstrip("/") + "/"), "$WORK/", text)
        if new != text and "${WORK:?" not in new:
            head, _, rest = new.partition("\n")
            new = f"{head}\n{WORK_HEADER}{rest}" if head.startswith("#!") else WORK_HEADER + new
        if new != text:
            changed.append(path)
            if not args.dry_run:
                path.write_text(new)
        left += [f"{path}: {m.group(0)}" for m in MACHINE.finditer(new)]
    print(f"{'would change' if args.dry_run else 'changed'} {len(changed)} files")
    for line in left:
        print("left:", line, file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
