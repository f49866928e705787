"""The run-folder model: every file name of a training run and of a reproduction, in one place.

A run folder (``anpvs train --out RUN``)::

    RUN/config.yaml          the resolved config
    RUN/log.jsonl            one JSON line per epoch
    RUN/checkpoint.pt        model, optimizers, RNG states, epoch log (written atomically every epoch)
    RUN/eval.json            white-box evaluation (anpvs eval); eval_bb.json with --attack-source,
                             eval_sampled.json / eval_bb_sampled.json with --sample-weights,
                             *_compact.json for a compacted checkpoint beside its source
    RUN/check.json           anpvs check (check_compact.json for a compacted checkpoint)
    RUN/eval_autoattack.json anpvs audit's AutoAttack record
    RUN/.lock, RUN/.anpvs-run   the run lock and the anpvs-run marker (anpvs.training.runlock)

A reproduction folder (``anpvs reproduce --out DIR``)::

    DIR/reproduce.json, DIR/protocol.yaml   the manifest (what was run) and the protocol used
    DIR/runs/source/, DIR/runs/pretrain/<name>/, DIR/runs/<row>/seed<k>/   run folders
    DIR/table.md, table.csv, table.json     the table
    DIR/figures/*.png (+ accuracy_vs_eps.json, their cache)
    DIR/audit.md, DIR/audit.json            anpvs audit
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CONFIG = "config.yaml"
LOCK = ".lock"
MARKER = ".anpvs-run"


class RunDir:
    """The files of one training run. ``RunDir.of(checkpoint)`` is the folder a checkpoint lies in."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, checkpoint: str | os.PathLike[str]) -> RunDir:
        return cls(Path(checkpoint).parent)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def partial_checkpoints(self) -> list[Path]:
        """Temporary files of a checkpoint write that was killed (:mod:`anpvs.io.atomic` names them)."""
        return sorted(self.path.glob(f".{CHECKPOINT}.*.tmp"))

    @staticmethod
    def eval_name(*, black_box: bool = False, sampled: bool = False, compact: bool = False) -> str:
        return ("eval_bb" if black_box else "eval") + ("_sampled" if sampled else "") + (
            "_compact" if compact else "") + ".json"

    def eval_record(self, *, black_box: bool = False, sampled: bool = False, compact: bool = False) -> Path:
        return self.path / self.eval_name(black_box=black_box, sampled=sampled, compact=compact)

    def check_record(self, *, compact: bool = False) -> Path:
        return self.path / ("check_compact.json" if compact else "check.json")

    def autoattack_record(self, *, sampled: bool = False) -> Path:
        """AutoAttack beside PGD on a seeded subset (``anpvs audit``, and the AutoAttack column of a table)."""
        return self.path / ("eval_autoattack_sampled.json" if sampled else "eval_autoattack.json")

    def read_log(self) -> list[dict[str, Any]]:
        """The epoch log (``log.jsonl``), [] when there is none."""
        import json

        if not self.log.is_file():
            return []
        return [json.loads(ln) for ln in self.log.read_text().splitlines() if ln.strip()]


def outside(folder: str | os.PathLike[str], path: str | os.PathLike[str]) -> str | None:
    """Where ``path`` really leads (symbolic links followed) when that is outside ``folder``'s own resolved
    path, else None: a link inside a folder from elsewhere (a tarball, shared storage) that leads out of it."""
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):  # a loop of symbolic links (RuntimeError before Python 3.13)
        return "a loop of symbolic links"
    return None if real.is_relative_to(Path(folder).resolve()) else repr(str(real)[:120])


def check_inside(folder: str | os.PathLike[str], path: str | os.PathLike[str],
                 error: type[Exception] | None = None) -> Path:
    """``path``, after checking that it does not lead out of ``folder`` through a symbolic link; ``error`` (default
    :class:`~anpvs.core.errors.UnsafePathError`) with a one-line message naming the link otherwise."""
    real = outside(folder, path)
    if real is not None:
        from ..core.errors import UnsafePathError

        raise (error or UnsafePathError)(
            f"{str(path)!r} leads outside {str(folder)!r} (through a symbolic link, to {real}); anpvs never reads "
            f"or writes outside the folder it is given: replace the link with the folder itself")
    return Path(path)


class ReproDir:
    """The files of a reproduction (``anpvs reproduce --out DIR``) and its one manifest reader.

    Every path it gives is checked not to lead out of DIR through a symbolic link (:func:`check_inside`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _inside(self, path: Path) -> Path:
        return check_inside(self.path, path)

    @property
    def manifest(self) -> Path:
        return self._inside(self.path / "reproduce.json")

    @property
    def protocol(self) -> Path:
        return self._inside(self.path / "protocol.yaml")

    @property
    def runs(self) -> Path:
        return self._inside(self.path / "runs")

    def source(self) -> RunDir:
        return RunDir(self._inside(self.runs / "source"))

    def pretrain(self, name: str) -> RunDir:
        return RunDir(self._inside(self.runs / "pretrain" / name))

    def row(self, key: str, seed: int) -> RunDir:
        return RunDir(self._inside(self.runs / key / f"seed{seed}"))

    def run(self, relative: str) -> RunDir:
        """A run folder named as in the manifest's ``runs`` (relative to DIR)."""
        return RunDir(self._inside(self.path / relative))

    def table(self, ext: str) -> Path:
        return self._inside(self.path / f"table.{ext}")

    @property
    def figures(self) -> Path:
        return self._inside(self.path / "figures")

    def audit(self, ext: str) -> Path:
        return self._inside(self.path / f"audit.{ext}")

    def read_manifest(self, error: type[Exception]) -> dict[str, Any]:
        """``reproduce.json``, checked; ``error`` (one line) when the folder is not a reproduction or the
        manifest is not what ``anpvs reproduce`` writes."""
        path = self.manifest
        if not path.is_file():
            raise error(f"{str(self.path)!r} is not a reproduction folder (no reproduce.json); "
                        f"run anpvs reproduce --out {self.path} first")
        return read_manifest(path, error)


def read_manifest(path: Path, error: type[Exception]) -> dict[str, Any]:
    """Read ``reproduce.json`` and check its shape; ``error`` (one line) when it is not what reproduce writes."""
    import json

    fix = f"rerun anpvs reproduce --out {str(path.parent)!r} to rewrite it"
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise error(f"{str(path)!r} is not valid JSON ({type(e).__name__}); {fix}") from None
    ok = (isinstance(manifest, dict) and isinstance(manifest.get("runs"), dict)
          and all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["runs"].items())
          and isinstance(manifest.get("seeds"), list) and len(manifest["seeds"]) > 0
          and all(isinstance(v, int) and not isinstance(v, bool) for v in manifest["seeds"])
          and isinstance(manifest.get("rows"), list)
          and all(isinstance(r, dict) and isinstance(r.get("key"), str) and isinstance(r.get("label"), str)
                  for r in manifest["rows"])
          and isinstance(manifest.get("figures") or {}, dict))
    if not ok:
        raise error(f"{str(path)!r} lacks the runs, seeds or rows of a reproduction manifest; {fix}")
    away = [v for v in manifest["runs"].values() if Path(v).is_absolute() or ".." in Path(v).parts]
    if away:  # a manifest from elsewhere must not send the audit to checkpoints outside its folder
        raise error(f"{str(path)!r} names a run outside its folder ({away[0][:120]!r}); {fix}")
    for v in manifest["runs"].values():  # nor may a symbolic link in the folder
        check_inside(path.parent, path.parent / v, error)
    return manifest


__all__ = ["CHECKPOINT", "CONFIG", "LOCK", "LOG", "MARKER", "ReproDir", "RunDir", "check_inside", "outside",
           "read_manifest"]
