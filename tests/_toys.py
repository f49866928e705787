"""Tiny analytic models and data for the evaluation tests (no training needed).

Ten classes of 1x8x8 images: class c is a bright 2x2 block at a class-specific place over a dark background.
:class:`TemplateLinear` scores each class by its template, so it is exact and robust up to eps ~0.4 (L-inf);
the other models break it in one specific way each.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SIDE = 8


def templates() -> Tensor:
    t = torch.zeros(10, 1, SIDE, SIDE)
    for c in range(10):
        r, q = divmod(c, 4)
        t[c, 0, 2 * r:2 * r + 2, 2 * q:2 * q + 2] = 1.0
    return t


def toy_data(n: int = 200, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = 0.1 + 0.8 * templates()[y] + 0.05 * torch.rand(n, 1, SIDE, SIDE, generator=g)
    return x.clamp(0, 1), y


class TemplateLinear(nn.Module):
    """Healthy: deterministic, returns logits, non-zero input gradients."""

    def __init__(self, scale: float = 4.0) -> None:
        super().__init__()
        t = templates().flatten(1)
        self.fc = nn.Linear(SIDE * SIDE, 10)
        with torch.no_grad():
            self.fc.weight.copy_(scale * (t - t.mean(0)))
            self.fc.bias.zero_()
        self.modes_seen: list[bool] = []

    def features(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        self.modes_seen.append(self.training)
        h = self.features(x)
        return self.fc(h), [h]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_intermediates(x)[0]


class Rounded(TemplateLinear):
    """Input quantisation with ``torch.round``: zero gradient almost everywhere (gradient masking)."""

    def features(self, x: Tensor) -> Tensor:
        return torch.round(x).flatten(1)


class Detached(TemplateLinear):
    """Cuts the graph at the input."""

    def features(self, x: Tensor) -> Tensor:
        return x.detach().flatten(1)


class Softmaxed(TemplateLinear):
    """Returns probabilities instead of logits."""

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        logits, latents = super().forward_intermediates(x)
        return logits.softmax(1), latents


class Noisy(TemplateLinear):
    """Stochastic in eval mode: a fresh random linear term ``x R`` per forward, zero in expectation, so single
    gradients are noisy but their average (EOT) points to the mean model's gradient."""

    def __init__(self, sigma: float = 3.0) -> None:
        super().__init__()
        self.sigma = sigma

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        logits, latents = super().forward_intermediates(x)
        r = self.sigma * torch.randn_like(self.fc.weight)
        return logits + latents[0] @ r.T, latents


class Blind(TemplateLinear):
    """Ignores its input: constant logits favouring class 0."""

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = x.flatten(1)
        # 0 * h keeps x in the graph (zero gradient) so that PGD can still run on this model
        logits = torch.eye(10)[0] + 0.0 * h.sum(1, keepdim=True)
        return logits, [h * 0]


def run_cli(argv: list[str]) -> int:
    """``anpvs.cli.main(argv)``'s exit status, whether it returns or raises SystemExit (argparse, parser.exit)."""
    from anpvs.cli import main

    try:
        return main(argv)
    except SystemExit as e:
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 1
