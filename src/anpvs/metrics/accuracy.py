"""Counting correct predictions batch by batch, optionally on adversarial examples made per batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def count_correct(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 500,
                  attack: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
                  attack_model: nn.Module | None = None, device: torch.device | str | None = None) -> int:
    """How many of ``x`` the model classifies as ``y``, in batches of ``batch_size``.

    ``attack``: each batch is first replaced by ``attack(attack_model or model, xb, yb)`` (batches are
    attacked in order, so a seeded attack draws the same random starts as one run over all batches before
    counting). ``device``: move each batch there first. The caller sets the model's mode."""
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        if attack is not None:
            xb = attack(attack_model if attack_model is not None else model, xb, yb)
        with torch.no_grad():
            correct += (model(xb).argmax(1) == yb).sum().item()
    return int(correct)


__all__ = ["count_correct"]
