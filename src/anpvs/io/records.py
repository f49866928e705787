"""Reading JSON records back, and the one rule for "is this record still current".

A record (``eval*.json``, ``check.json``, ``eval_autoattack.json``, ...) is *current* for a checkpoint when
it is no older than the checkpoint and every expected setting has the expected value. Both resumable jobs
use it: ``anpvs reproduce`` (epoch, black-box source, attack, test subset) and ``anpvs audit`` (its
``audit`` block)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

#: the value an expectation sees for a key the record lacks
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


def read_json(path: str | Path) -> Any | None:
    """The JSON document at ``path``, or None when it is missing or unreadable (or nested thousands deep)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return None


def _lookup(record: Mapping[str, Any], key: str) -> Any:
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def fresh_record(path: str | Path, *, checkpoint: str | Path | None = None, inputs: Iterable[str | Path] = (),
                 expect: Mapping[str, Any | Callable[[Any], bool]] | None = None) -> dict[str, Any] | None:
    """The record at ``path`` if it is current, else None.

    Current: it exists and parses, its file is not older than ``checkpoint`` (when given) nor than any of the
    other files it was computed from (``inputs``, e.g. a black-box source; a missing one makes it stale), and
    every ``expect`` entry holds: a dotted key (``"attack.eps"``) maps to the value it must have, or to a
    predicate of that value (:data:`MISSING` when the record lacks the key)."""
    path = Path(path)
    if not path.is_file():
        return None
    made = path.stat().st_mtime_ns
    for src in [*([checkpoint] if checkpoint is not None else []), *inputs]:
        if not Path(src).is_file() or made < Path(src).stat().st_mtime_ns:
            return None
    rec = read_json(path)
    if not isinstance(rec, dict):
        return None
    for key, want in (expect or {}).items():
        have = _lookup(rec, key)
        if not (want(have) if callable(want) else have == want):
            return None
    return rec


def stamp_record(rec: dict[str, Any], path: str | Path, **settings: Any) -> dict[str, Any]:
    """Write ``rec`` to ``path`` (atomically) with its ``audit`` block set to ``settings``: the settings a
    later :func:`fresh_record` expects (``expect={"audit": settings}``)."""
    from .atomic import write_json

    rec.pop("record_path", None)
    rec["audit"] = settings
    write_json(path, rec)  # atomic: an interrupted job leaves no half record behind
    return rec


__all__ = ["MISSING", "fresh_record", "read_json", "stamp_record"]
