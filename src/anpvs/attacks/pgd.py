"""Projected gradient descent and FGSM (L-inf and L2), with restarts and EOT."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.registry import ATTACKS, Registry
from .base import NORMS, Ball, ThreatSpec, check_images, eval_mode, frozen_parameters

ATTACK_LOSSES: Registry[Callable[[Tensor, Tensor, Tensor | None], Tensor]] = Registry("attack loss")


@ATTACK_LOSSES.register("ce")
def ce_loss(logits_adv: Tensor, y: Tensor, logits_clean: Tensor | None) -> Tensor:
    """Per-example cross-entropy (untargeted: the attack ascends it)."""
    return F.cross_entropy(logits_adv, y, reduction="none")


@ATTACK_LOSSES.register("kl")
def kl_loss(logits_adv: Tensor, y: Tensor, logits_clean: Tensor | None) -> Tensor:
    """Per-example KL(f(x) || f(x_adv)), the inner loss of TRADES (Zhang et al. 2019)."""
    assert logits_clean is not None
    p_clean = F.softmax(logits_clean, dim=1)
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_clean, reduction="none").sum(dim=1)


@dataclass(frozen=True)
class PGD:
    """PGD, "Towards Deep Learning Models Resistant to Adversarial Attacks" (arXiv:1706.06083).

    Distance measure: L-inf (default) or L2, in pixel units; inputs must lie in [0, 1].

    Args:
        eps: radius of the threat model.
        step_size: ascent step (``alpha``).
        steps: number of iterations (1 with ``step_size = eps`` and no random start is FGSM).
        init: ``"uniform"`` (random start in the ball), ``"normal"`` (x + 0.001 N(0, 1), TRADES), ``"none"``.
        restarts: independent runs; per example the one with the highest loss is kept,
            misclassified examples first.
        eot: gradients averaged over this many forwards (Expectation over Transformation, for
            stochastic models).
        loss: registered attack loss: ``"ce"`` or ``"kl"`` (TRADES).
        norm: ``"linf"`` or ``"l2"``.

    Shape: x (N, C, H, W) in [0, 1]; y (N,). Returns detached adversarial images in [0, 1] within eps of x.
    The model runs in eval mode during the attack; every module's train/eval flag is restored.

    >>> attack = PGD(eps=0.3, step_size=0.01, steps=40)
    >>> x_adv = attack(model, x, y)  # doctest: +SKIP
    """

    eps: float
    step_size: float
    steps: int = 40
    init: str = "uniform"
    restarts: int = 1
    eot: int = 1
    loss: str = "ce"
    norm: str = "linf"

    def __post_init__(self) -> None:
        if self.eps < 0 or self.step_size < 0:
            raise ValueError(f"eps and step_size must be >= 0, got eps={self.eps}, step_size={self.step_size}")
        if self.steps < 0 or self.restarts < 1 or self.eot < 1:
            raise ValueError("steps must be >= 0, restarts and eot >= 1")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        if self.init not in ("uniform", "normal", "none"):
            raise ValueError(f"unknown init {self.init!r}; valid: uniform, normal, none")
        ATTACK_LOSSES.get(self.loss)  # fail loudly on unknown losses

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        x = x.detach()
        check_images(x, "PGD's input images")
        loss_fn = ATTACK_LOSSES.get(self.loss)
        # enable_grad: called under torch.no_grad() the steps would have no input gradient and the attack
        # would silently stay at its random start
        with eval_mode(model), frozen_parameters(model), torch.enable_grad():
            logits_clean = None
            if self.loss == "kl":
                with torch.no_grad():
                    logits_clean = model(x)
            best = x.clone()
            best_score = torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
            best_wrong = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            for _ in range(self.restarts):
                x_adv = self._run(model, x, y, loss_fn, logits_clean)
                if self.restarts == 1:
                    return x_adv
                with torch.no_grad():
                    logits = model(x_adv)
                    score = loss_fn(logits, y, logits_clean).to(best_score.dtype)
                    # CE: a misclassified example always beats a correct one, then the higher loss wins
                    # (compared as a pair: a +1e6 bonus in float32 would round away the loss).
                    wrong = logits.argmax(1) != y if self.loss == "ce" else torch.zeros_like(best_wrong)
                better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (score > best_score))
                best[better], best_score[better], best_wrong[better] = x_adv[better], score[better], wrong[better]
            return best

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn, logits_clean: Tensor | None) -> Tensor:
        ball = Ball(x, self.eps, self.norm)
        if self.init == "uniform":
            x_adv = ball.random_start()
        elif self.init == "normal":
            x_adv = ball.project(x + 0.001 * torch.randn_like(x))
        else:
            x_adv = x.clone()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            grad = torch.zeros_like(x)
            for _ in range(self.eot):
                loss = loss_fn(model(x_adv), y, logits_clean).sum()
                if loss.requires_grad:  # a model whose output ignores its input yields no gradient
                    g = torch.autograd.grad(loss, x_adv, allow_unused=True)[0]
                    if g is not None:
                        grad += g
            x_adv = ball.project(ball.step(x_adv.detach(), grad, self.step_size))
        return x_adv.detach()


def FGSM(eps: float, *, norm: str = "linf") -> PGD:
    """FGSM, "Explaining and Harnessing Adversarial Examples" (arXiv:1412.6572): one step of size eps."""
    return PGD(eps=eps, step_size=eps, steps=1, init="none", norm=norm)


@ATTACKS.register("pgd")
def pgd_attack(spec: ThreatSpec) -> PGD:
    return PGD(eps=spec.eps, step_size=spec.step_size, steps=spec.steps, restarts=spec.restarts, norm=spec.norm,
               eot=spec.eot)


@ATTACKS.register("fgsm")
def fgsm_attack(spec: ThreatSpec) -> PGD:
    return dataclasses.replace(FGSM(spec.eps, norm=spec.norm), eot=spec.eot)
