"""The project's error types and the checks of numbers and output paths shared by every command.

Every anticipated failure raises a subclass of :class:`AnpvsError` whose message is one line that
names the problem and the fix; the command line prints it as ``anpvs: error: <message>`` and exits with
the class's :attr:`~AnpvsError.exit_code` (docs/reliability.md lists them). The concrete classes stay
beside the code that raises them (``CheckpointError`` in :mod:`anpvs.models.checkpoint`, ...), except the few that
several layers raise, defined here (``ConfigError``, also importable from :mod:`anpvs.core.config`; ``TrainingError``,
also from :mod:`anpvs.training.loop`). They also derive from the built-in exception they used to be, so
``except ValueError`` around :func:`anpvs.data.load_dataset` keeps working.
"""

from __future__ import annotations

import errno
import math
import os
import reprlib
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class AnpvsError(Exception):
    """Base of every error anpvs raises on purpose (bad input, missing data, refused outputs, ...)."""

    #: exit status of the command line (2: the command was wrong, 1: the input or the run failed)
    exit_code: int = 1


class ConfigError(AnpvsError, ValueError):
    """A bad configuration key or value (the CLI prints it as one line and exits with status 2)."""

    exit_code = 2


class TrainingError(AnpvsError, RuntimeError):
    """Training cannot go on (diverged loss, collapsed layer, refusing to overwrite a run, a missing device)."""


class DataError(AnpvsError, ValueError):
    """A dataset on disk that cannot be used as it is (corrupt file, wrong format, bad labels or sizes)."""


class OutputError(AnpvsError, OSError):
    """An output path that cannot or must not be written (read-only, under a file, the input itself)."""

    exit_code = 2


class UnsafePathError(AnpvsError, OSError):
    """A symbolic link where anpvs writes or locks, or one that leads out of a run or reproduction folder."""


class StorageError(AnpvsError, OSError):
    """The file system refused a write: no space left, quota exceeded, read-only (the message names the path).

    The message is ``"{problem}; {action} and {then}"`` (``"... writing 'x'; free space and rerun the command"``);
    ``result`` is what the command computed and could not write (``anpvs eval`` prints it instead), or None."""

    def __init__(self, problem: str, action: str, *, then: str = "rerun the command", result: Any = None) -> None:
        super().__init__(f"{problem}; {action} and {then}")
        self.problem, self.action, self.then, self.result = problem, action, then, result


#: errno -> (what happened, what to do) of the write failures that are the disk's, not anpvs's
_STORAGE = {errno.ENOSPC: ("no space left on device", "free space"),
            errno.EDQUOT: ("disk quota exceeded", "free space within your quota"),
            errno.EROFS: ("read-only file system", "make it writable or write elsewhere")}


def storage_error(e: BaseException, path: str | os.PathLike[str]) -> StorageError | None:
    """A :class:`StorageError` naming ``path`` when ``e`` is a full disk, a quota or a read-only file system."""
    if not isinstance(e, OSError) or e.errno not in _STORAGE:
        return None
    problem, action = _STORAGE[e.errno]
    return StorageError(f"{problem} writing {str(path)!r}", action)


def link_error(path: str | os.PathLike[str]) -> UnsafePathError:
    """The one-line refusal of a symbolic link where anpvs would write or lock."""
    try:
        target = f" to {os.readlink(path)[:120]!r}"
    except OSError:
        target = ""
    return UnsafePathError(f"{str(path)!r} is a symbolic link{target}; anpvs never writes or locks through a link "
                           f"(it could lead outside the folder): remove the link and rerun")


#: bytes :func:`check_output_file` writes where the output will go (a record is a few kilobytes)
PROBE_BYTES = 64 * 1024


def _check_disk(path: Path, folder: Path) -> None:
    """Write :data:`PROBE_BYTES` to a temporary file in ``folder`` and remove it: a full disk, a quota or a
    read-only file system is a :class:`StorageError` naming ``path`` now, before the work, not after it."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=folder)
        os.close(fd)
        with open(tmp, "wb") as f:
            f.write(bytes(PROBE_BYTES))
    except OSError as e:
        err = storage_error(e, path)
        if err is None:
            raise
        raise err from e
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


class DeviceError(AnpvsError, RuntimeError):
    """A device that does not exist on this machine."""

    exit_code = 2


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the command (a ``KeyboardInterrupt``, so ``except Exception`` lets it pass).

    ``exit_code`` is ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), as a shell reports it."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        import signal

        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name if self.signum in signal.Signals._value2member_map_ else str(signum)
        self.signame = name
        super().__init__(message or f"stopped by {name}")


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` of at most ``limit`` characters: error messages quote a prefix of a value, never all of it
    (a value from a hostile file may be megabytes long or nested thousands deep)."""
    r = reprlib.Repr()
    r.maxstring = r.maxother = r.maxlong = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 6
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def finite(value: Any, what: str) -> float:
    """``float(value)`` if it is a finite number, else :class:`ConfigError` naming ``what``."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{what} must be a number (got {short(value)})") from None
    if not math.isfinite(v):
        raise ConfigError(f"{what} must be a finite number (got {short(value)})")
    return v


def finite_float(text: str) -> float:
    """argparse ``type=``: a finite float (``nan``, ``inf`` and non-numbers are usage errors)."""
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def seed_int(text: str) -> int:
    """argparse ``type=``: an integer seed that fits in 64 bits (torch and numpy refuse larger ones)."""
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not -2**63 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"seed {text} does not fit in 64 bits; use a smaller seed")
    return v


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: str | os.PathLike[str], *, flag: str = "--out",
                      inputs: Iterable[str | os.PathLike[str] | None] = (), example: str = "eval.json") -> Path:
    """Refuse an output file that cannot be written, before any work starts; returns it as a ``Path``.

    Refused: an empty name, an existing folder, a symbolic link, a path under a file, a read-only folder, any
    of ``inputs`` (e.g. ``anpvs eval CKPT --out CKPT`` would overwrite the checkpoint with JSON), and a folder
    whose disk is full, over quota or read-only (a small file is written and removed there)."""
    if str(path).strip() == "":
        raise OutputError(f"{flag} is empty; give a file name such as {example}")
    p = Path(path).expanduser()
    for src in inputs:
        if src is not None and (_same_file(p, Path(src)) or p.resolve() == Path(src).resolve()):
            raise OutputError(f"{flag} {str(p)!r} is an input of this command; writing it would destroy it; "
                              f"choose another {flag}")
    if p.is_symlink():
        raise link_error(p)
    if p.is_dir():
        raise OutputError(f"{flag} {str(p)!r} is a folder; give a file name inside it, e.g. {str(p / example)!r}")
    base = _nearest_existing(p.parent)
    if not base.is_dir():
        raise OutputError(f"{flag} {str(p)!r} lies under {str(base)!r}, which is a file, not a folder; "
                          f"choose another {flag}")
    if not os.access(base, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise OutputError(f"{flag} {str(p)!r} is not writable (no write permission in {str(base)!r}); "
                          f"choose another {flag}")
    _check_disk(p, base)
    return p


__all__ = ["AnpvsError", "ConfigError", "DataError", "DeviceError", "OutputError", "RunInterrupted", "StorageError",
           "TrainingError", "UnsafePathError", "check_output_file", "finite", "finite_float", "link_error", "seed_int",
           "short", "storage_error"]
