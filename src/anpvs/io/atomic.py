"""The one atomic writer: every file anpvs writes (checkpoints, records, logs, tables, manifests, exports)
goes to a temporary file in the same folder and is renamed over its path, so a crash or a kill mid-write
leaves the previous file intact and never half a file. SIGINT/SIGTERM wait until the file is in place."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (``.<name>.<random>.tmp``), then rename it over
    ``path``; the temporary file is removed if ``write`` fails. Returns ``path``."""
    from ..signals import deferred_signals

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with deferred_signals():  # SIGINT/SIGTERM wait until the file is complete and in place
            write(Path(tmp))
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """JSON with a final newline (``indent=2``: the layout of every record anpvs writes)."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


__all__ = ["atomic_write", "write_bytes", "write_json", "write_text"]
