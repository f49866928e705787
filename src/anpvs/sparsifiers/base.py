"""The sparsifier protocol and the lookup of a model's sparsifiers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import Config
from ..registry import SPARSIFIERS


def register_sparsifier(name: str):
    """Register a factory ``(model) -> Sparsifier | None`` (None: the model has nothing of this scheme)."""
    return SPARSIFIERS.register(name)


class Sparsifier:
    """What the training loop asks of a pruning scheme.

    ``name`` keys its optimizer and LR scheduler in checkpoints; ``loss_key`` names the entry of the method's
    loss dict whose gradient trains :meth:`parameters` (when the method returns it; otherwise the parameters
    receive the weights' ``loss``)."""

    name: str = ""
    loss_key: str | None = None

    def parameters(self) -> list[nn.Parameter]:
        """The parameters this scheme trains with its own optimizer."""
        return []

    def make_optimizer(self, cfg: Config) -> torch.optim.Optimizer:  # pragma: no cover - every scheme defines it
        raise NotImplementedError

    def epoch_metrics(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Scalars (and small dicts) for the epoch's log line."""
        return {}

    def health(self, model: nn.Module, cfg: Config, n_train: int, epoch: int) -> tuple[str, str] | None:
        """``(what went wrong, how to fix it)`` when training cannot go on after ``epoch``, else None."""
        return None


def sparsifiers_of(model: nn.Module) -> list[Sparsifier]:
    """The sparsifiers of ``model``, one per registered scheme it uses, in name order."""
    found = (factory(model) for _, factory in SPARSIFIERS.items())
    return [s for s in found if s is not None]


__all__ = ["Sparsifier", "register_sparsifier", "sparsifiers_of"]
