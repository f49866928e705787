"""The one atomic writer: every file anpvs writes (checkpoints, records, logs, tables, manifests, exports,
figures) goes to a temporary file in the same folder and is renamed over its path, so a crash or a kill
mid-write leaves the previous file intact and never half a file. SIGINT/SIGTERM wait until the file is in place.

Never through a link: a destination that is a symbolic link is refused (the rename would replace the link,
a plain ``open`` would write wherever it points), and appends and lock files are opened with ``O_NOFOLLOW``.
A full disk, a quota or a read-only file system is a :class:`~anpvs.core.errors.StorageError` naming the path.
The file gets the mode a plain ``open()`` would give it (``0666 & ~umask``, or the mode of the file it
replaces), not ``mkstemp``'s 0600. Temporary files carry the writer's pid (``.<name>.<pid>-<random>.tmp``):
the next write of the same file removes those whose process is gone (a killed ``anpvs eval``'s, say)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..core.errors import link_error, storage_error

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, for a moment, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The mode of the file ``path`` replaces, or ``0666 & ~umask`` for a new one (what ``open()`` gives)."""
    try:
        st = os.stat(path, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def clean_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files of earlier writes of ``path`` whose writer process is gone; returns them."""
    path = Path(path)
    removed = []
    try:
        leftovers = [p for p in path.parent.iterdir()
                     if p.name.startswith(f".{path.name}.") and p.name.endswith(".tmp")]
    except OSError:
        return []
    for p in leftovers:
        pid = p.name[len(path.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def _storage_or_raise(e: BaseException, path: Path) -> None:
    err = storage_error(e, path)
    if err is not None:
        raise err from e


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (``.<name>.<pid>-<random>.tmp``), then rename it
    over ``path``; the temporary file is removed if ``write`` fails. Returns ``path``.

    :class:`~anpvs.core.errors.UnsafePathError` when ``path`` is a symbolic link,
    :class:`~anpvs.core.errors.StorageError` when the disk is full, over quota or read-only (the previous file, if
    any, stays)."""
    from ..core.signals import deferred_signals

    path = Path(path)
    if path.is_symlink():
        raise link_error(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path)
        mode = _mode_for(path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:
        _storage_or_raise(e, path)
        raise
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        with deferred_signals():  # SIGINT/SIGTERM wait until the file is complete and in place
            write(Path(tmp))
            os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        _storage_or_raise(e, path)
        raise
    return path


def atomic_stream(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """:func:`atomic_write` that hands ``write`` the open binary file (``torch.save(obj, f)``): a failed write
    then raises the ``OSError`` itself (with a path, torch wraps it in a ``RuntimeError`` without its errno)."""
    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return atomic_write(path, to_file)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_stream(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """JSON with a final newline (``indent=2``: the layout of every record anpvs writes)."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def append_text(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` to ``path`` (created if missing), never through a symbolic link."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o666)
    except OSError as e:
        if path.is_symlink():
            raise link_error(path) from None
        _storage_or_raise(e, path)
        raise
    try:
        with os.fdopen(fd, "ab") as f:
            f.write(text.encode("utf-8"))
    except OSError as e:
        _storage_or_raise(e, path)
        raise


__all__ = ["append_text", "atomic_stream", "atomic_write", "clean_stale_temps", "pid_alive", "write_bytes",
           "write_json", "write_text"]
