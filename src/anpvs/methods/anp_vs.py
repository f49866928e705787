"""ANP and ANP-VS: adversarial training of Beta-Bernoulli pruning masks (Madaan et al., ICML 2020,
arXiv:1908.04355), exactly as docs/reference.md §4:

* mask parameters (``a_uc``, ``b_uc``) minimise ``CE_adv + beta * KL / N``;
* weights minimise ``(CE_clean + 2 CE_adv) / 3 + lambda * V`` (+ L2 by the optimizer; KL has no
  gradient w.r.t. the weights), so the VS term and the clean loss never move a mask.

The training PGD runs on the test-mode network (expected masks). ``method.beta`` is beta,
``method.kl_n`` is N (0 = training-set size), ``method.vs_weight`` is lambda (ANP: no VS term).
Start from a Standard checkpoint (``init``) as the reference does. A unit target (``method.target_sparsity``,
``target_units`` or ``target_units_from``) cuts the masks to it and holds them (:mod:`anpvs.methods.target`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..core.config import Config
from ..nn.beta_bernoulli import bbd_layers, total_kl
from .adversarial import Adversarial, AdversarialSettings
from .base import register_method
from .target import TargetedMasks, TargetSettings


@dataclass
class MaskSettings(TargetSettings):
    """Settings of the Beta-Bernoulli masks' KL term and unit target (BP, ANP, ANP-VS)."""

    beta: float = 1.0  # weight of KL/N for the Beta-Bernoulli masks (paper: 4 MNIST, 2 CIFAR-10, 1 CIFAR-100)
    kl_layer_scale: list[float] = field(default_factory=list)  # per-mask KL multipliers; [] = all 1 (paper)

    def validate(self) -> None:
        super().validate()
        self.need(self.beta >= 0, "method weights (beta) must be >= 0")
        self.need(all(v >= 0 for v in self.kl_layer_scale), "method.kl_layer_scale entries must be >= 0")


@dataclass
class AdversarialPruningSettings(AdversarialSettings, MaskSettings):
    """ANP and ANP-VS: the adversarial loss's settings and the masks'."""


def scaled_kl(model: nn.Module, cfg: Config) -> Tensor:
    """Sum of the masks' KL terms, each multiplied by ``method.kl_layer_scale`` (all 1 by default = paper).

    A scale above 1 on a layer prunes it harder; the CPU protocol uses it to weigh conv channels,
    which carry most of the FLOPs, against the cheap dense units (README, "CPU protocol")."""
    scale = cfg.method.kl_layer_scale
    if not scale:
        return total_kl(model)
    masks = bbd_layers(model)
    if len(scale) != len(masks):
        raise ValueError(f"method.kl_layer_scale has {len(scale)} entries but the model has {len(masks)} masks")
    return torch.stack([s * m.kl() for s, m in zip(scale, masks, strict=True)]).sum()


class AdversarialPruning(TargetedMasks, Adversarial):
    model_variant = "bbd"
    wants_init = True
    settings = AdversarialPruningSettings

    def loss(self, model, x, y):
        out = self.forward_pair(model, x, y)
        n = self.cfg.method.kl_n or self.n_train
        kl = scaled_kl(model, self.cfg)
        out["mask_loss"] = out["ce_adv"] + self.cfg.method.beta * kl / n
        out["ce_adv"] = out["ce_adv"].detach()
        out["kl"] = kl.detach()
        return out


@register_method("anp")
class ANP(AdversarialPruning):
    """Adversarial Beta-Bernoulli pruning without VS (ablation arm "ANP")."""


@register_method("anp_vs")
class ANPVS(AdversarialPruning):
    """Adversarial neural pruning with vulnerability suppression (paper row "ANP-VS")."""

    use_vs = True
