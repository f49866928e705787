"""AT BNN: adversarial training of a Bayesian network. Liu, Li, Chen, Hsieh, "Adv-BNN: Improved
Adversarial Defense through Robust Bayesian Neural Network" (ICLR 2019,
https://arxiv.org/abs/1810.01279). Paper row "AT BNN".

As the ANP-VS reference runs it (``--net lenet_conv_bayes|vgg16_bayes --mode base --adv_train``,
docs/reference.md §8), per batch::

    (CE(f_W1(x), y) + 2 CE(f_W2(x'), y)) / 3 + KL(q(W) || p(W)) / (N * kl_weight)

with ``x'`` = PGD on the mean-weight (test-mode) network, ``W ~ q = N(mu, softplus(rho)^2)``
mean-field, prior ``N(0, sigma_p^2)`` (LeNet5-Caffe sigma_p = 1, rho_0 = -3; VGG-16 sigma_p = 0.1,
rho_0 = -5), ``kl_weight = method.bnn_kl_weight = 100``, ``N`` the training-set size
(``method.kl_n`` overrides it) and no L2 (the ``at_bnn`` preset sets ``train.weight_decay: 0``).
Adam and the staircase schedule of the AT row; trained from scratch.

Official Adv-BNN recipe (``xuanqing94/BayesianDefense``, ``main_adv_vi.py`` / ``train_adv_vi.sh``),
which the reference does not follow: loss = CE on adversarial examples only + KL / N, PGD run on
the *stochastic* (train-mode) network, Adam lr 0.01 divided by 10 after 80, 140 and 180 of 200
epochs, batch 128, prior sigma_0 = 0.08 and initial posterior std 0.08 (VGG-16; PGD-10 with
max_norm 0.03125 in the shipped script), evaluation by an ensemble of weight samples.

Adaptations and differences (documented in docs/baselines.md too):

* one weight sample per step, shared by the clean and the adversarial pass, as the reference (its
  noise is drawn once per ``session.run``); ``method.bnn_shared_sample=False`` draws a fresh sample
  for every forward call instead (measured effect: docs/baselines.md);
* the logits get no ReLU (the reference's LeNet applies one, docs/reference.md §7.7), and VGG's BN affine
  parameters are deterministic (the reference makes them Bayesian too);
* evaluation: the mean weights in eval mode (as the reference), plus EOT-PGD / sample ensembles
  on the stochastic network via :func:`anpvs.nn.bayes.set_sampling` (docs/decisions.md item 8).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

from ..nn.bayes import one_sample, total_bayes_kl
from .adversarial import Adversarial, AdversarialSettings
from .base import register_method


@dataclass
class AdvBNNSettings(AdversarialSettings):
    bnn_shared_sample: bool = True  # AT BNN: one weight sample per step, shared by the clean and adversarial pass
    #                                (reference); False: a fresh sample per forward call
    bnn_kl_weight: float = 100.0  # AT BNN: the Gaussian KL enters the loss as KL / (N * bnn_kl_weight) (reference)

    def validate(self) -> None:
        super().validate()
        self.need(self.bnn_kl_weight > 0, f"method.bnn_kl_weight must be > 0 (got {self.bnn_kl_weight})")


@register_method("at_bnn")
class AdvBNN(Adversarial):
    """Mixed adversarial loss on a ``*_bnn`` model plus ``KL / (N * kl_weight)``."""

    model_variant = "bnn"
    settings = AdvBNNSettings
    preset = {"train.weight_decay": 0.0}  # the reference adds no L2 for Bayesian nets (the KL is the regulariser)

    def __init__(self, cfg, n_train):
        super().__init__(cfg, n_train)
        if cfg.train.weight_decay > 0:
            # The optimizer's decay group holds every >= 2-D parameter, so it would shrink rho as well.
            warnings.warn(f"at_bnn with train.weight_decay={cfg.train.weight_decay}: the reference uses no L2 "
                          f"for Bayesian nets, and the decay also pulls weight_rho towards 0", stacklevel=2)

    def loss(self, model, x, y):
        # the PGD of forward_pair runs on the mean weights (eval mode), so only the two training passes sample
        with one_sample(model) if self.cfg.method.bnn_shared_sample else contextlib.nullcontext():
            out = self.forward_pair(model, x, y)
        kl = total_bayes_kl(model)
        n = self.cfg.method.kl_n or self.n_train
        out["loss"] = out["loss"] + kl / (n * self.cfg.method.bnn_kl_weight)
        out["ce_adv"] = out["ce_adv"].detach()
        out["bayes_kl"] = kl.detach()
        return out
