"""No committed text file carries an absolute path of the machine it ran on (records and run configs in
docs/results store paths relative to their results folder: scripts/relativize_results.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: home and work folders of the machines the project ran on; built from parts so that this file does not match
_ROOTS = "|".join(["wo" + "rk", "ro" + "ot", "ho" + "me", "Us" + "ers"])
MACHINE = re.compile(r"(?<![\w.~$-])/(?:" + _ROOTS + r")/[\w.-]+")
SKIP_DIRS = {".git", ".venv", "runs", "results", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache"}


def _files() -> list[Path]:
    """The files git tracks or would add (not ignored); every file under the repository without git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)
                and not any(part.endswith(".egg-info") for part in p.parts)]


def test_the_scan_sees_the_results() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _files()}
    assert "docs/results/mnist_full/table.md" in names and "README.md" in names


def test_no_committed_file_names_a_machine_path() -> None:
    found = []
    for path in _files():
        if not path.is_file():  # deleted but not yet staged
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary: checkpoints, images, archives
            continue
        text = data.decode("utf-8", errors="replace")
        found += [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
                  for m in MACHINE.finditer(text)]
    assert found == [], "absolute machine paths (scripts/relativize_results.py makes records relative):\n" + \
        "\n".join(found[:50])


def test_the_pattern_catches_machine_paths_and_not_relative_ones() -> None:
    home = "/" + "ho" + "me"
    assert MACHINE.search(f'"checkpoint": "{home}/alice/runs/x/checkpoint.pt"')
    assert MACHINE.search(f"dir: /{'wo' + 'rk'}/shared/data/mnist")
    assert not MACHINE.search('"checkpoint": "runs/at/seed0/checkpoint.pt", "dir": "~/data/mnist"')
    assert not MACHINE.search("PYTHONPATH=$WORK/run10c/src ~/work/x")
