"""Standard (clean) training: cross-entropy on clean images (the paper's "Standard" row)."""

from __future__ import annotations

from torch.nn import functional as F

from .base import Method, register_method


@register_method("standard")
class Standard(Method):
    """Clean training, ``loss = CE(f(x), y)`` (+ L2 via the optimizer). Reference: ``--mode base``."""

    def loss(self, model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return {"loss": loss, "logits": logits, "ce": loss.detach()}
