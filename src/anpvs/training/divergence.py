"""Divergence guard: stop a run whose loss has exploded, and say which checkpoint is left.

The per-step check in :func:`anpvs.training.loop.fit` stops at the first non-finite loss. This guard adds the
epoch-level check: an epoch whose mean loss is above ``factor`` times the loss of the first
``warmup`` steps of the run (default: the first step, the loss of the initial weights; later steps
of a diverging run are already inflated) *and* above ``chance_factor`` times the loss of a uniform guess
(``ln(num_classes)``) has diverged (e.g. ``--lr 1e6`` reaches 6e29 at chance accuracy). Both bounds
must be crossed, so a run that starts with a tiny loss is not stopped for a modest rise. The reference
survives ``--resume``: it is stored in the checkpoint (``guard``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def checkpoint_note(run_dir: str | Path, epochs_done: int) -> str:
    """What a stopped run leaves behind, for error messages: never "the last good checkpoint" when none exists."""
    if epochs_done <= 0:
        return f"no checkpoint was written (the run stopped in its first epoch); nothing to resume in {str(run_dir)!r}"
    return f"the checkpoint of epoch {epochs_done} is kept in {str(run_dir)!r}"


class DivergenceGuard:
    """Watches the loss of a run; :meth:`check_epoch` raises :class:`TrainingError` when it has diverged."""

    def __init__(self, num_classes: int, *, warmup: int = 1, factor: float = 100.0, chance_factor: float = 10.0):
        self.warmup = warmup
        self.factor = factor
        self.floor = chance_factor * math.log(max(num_classes, 2))
        self.first: list[float] = []  # losses of the first steps of the run
        self.reference: float | None = None

    def watch(self, loss_fn):
        """Wrap ``method.loss`` so the first ``warmup`` losses of the run are recorded (nothing else changes)."""
        def wrapped(*args: Any, **kwargs: Any):
            out = loss_fn(*args, **kwargs)
            if self.reference is None and "loss" in out:
                v = float(out["loss"].detach())
                if math.isfinite(v):
                    self.first.append(v)
                if len(self.first) >= self.warmup:
                    self._fix_reference()
            return out

        wrapped.__wrapped__ = loss_fn  # type: ignore[attr-defined]
        return wrapped

    def _fix_reference(self) -> None:
        if self.reference is None and self.first:
            self.reference = sum(self.first) / len(self.first)

    def check_epoch(self, epoch: int, metrics: dict[str, Any], run_dir: str | Path) -> None:
        """After epoch ``epoch`` (0-based, not yet checkpointed): stop on a non-finite or exploded mean loss."""
        from ..core.errors import TrainingError

        self._fix_reference()
        terms = [k for k in ("loss", "mask_loss") if isinstance(metrics.get(k), (int, float))]
        for k in terms:
            v = float(metrics[k])
            if not math.isfinite(v):
                raise TrainingError(f"the mean {k} of epoch {epoch + 1} is {v}; {checkpoint_note(run_dir, epoch)}; "
                                    f"lower train.lr or check the data")
        v = float(metrics.get("loss", 0.0))
        ref = self.reference
        if ref is not None and v > self.factor * ref and v > self.floor:
            raise TrainingError(f"loss diverged in epoch {epoch + 1}: mean loss {v:.3g} is over {self.factor:g}x its "
                                f"start ({ref:.3g}) and over {self.floor:.3g} (10x chance); "
                                f"{checkpoint_note(run_dir, epoch)}; lower train.lr (e.g. by 10x)")

    def state_dict(self) -> dict[str, Any]:
        self._fix_reference()
        return {"reference": self.reference}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        ref = (state or {}).get("reference")
        self.reference = float(ref) if ref is not None else None


__all__ = ["DivergenceGuard", "checkpoint_note"]
