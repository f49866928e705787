"""ADMM robust pruning: Ye, Xu, Liu, Cheng, Lambrechts, Zhang, Zhou, Ma, Wang, Lin, "Adversarial
Robustness vs. Model Compression, or Both?" (ICCV 2019, https://arxiv.org/abs/1903.12561).
Paper row "ADMM".

Problem: ``min_W E[max_delta L(W; x + delta, y)]`` s.t. each pruned layer keeps at most ``k_l``
non-zero weights. ADMM splits ``W = Z`` (Z in the sparse set) and alternates:

* W-step: SGD steps on ``L_adv(W) + sum_l rho / 2 ||W_l - Z_l + U_l||^2``;
* Z-step: ``Z = Proj(W + U)``, keep the ``k`` largest magnitudes, zero the rest;
* dual step: ``U <- U + W - Z``.

Then hard pruning (``W <- Proj(W)``, keep-masks fixed) and masked adversarial retraining.

Official recipe (``yeshaokai/Robustness-Aware-Pruning-ADMM``, example configs): three stages run
separately: adversarial pre-training, ADMM (rho = 1e-3, multiplied by 1.3 at every Z/U update;
CIFAR: 200 epochs of SGD 0.01 with Z/U updated every 20; MNIST: 40 epochs with updates every 4),
then hard prune + masked retraining (200 / 40 epochs); PGD with eps 8/255, step 2/255, 10 steps on
CIFAR (eps 0.3, 40 steps of 0.01 on MNIST); per-layer prune ratios from a YAML file, sparsity types
``irregular`` (per-layer magnitude), ``filter``, ``column``, ``bn_filter``.

Here (LeNet5-Caffe / VGG-16, docs/decisions.md item 9):

* stage 1 (adversarial pre-training) is an ``at`` run given with ``init``; stages 2 and 3 are one
  resumable run: the first ``round(method.admm_fraction * train.epochs)`` epochs are ADMM, the rest
  masked retraining. Z, U, the keep-masks and the phase are the state of its sparsifier
  (:class:`anpvs.sparsifiers.admm.ADMMPruning`), saved as the method's state in every checkpoint;
* the adversarial loss is the AT row's (mixed ``(CE + 2 CE_adv) / 3``; ``method.adv_loss=madry`` is
  the paper's), PGD from the dataset preset (``attack.*``), and one optimizer / LR schedule for the
  whole run (the project's Adam + staircase by default) instead of per-stage schedules;
* Z/U are updated every ``method.admm_update_every`` epochs (default 1, scaled for short runs), with
  a constant ``method.admm_rho`` (1e-3; no 1.3x growth per update), and Z is initialised as
  ``Proj(W)`` with U = 0, as the official code does;
* pruned: the ``weight`` of every conv and linear layer, *including the last layer*; biases and BN
  are not. ``method.admm_sparsity`` (0.8 MNIST, 0.75 CIFAR: the table's numbers, taken as weight
  sparsity over all conv/linear weights) is applied per layer (``admm_structure=layer``: exactly
  ``k = round((1 - s) numel)`` weights kept per layer, the official ``irregular`` with one ratio),
  over all layers at once (``global``: one magnitude threshold, exactly ``round((1 - s) total)``
  kept), or as whole conv filters (``filter``: ``round((1 - s) C_out)`` filters of largest L2 norm
  per conv layer; linear layers stay per-layer unstructured);
* ties in magnitude are broken by ``torch.topk`` so that exactly k weights are kept (the official
  percentile threshold can keep fewer or more).

The reported ``weight_sparsity`` (``anpvs eval``) counts all conv/linear weights, so with the
``layer`` and ``global`` variants it equals ``admm_sparsity`` up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..sparsifiers.admm import STRUCTURES, ADMMPruning, keep_masks, prunable_weights
from .adversarial import Adversarial, AdversarialSettings
from .base import register_method


@dataclass
class ADMMSettings(AdversarialSettings):
    admm_sparsity: float = 0.8  # ADMM: fraction of conv/linear weights pruned (paper: 0.8 MNIST, 0.75 CIFAR)
    admm_structure: str = "layer"  # ADMM projection: layer (top-k per layer) | global | filter (conv filters)
    admm_rho: float = 1e-3  # ADMM penalty rho of rho/2 ||W - Z + U||^2 (official: 1e-3)
    admm_update_every: int = 1  # ADMM: epochs between Z/U updates (official CIFAR: 20 of 200; scale for short runs)
    admm_fraction: float = 0.5  # ADMM: fraction of train.epochs in the ADMM phase; the rest is masked retraining

    def validate(self) -> None:
        super().validate()
        self.need(0 <= self.admm_sparsity < 1,
                  f"method.admm_sparsity is a fraction in [0, 1) (got {self.admm_sparsity})")
        self.need(self.admm_structure in STRUCTURES,
                  f"method.admm_structure must be layer, global or filter (got {self.admm_structure!r})")
        self.need(self.admm_rho >= 0, f"method.admm_rho must be >= 0 (got {self.admm_rho})")
        self.need(self.admm_update_every >= 1,
                  f"method.admm_update_every must be >= 1 epoch (got {self.admm_update_every})")
        self.need(0 <= self.admm_fraction <= 1,
                  f"method.admm_fraction is a fraction in [0, 1] (got {self.admm_fraction})")


@register_method("admm")
class ADMM(Adversarial):
    """Adversarial ADMM pruning then masked adversarial retraining, in one run (start from an AT ``init``).

    The loss is the AT row's; the pruning is the :class:`~anpvs.sparsifiers.admm.ADMMPruning` sparsifier it
    brings (``pruner``), whose state is this method's checkpoint state."""

    wants_init = True
    settings = ADMMSettings
    depends_on_epochs = True  # the ADMM phase is a fraction of train.epochs

    def __init__(self, cfg, n_train):
        super().__init__(cfg, n_train)
        self.pruner = ADMMPruning(cfg)

    def sparsifiers(self, model):
        return [self.pruner]

    def state_dict(self) -> dict[str, Any]:
        return self.pruner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pruner.load_state_dict(state)


__all__ = ["ADMM", "ADMMSettings", "STRUCTURES", "keep_masks", "prunable_weights"]
