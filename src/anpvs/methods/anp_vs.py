"""ANP and ANP-VS: adversarial training of Beta-Bernoulli pruning masks (Madaan et al., ICML 2020,
arXiv:1908.04355), exactly as SPEC B section 4:

* mask parameters (``a_uc``, ``b_uc``) minimise ``CE_adv + beta * KL / N``;
* weights minimise ``(CE_clean + 2 CE_adv) / 3 + lambda * V`` (+ L2 by the optimizer; KL has no
  gradient w.r.t. the weights), so the VS term and the clean loss never move a mask.

The training PGD runs on the test-mode network (expected masks). ``method.beta`` is beta,
``method.kl_n`` is N (0 = training-set size), ``method.vs_weight`` is lambda (ANP: no VS term).
Start from a Standard checkpoint (``init``) as the reference does.
"""

from __future__ import annotations

from ..nn.beta_bernoulli import total_kl
from .adversarial import Adversarial
from .base import register_method


class AdversarialPruning(Adversarial):
    model_variant = "bbd"
    wants_init = True

    def loss(self, model, x, y):
        out = self.forward_pair(model, x, y)
        n = self.cfg.method.kl_n or self.n_train
        kl = total_kl(model)
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
