"""Common pieces of every anpvs classifier.

Contract (shared with attacks and metrics):

* ``model(x)`` takes images in [0, 1] of shape (N, C, H, W) and returns logits (N, num_classes);
* ``model.forward_intermediates(x)`` returns ``(logits, latents)``, the latent features the
  vulnerability metric and the VS loss compare (docs/reference.md §1), in layer order;
* normalization, where used, is the first layer (:class:`InputNormalize`), so attacks work in
  pixel units.

The architecture protocol (what compaction, checkpoints and the efficiency metrics read from a model, so
that none of them names an architecture; docs/architecture.md, "The architecture protocol"):

* ``arch`` (class attribute): the family name; the class registers itself in
  :data:`anpvs.core.registry.ARCHITECTURES` under it;
* ``input_shape``: one example's ``(C, H, W)``;
* ``unit_widths``: the unit count behind each Beta-Bernoulli mask (the prunable unit groups), in mask
  order; a plain model has the same widths without masks;
* ``latent_names()`` / ``forward_intermediates(x)``: the latents of the vulnerability;
* ``compact_class``: its compacted network (a :class:`~anpvs.models.compaction.CompactNetwork`), and
  ``compact_state(latents)``: that network's state dict with the pruned units removed and E[pi] folded in;
* ``unit_weights()``: per mask, the weight that makes its units (L1 pruning's scores);
* optionally the paper's analytic cost (``paper_units``, ``analytic_flops``, ``analytic_memory``); FLOPs
  and memory of every architecture are also counted on its compacted network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core.registry import ARCHITECTURES
from ..nn.modes import eval_mode as eval_mode  # re-exported: models.base.eval_mode is public


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
    """Base class: subclasses implement :meth:`forward_intermediates` and the architecture protocol."""

    #: name of the architecture family (the key of :data:`anpvs.core.registry.ARCHITECTURES`)
    arch: str = ""
    #: one example's shape (C, H, W); subclasses set it in ``__init__``
    input_shape: tuple[int, int, int]
    #: unit counts behind the masks, in mask order (the denominator of unit sparsity)
    unit_widths: tuple[int, ...]
    #: the class of the compacted network (:class:`~anpvs.models.compaction.CompactNetwork`); None: no compaction
    compact_class: type | None = None
    #: the paper's unpruned unit counts, for architectures with analytic costs (else None)
    paper_units: tuple[int, ...] | None = None
    #: ``analytic_flops(active, num_classes) -> int`` and ``analytic_memory(active, num_classes, legacy) -> int``
    #: (static): the paper's formulas of the pruned network, where the paper defines them (else None)
    analytic_flops = None
    analytic_memory = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "arch" in cls.__dict__ and cls.arch:
            ARCHITECTURES.register(cls.arch)(cls)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_intermediates(x)[0]

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def latent_names(self) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def compact_state(self, latents: bool = False) -> dict[str, Tensor]:  # pragma: no cover
        """The state dict of ``compact_class`` computing this model's eval forward (see :mod:`anpvs.models.compact`)."""
        raise NotImplementedError


def output_classes(model: nn.Module, x: Tensor) -> int | None:
    """How many classes ``model`` predicts for the images ``x`` (its logits' last dimension), from one forward in
    eval mode without gradients (each module's train/eval flag restored); ``None`` when it does not take them (a
    ``RuntimeError``: other channels or another image size than its layers were made for)."""
    try:
        with torch.no_grad(), eval_mode(model):
            return model(x).shape[-1]
    except RuntimeError:
        return None


def scaled_width(channels: int, width: float) -> int:
    """``channels`` times the width multiplier ``width`` (rounded, at least 1); ``width`` in [1/64, 4]."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 1 / 64 <= width <= 4:
        raise ValueError(f"width must be a number in [1/64, 4] (got {width!r})")
    return max(1, round(channels * width))


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
