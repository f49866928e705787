"""BP: Bayesian pruning with Beta-Bernoulli dropout on clean data (Lee et al. 2018,
"Adaptive Network Sparsification with Dependent Variational Beta-Bernoulli Dropout", arXiv:1805.10896).

Both the weights and the masks minimise ``CE + beta * KL / N`` (reference ``--mode bbd`` without
adversarial training, where ``beta_weight`` is unused, i.e. beta = 1: the ``bp`` method preset).
Starts from a Standard checkpoint (``init``). A unit target (``method.target_sparsity``, ``target_units`` or
``target_units_from``) cuts the masks to it and holds them (:mod:`anpvs.methods.target`).
"""

from __future__ import annotations

from torch.nn import functional as F

from .anp_vs import MaskSettings, scaled_kl
from .base import Method, register_method
from .target import TargetedMasks


@register_method("bp")
class BayesianPruning(TargetedMasks, Method):
    model_variant = "bbd"
    wants_init = True
    settings = MaskSettings
    preset = {"method.beta": 1.0}  # the reference's BP ignores beta_weight: beta = 1

    def loss(self, model, x, y):
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        kl = scaled_kl(model, self.cfg)
        loss = ce + self.cfg.method.beta * kl / (self.cfg.method.kl_n or self.n_train)
        # The KL term has no gradient w.r.t. the weights, so one loss serves both optimizers.
        return {"loss": loss, "logits": logits, "ce": ce.detach(), "kl": kl.detach()}
