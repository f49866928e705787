"""TRADES: Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between
Robustness and Accuracy" (ICML 2019, https://arxiv.org/abs/1901.08573). Paper row "TRADES".

Loss, per batch::

    CE(f(x), y) + beta * KL(f(x) || f(x'))        x' = argmax_{||x' - x||_inf <= eps} KL(f(x) || f(x'))

with the KL averaged over the batch ("batchmean") and gradients flowing through both f(x) and
f(x'). The inner maximisation is PGD on the KL (``PGD(loss="kl", init="normal")``): start at
``x + 0.001 N(0, 1)``, sign steps, projection onto the eps-ball and [0, 1], run on the test-mode
network (the official code calls ``model.eval()`` for the attack); the two loss forwards run in
train mode.

Official recipe (``yaodongyu/TRADES``): CIFAR-10 WRN-34-10, eps 0.031, 10 steps of 0.007, beta 6
in the paper (script default 1.0), SGD lr 0.1 momentum 0.9 wd 2e-4, batch 128, lr / 10 at epoch 75,
76-80 epochs depending on the script version; MNIST SmallCNN, eps 0.3, 40 steps of 0.01, beta 1,
SGD lr 0.01 momentum 0.9 (no wd), batch 128, 100 epochs.

Adaptations here (LeNet5-Caffe / VGG-16, docs/decisions.md item 9):

* the inner attack uses the dataset preset's training attack (``attack.*``: MNIST eps 0.3, 20 steps
  of 0.01; CIFAR eps 0.03, 10 steps of 0.007), the same as the AT row, not TRADES' MNIST PGD-40.
  Because it starts next to x (AT's starts anywhere in the ball), an L-inf attack of ``steps *
  step_size < eps`` cannot reach the ball's edge: MNIST's 20 steps of 0.01 reach 0.2 of eps 0.3, and
  3 full-data epochs trained so reach 41.7% PGD-40 at eps 0.3. The method logs a warning then;
  ``--pgd-steps 40`` (TRADES' own MNIST setting) reaches the ball, and the full-data MNIST protocol
  uses it;
* ``beta = method.trades_beta`` (default 6, the paper's; the beta of the ANP-VS table is unknown,
  docs/reference.md §8; the official MNIST script uses 1.0: ``--set method.trades_beta=1``);
* optimizer, schedule, epochs and batch size are the project's (Adam 1e-3 staircase, batch 64,
  L2 1e-4 on conv/linear weights), as for every other row, so rows differ only by their loss.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from torch.nn import functional as F

from ..attacks import PGD
from .base import Method, Settings, register_method

log = logging.getLogger(__name__)


@dataclass
class TRADESSettings(Settings):
    trades_beta: float = 6.0  # TRADES trade-off

    def validate(self) -> None:
        super().validate()
        self.need(self.trades_beta >= 0, "method weights (trades_beta) must be >= 0")


@register_method("trades")
class TRADES(Method):
    """TRADES loss ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` with x' from PGD on the KL."""

    settings = TRADESSettings

    def __init__(self, cfg, n_train):
        super().__init__(cfg, n_train)
        a = cfg.attack
        if a.norm == "linf" and a.steps * a.step_size < a.eps - 1e-12:
            log.warning("TRADES' attack starts next to x: %d steps of %g reach at most %g of eps %g, so it never "
                        "trains at the edge of the ball; use --pgd-steps %d (or a larger --step-size)",
                        a.steps, a.step_size, a.steps * a.step_size, a.eps, math.ceil(a.eps / a.step_size - 1e-9))
        self.attack = PGD(eps=a.eps, step_size=a.step_size, steps=a.steps, init="normal", loss="kl", norm=a.norm)

    def loss(self, model, x, y):
        x_adv = self.attack(model, x, y)
        logits = model(x)
        logits_adv = model(x_adv)
        ce = F.cross_entropy(logits, y)
        kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        loss = ce + self.cfg.method.trades_beta * kl
        return {"loss": loss, "logits": logits, "logits_adv": logits_adv, "ce": ce.detach(), "kl": kl.detach()}
