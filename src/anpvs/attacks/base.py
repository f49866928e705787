"""Threat-model geometry and the ``eval_mode`` context shared by every attack.

The geometry (random start, ascent step, projection) lives here once; attacks differ only by
their loss, number of steps and EOT samples (STYLE rule 5). ``eval_mode`` is defined in the layer below,
:mod:`anpvs.models.base` (whose probe :func:`~anpvs.models.base.output_classes` runs under it), and re-exported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.base import eval_mode as eval_mode  # re-exported: every attack runs under it

NORMS = ("linf", "l2")


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block no parameter of ``model`` requires a gradient (each flag is restored afterwards).

    Attacks differentiate the input only; with the parameters frozen autograd records no weight-gradient
    work and the parameters' ``.grad`` is never touched."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


def check_images(x: Tensor, what: str = "images") -> None:
    """Raise ``ValueError`` unless the float images ``x`` are finite and in [0, 1] (one reduction).

    Attacks and the evaluation work in pixel units of [0, 1] images: NaN images give NaN vulnerabilities and
    [0, 255] images an attack radius 255 times too small, without any other sign."""
    if x.is_floating_point() and x.numel():
        lo, hi = torch.aminmax(x.detach())
        if not (bool(lo >= 0) and bool(hi <= 1)):  # NaN fails both comparisons
            raise ValueError(f"{what} must be finite and in [0, 1] (uint8 pixels divided by 255); got values in "
                             f"[{float(lo):g}, {float(hi):g}]")


def _per_example_norm(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


@dataclass(frozen=True)
class ThreatSpec:
    """What ``anpvs eval`` asks of every attack it runs; a registered attack factory
    (``@ATTACKS.register(name)``, :data:`anpvs.core.registry.ATTACKS`) builds its attack from it."""

    eps: float
    step_size: float
    steps: int
    restarts: int = 1
    norm: str = "linf"
    eot: int = 1
    seed: int = 0
    sampled_weights: bool = False  # the model samples its weights at test time (randomized defense)
    progress: bool = False  # long attacks (AutoAttack) log a line per stage


class Ball:
    """An Lp ball of radius ``eps`` around ``x``, intersected with the [0, 1] box."""

    def __init__(self, x: Tensor, eps: float, norm: str) -> None:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        self.x, self.eps, self.norm = x, eps, norm

    def random_start(self, generator: torch.Generator | None = None) -> Tensor:
        x = self.x
        if self.norm == "linf":
            noise = torch.empty_like(x).uniform_(-self.eps, self.eps, generator=generator)
        else:  # uniform direction, radius uniform in [0, eps]
            d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
            noise = d / _per_example_norm(d) * (r * self.eps).view(-1, *([1] * (x.dim() - 1)))
        return self.project(x + noise)

    def step(self, x_adv: Tensor, grad: Tensor, step_size: float) -> Tensor:
        if self.norm == "linf":
            return x_adv + step_size * grad.sign()
        return x_adv + step_size * grad / _per_example_norm(grad)

    def project(self, x_adv: Tensor) -> Tensor:
        delta = x_adv - self.x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            delta = delta * (self.eps / _per_example_norm(delta)).clamp(max=1.0)
        return (self.x + delta).clamp(0.0, 1.0)
