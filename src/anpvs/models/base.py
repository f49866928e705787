"""Common pieces of every anpvs classifier.

Contract (shared with attacks and metrics):

* ``model(x)`` takes images in [0, 1] of shape (N, C, H, W) and returns logits (N, num_classes);
* ``model.forward_intermediates(x)`` returns ``(logits, latents)``, the latent features the
  vulnerability metric and the VS loss compare (docs/reference.md §1), in layer order;
* normalization, where used, is the first layer (:class:`InputNormalize`), so attacks work in
  pixel units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class InputNormalize(nn.Module):
    """``(x - mean) / std`` with per-channel constants stored as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Classifier(nn.Module):
    """Base class: subclasses implement :meth:`forward_intermediates`."""

    #: name of the architecture family (used by the analytic efficiency metrics)
    arch: str = ""

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_intermediates(x)[0]

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def latent_names(self) -> list[str]:  # pragma: no cover
        raise NotImplementedError


def glorot_init_(module: nn.Module) -> None:
    """Glorot-uniform weights *and* biases, like TF1's ``tf.get_variable`` default used by the reference.

    For a 1-D bias of size n TF's Glorot limit is ``sqrt(6 / (n + n))``.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                n = m.bias.numel()
                bound = math.sqrt(3.0 / n)
                nn.init.uniform_(m.bias, -bound, bound)
