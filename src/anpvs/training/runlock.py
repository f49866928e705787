"""One run per folder: an exclusive lock file, the anpvs-run marker, and cleanup of interrupted writes.

``<run>/.lock`` is opened and locked with ``fcntl.flock``; the kernel drops the lock when the process
ends in any way (also ``kill -9``), so a stale lock file left by a killed run never blocks a later one:
only a live process holds the lock. The file carries the holder's pid for the error message and is
removed when the run ends; a process that locked a file just removed by its holder sees that the path
now names another file (or none) and tries again, so two processes never hold "the" lock at once.
Where ``fcntl`` does not exist, the file is created with ``O_EXCL`` and a lock whose pid is no longer
alive is taken over.

A run folder may come from someone else (a tarball, shared storage): the lock and the marker are opened with
``O_NOFOLLOW``, a lock file that is not a plain file of one link is refused instead of truncated, and
:func:`refuse_links` stops a run whose own files are symbolic links, before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import link_error
from ..io.atomic import pid_alive
from ..io.rundir import CHECKPOINT, CONFIG, LOCK, LOG, MARKER, RunDir

LOCK_NAME = LOCK
#: written at the start of every run: marks a folder as an anpvs run even before its first checkpoint
MARKER_NAME = MARKER
#: files an anpvs run folder may hold besides its checkpoint; anything else makes ``--out`` "foreign"
RUN_FILES = (CONFIG, LOG, CHECKPOINT, LOCK_NAME, MARKER_NAME)


def foreign_entries(run_dir: Path) -> list[str]:
    """Entries of an existing ``run_dir`` that show it is *not* an anpvs run ([] for a run or an empty folder).

    A folder is an anpvs run when it holds the marker or a checkpoint; then nothing in it is foreign."""
    if not run_dir.is_dir():
        return []
    names = sorted(p.name for p in run_dir.iterdir())
    if MARKER_NAME in names or CHECKPOINT in names:
        return []
    return [n for n in names if n != LOCK_NAME]  # a lock alone: a run stopped before it wrote its marker


def refuse_links(run_dir: Path) -> None:
    """:class:`~anpvs.core.errors.UnsafePathError` naming the first of the run's own files that is a symbolic link:
    writing it would write wherever the link points (or replace a link someone made on purpose)."""
    for name in RUN_FILES:
        if (Path(run_dir) / name).is_symlink():
            raise link_error(Path(run_dir) / name)


def mark_run(run_dir: Path) -> bool:
    """Create the anpvs-run marker of ``run_dir`` unless it exists (never through a symbolic link); returns
    whether this call created it."""
    path = Path(run_dir) / MARKER_NAME
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))
    except FileExistsError:
        if path.is_symlink():
            raise link_error(path) from None
        return False
    return True


def clean_partial_writes(run_dir: Path) -> list[Path]:
    """Delete ``.checkpoint.pt.*.tmp`` files left by a write that was killed (call while holding the lock)."""
    removed = []
    for p in RunDir(run_dir).partial_checkpoints:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def _rank() -> int:
    """The process's rank under ``torchrun`` (``RANK``), 0 otherwise."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class RunLock:
    """Exclusive lock of one run folder (``with RunLock(dir): ...``); :class:`TrainingError` if it is taken."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def _busy(self, pid_text: str) -> Exception:
        from ..core.errors import TrainingError

        who = f"pid {pid_text}" if pid_text else "another process"
        return TrainingError(f"{str(self.path.parent)!r} is in use by another anpvs run ({who}); wait for it "
                             f"to finish or choose another --out")

    def acquire(self) -> RunLock:
        if _rank() > 0:  # distributed training: rank 0 holds the lock for the whole job
            return self
        try:
            import fcntl
        except ImportError:  # pragma: no cover  (Windows)
            return self._acquire_exclusive_create()
        for _ in range(100):
            fd = self._open(os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                raise self._busy(holder) from None
            try:
                same = os.lstat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file between our open and our lock: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return self
        raise self._busy("")  # pragma: no cover

    def _open(self, flags: int) -> int:
        """``os.open`` of the lock file, never through a symbolic link and never of anything but a plain file of
        one link (truncating it would destroy whatever it is)."""
        from ..core.errors import UnsafePathError

        try:
            fd = os.open(self.path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o644)
        except OSError:
            if self.path.is_symlink():
                raise link_error(self.path) from None
            if self.path.exists() and not self.path.is_file():
                raise UnsafePathError(f"{str(self.path)!r} is not a plain file; anpvs locks a run with a file of "
                                      f"that name: remove it and rerun") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            what = "has other hard links" if stat.S_ISREG(st.st_mode) else "is not a plain file"
            raise UnsafePathError(f"{str(self.path)!r} {what}; anpvs writes its pid into the lock file of a run "
                                  f"and would change them too: remove it and rerun")
        return fd

    def _acquire_exclusive_create(self) -> RunLock:  # pragma: no cover  (Windows)
        for _ in range(2):
            try:
                fd = self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                text = self.path.read_text(errors="replace").strip()
                if text.isdigit() and not pid_alive(int(text)):
                    self.path.unlink(missing_ok=True)  # stale: its holder is gone
                    continue
                raise self._busy(text) from None
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return self
        raise self._busy("")

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            import fcntl
        except ImportError:  # pragma: no cover
            os.close(fd)
            self.path.unlink(missing_ok=True)
            return
        self.path.unlink(missing_ok=True)  # while still locked: see the module docstring
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def locked_run(run_dir: Path) -> Iterator[RunLock]:
    with RunLock(run_dir) as lock:
        yield lock


__all__ = ["LOCK_NAME", "MARKER_NAME", "RunLock", "clean_partial_writes", "foreign_entries", "locked_run", "mark_run",
           "refuse_links"]
