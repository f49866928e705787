"""SIGINT and SIGTERM as exceptions, with critical sections that finish before the exception is raised.

:func:`graceful_signals` (the command line wraps every command in it) turns both signals into
:class:`~anpvs.core.errors.RunInterrupted`, raised in the main thread at the next Python instruction. Inside a
:func:`deferred_signals` block (the checkpoint write) the signal is remembered and raised when the block
ends, so a checkpoint is always either the old one or the complete new one. Training abandons the
interrupted epoch and keeps the checkpoint of the last finished epoch, from which ``--resume`` redoes
the epoch exactly (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from .errors import RunInterrupted

_state = {"depth": 0, "pending": None, "installed": False}


def _handler(signum: int, frame) -> None:  # noqa: ARG001  (signal handler signature)
    if _state["depth"] > 0:
        _state["pending"] = signum  # raised when the critical section ends
        return
    raise RunInterrupted(signum)


@contextlib.contextmanager
def graceful_signals() -> Iterator[None]:
    """Raise :class:`RunInterrupted` on SIGINT/SIGTERM inside the block (no-op outside the main thread)."""
    if threading.current_thread() is not threading.main_thread() or _state["installed"]:
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, _handler)
    _state["installed"] = True
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _state["installed"] = False
        _state["pending"] = None


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM (when :func:`graceful_signals` is active) until the block is done."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        pending = _state["pending"]
        if _state["depth"] == 0 and pending is not None:
            _state["pending"] = None
            raise RunInterrupted(pending)


__all__ = ["deferred_signals", "graceful_signals"]
