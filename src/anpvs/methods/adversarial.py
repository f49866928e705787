"""Adversarial training (AT) and its ablation with vulnerability suppression (AT-VS).

AT: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (arXiv:1706.06083),
with the ANP-VS reference's mixed loss ``(CE_clean + 2 CE_adv) / 3`` by default
(``method.adv_loss=madry`` for CE_adv only). The PGD example is computed on the test-mode network
(docs/reference.md §4); both cross-entropies use train-mode forwards. Trained from scratch.
For masked models (ANP, ANP-VS) the attack runs on :func:`anpvs.models.compact.attack_network`, the physically
compacted test-mode network, which computes the same function.

AT-VS adds ``lambda * V(z(x), z(x_adv))``, the latent vulnerability of docs/decisions.md item 2
(``method.vs_weight``), computed on the same two train-mode forwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..metrics.vulnerability import vulnerability
from ..models.compact import attack_network
from .base import Method, Settings, mixed_ce, register_method, train_attack


@dataclass
class AdversarialSettings(Settings):
    adv_loss: str = "mixed"  # "mixed": (CE_clean + w CE_adv)/(1 + w) as the reference; "madry": CE_adv only
    adv_weight: float = 2.0  # w above (reference: 2)
    vs_weight: float = 0.0  # lambda of the vulnerability suppression loss
    vs_reduction: str = "mean"  # "mean" (reference code) or "sum" (paper text) over features

    def validate(self) -> None:
        super().validate()
        self.need(self.adv_loss in ("mixed", "madry"),
                  f"method.adv_loss must be mixed or madry (got {self.adv_loss!r})")
        self.need(self.adv_weight >= 0 and self.vs_weight >= 0,
                  "method weights (adv_weight, vs_weight) must be >= 0")
        self.need(self.vs_reduction in ("mean", "sum"), "method.vs_reduction must be mean or sum")


class Adversarial(Method):
    use_vs: bool = False
    settings = AdversarialSettings

    def __init__(self, cfg, n_train):
        super().__init__(cfg, n_train)
        self.attack = train_attack(cfg)

    def forward_pair(self, model, x, y):
        """Adversarial example, train-mode forwards on x and x_adv, and the loss terms shared by AT-like methods."""
        # Masked models are attacked through their compacted snapshot: same test-mode function, the cost
        # of the surviving units only (rebuilt every step, as the masks move every step).
        x_adv = self.attack(attack_network(model), x, y)
        logits, latents = model.forward_intermediates(x)
        logits_adv, latents_adv = model.forward_intermediates(x_adv)
        loss, ce_clean, ce_adv = mixed_ce(logits, logits_adv, y, self.cfg)
        out = {"loss": loss, "logits": logits, "logits_adv": logits_adv,
               "ce_clean": ce_clean.detach(), "ce_adv": ce_adv}
        if self.use_vs:
            v, _ = vulnerability(latents, latents_adv, reduction=self.cfg.method.vs_reduction)
            out["loss"] = loss + self.cfg.method.vs_weight * v
            out["vulnerability"] = v.detach()
        return out

    def loss(self, model, x, y):
        out = self.forward_pair(model, x, y)
        out["ce_adv"] = out["ce_adv"].detach()
        return out


@register_method("at")
class AT(Adversarial):
    """PGD adversarial training (paper row "AT")."""


@register_method("at_vs")
class ATVS(Adversarial):
    """AT + vulnerability suppression loss (ablation arm "AT-VS")."""

    use_vs = True
