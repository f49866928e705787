"""The figures' computations (torch, no matplotlib): per-feature vulnerability, input distortion,
accuracy against eps and the loss surface around an image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ...attacks import PGD, eval_mode
from ...evaluation.checks import eps_sweep


def _batches(x: Tensor, y: Tensor, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def feature_vulnerability(model: nn.Module, x: Tensor, y: Tensor, attack: PGD, *,
                          batch_size: int = 250) -> list[Tensor]:
    """Per latent layer, ``mean_images |z(x) - z(x_adv)|`` of every feature (shape ``(C, H, W)`` or ``(D,)``).

    ``x_adv`` is ``attack`` on ``model`` itself (white-box); the model runs in test mode."""
    sums: list[Tensor] | None = None
    device = next(model.parameters()).device
    with eval_mode(model):
        for xb, yb in _batches(x, y, batch_size):
            xb, yb = xb.to(device), yb.to(device)
            x_adv = attack(model, xb, yb)
            with torch.no_grad():
                _, z = model.forward_intermediates(xb)
                _, z_adv = model.forward_intermediates(x_adv)
            d = [(a - b).abs().sum(0).cpu() for a, b in zip(z, z_adv, strict=True)]
            sums = d if sums is None else [s + t for s, t in zip(sums, d, strict=True)]
    assert sums is not None, "no images"
    return [s / len(x) for s in sums]


def input_distortion(model: nn.Module, x: Tensor, y: Tensor, attack: PGD) -> Tensor:
    """``mean_channels |z1(x) - z1(x_adv)|`` of the first latent layer for one image ``x`` (1, C, H, W)."""
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    with eval_mode(model):
        x_adv = attack(model, x, y)
        with torch.no_grad():
            z1 = model.forward_intermediates(x)[1][0]
            z1_adv = model.forward_intermediates(x_adv)[1][0]
    d = (z1 - z1_adv).abs()[0]
    return (d.mean(0) if d.dim() == 3 else d).cpu()


def accuracy_vs_eps(model: nn.Module, x: Tensor, y: Tensor, eps_list: Sequence[float], *, steps: int,
                    step_per_eps: float, seed: int = 0, batch_size: int = 250) -> list[float]:
    """White-box PGD accuracy (%) at each eps; the step size is ``step_per_eps * eps`` (the table's ratio).

    The sweep of :func:`anpvs.evaluation.checks.eps_sweep` (the one ``anpvs check`` runs), with this step rule."""
    _, rows = eps_sweep(model, x, y, list(eps_list), steps=steps, step_for=lambda eps: step_per_eps * eps,
                        seed=seed, batch_size=batch_size)
    return [r["acc"] for r in rows]


def loss_surface(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, n: int = 21,
                 d2: Tensor | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-entropy of ``model`` at ``clip(x + a d1 + b d2, 0, 1)`` on an ``n x n`` grid of ``a, b`` in
    ``[-eps, eps]``, for one image ``x`` (1, C, H, W). ``d1`` is the sign of the input gradient of the loss,
    ``d2`` a random sign direction (drawn from ``seed`` unless given). Returns ``(a, b, loss)`` grids."""
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    if d2 is None:
        g = torch.Generator().manual_seed(seed)
        d2 = torch.randint(0, 2, x.shape, generator=g).float().mul_(2).sub_(1)
    d2 = d2.to(device)
    with eval_mode(model):
        xg = x.clone().requires_grad_(True)
        d1 = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)[0].sign()
        coords = torch.linspace(-eps, eps, n, device=device)
        a, b = torch.meshgrid(coords, coords, indexing="ij")
        pts = (x + a.reshape(-1, 1, 1, 1) * d1 + b.reshape(-1, 1, 1, 1) * d2).clamp(0, 1)
        with torch.no_grad():
            losses = torch.cat([F.cross_entropy(model(p), y.expand(len(p)), reduction="none")
                                for p in pts.split(256)])
    return a.cpu().numpy(), b.cpu().numpy(), losses.reshape(n, n).cpu().numpy()


__all__ = ["accuracy_vs_eps", "feature_vulnerability", "input_distortion", "loss_surface"]
