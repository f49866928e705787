"""The sparsifier protocol and the lookup of a model's sparsifiers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.config import Config
from ..core.registry import SPARSIFIERS


def register_sparsifier(name: str):
    """Register a factory ``(model) -> Sparsifier | None`` (None: the model has nothing of this scheme)."""
    return SPARSIFIERS.register(name)


class Sparsifier:
    """What the training loop asks of a pruning scheme; every hook has a do-nothing default.

    ``name`` keys its optimizer and LR scheduler in checkpoints (schemes with :meth:`parameters`) and its
    penalty in the loss dict (``<name>_penalty``); ``loss_key`` names the entry of the method's loss dict whose
    gradient trains :meth:`parameters` (when the method returns it; otherwise the parameters receive the
    weights' ``loss``).

    Two kinds: schemes carried by the model (Beta-Bernoulli masks: found by :func:`sparsifiers_of`, their
    state is part of the model's parameters) and schemes a method brings (ADMM weight pruning:
    :meth:`anpvs.methods.base.Method.sparsifiers`, their :meth:`state_dict` saved with the method's state)."""

    name: str = ""
    loss_key: str | None = None

    def parameters(self) -> list[nn.Parameter]:
        """The parameters this scheme trains with its own optimizer (none: no optimizer is made)."""
        return []

    def make_optimizer(self, cfg: Config) -> torch.optim.Optimizer:  # pragma: no cover - schemes with parameters
        raise NotImplementedError

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to the weights' ``loss`` at every step (e.g. ADMM's ``rho/2 ||W - Z + U||^2``)."""
        return None

    def on_train_start(self, model: nn.Module) -> None:
        """Once per :func:`anpvs.training.loop.fit`, before the first step (after a resume restored the state),
        e.g. a unit budget cut on the masks of the ``init`` checkpoint."""

    def on_step_end(self, model: nn.Module) -> None:
        """After every optimizer step (e.g. re-applying fixed pruning masks)."""

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """After every epoch, before the checkpoint is written (e.g. ADMM's Z/U updates)."""

    def epoch_metrics(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        """Scalars (and small dicts) for the epoch's log line; ``optimizer`` is None for schemes without one."""
        return {}

    def health(self, model: nn.Module, cfg: Config, n_train: int, epoch: int) -> tuple[str, str] | None:
        """``(what went wrong, how to fix it)`` when training cannot go on after ``epoch``, else None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """State that is not in the model's parameters (tensors and primitive containers only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def sparsifiers_of(model: nn.Module) -> list[Sparsifier]:
    """The sparsifiers of ``model``, one per registered scheme it uses, in name order."""
    found = (factory(model) for _, factory in SPARSIFIERS.items())
    return [s for s in found if s is not None]


__all__ = ["Sparsifier", "register_sparsifier", "sparsifiers_of"]
