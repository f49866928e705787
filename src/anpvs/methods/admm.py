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
  masked retraining. Z, U, the keep-masks and the phase are method state, saved in every checkpoint;
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

import torch
from torch import Tensor, nn

from .adversarial import Adversarial, AdversarialSettings
from .base import register_method

STRUCTURES = ("layer", "global", "filter")


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{"<module>.weight": weight}`` of every conv and linear layer, in module order."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _topk_mask(v: Tensor, k: int) -> Tensor:
    mask = torch.zeros(v.numel(), dtype=torch.bool, device=v.device)
    if k > 0:
        mask[torch.topk(v.detach().abs().flatten(), k, sorted=False).indices] = True
    return mask.view_as(v)


def keep_masks(weights: dict[str, Tensor], sparsity: float, structure: str = "layer") -> dict[str, Tensor]:
    """Boolean keep-masks of the Euclidean projection onto the sparse set (see the module docstring).

    ``layer``: ``round((1 - sparsity) numel)`` largest magnitudes per tensor; ``global``:
    ``round((1 - sparsity) total)`` largest magnitudes over all tensors; ``filter``: the
    ``round((1 - sparsity) C_out)`` output filters of largest L2 norm of each 4-D (conv) tensor,
    ``layer`` for the others.

    >>> m = keep_masks({"w": torch.tensor([0.1, -3.0, 2.0, 0.5])}, 0.5)
    >>> m["w"].tolist()
    [False, True, True, False]
    """
    if structure not in STRUCTURES:
        raise ValueError(f"unknown ADMM structure {structure!r}; valid: {', '.join(STRUCTURES)}")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    keep = 1.0 - sparsity
    if structure == "global":
        flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
        mask = _topk_mask(flat, int(round(keep * flat.numel())))
        out, start = {}, 0
        for name, w in weights.items():
            out[name] = mask[start:start + w.numel()].view_as(w)
            start += w.numel()
        return out
    out = {}
    for name, w in weights.items():
        if structure == "filter" and w.dim() == 4:
            rows = _topk_mask(w.detach().flatten(1).norm(dim=1), int(round(keep * w.shape[0])))
            out[name] = rows.view(-1, 1, 1, 1).expand_as(w).clone()
        else:
            out[name] = _topk_mask(w, int(round(keep * w.numel())))
    return out


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
    """Adversarial ADMM pruning then masked adversarial retraining, in one run (start from an AT ``init``)."""

    wants_init = True
    settings = ADMMSettings

    def __init__(self, cfg, n_train):
        super().__init__(cfg, n_train)
        m = cfg.method
        self.admm_epochs = int(round(m.admm_fraction * cfg.train.epochs))
        self.phase = "start"  # start -> admm -> retrain
        self.n_updates = 0
        self.Z: dict[str, Tensor] = {}
        self.U: dict[str, Tensor] = {}
        self.masks: dict[str, Tensor] = {}

    # -- ADMM algebra --------------------------------------------------------------------------------
    def _project(self, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        return keep_masks(weights, self.cfg.method.admm_sparsity, self.cfg.method.admm_structure)

    def _start(self, model: nn.Module) -> None:
        weights = prunable_weights(model)
        if self.admm_epochs > 0:
            masks = self._project(weights)
            self.Z = {k: (w.detach() * masks[k]).clone() for k, w in weights.items()}
            self.U = {k: torch.zeros_like(w, requires_grad=False) for k, w in weights.items()}
            self.phase = "admm"
        else:
            self._hard_prune(model)

    @torch.no_grad()
    def _update_zu(self, model: nn.Module) -> None:
        weights = prunable_weights(model)
        v = {k: w.detach() + self.U[k] for k, w in weights.items()}
        masks = self._project(v)
        for k in weights:
            self.Z[k] = v[k] * masks[k]
            self.U[k] = v[k] - self.Z[k]  # = U + W - Z
        self.n_updates += 1

    @torch.no_grad()
    def _hard_prune(self, model: nn.Module) -> None:
        weights = prunable_weights(model)
        self.masks = self._project(weights)
        self._apply_masks(weights)
        self.Z, self.U = {}, {}
        self.phase = "retrain"

    @torch.no_grad()
    def _apply_masks(self, weights: dict[str, Tensor]) -> None:
        for k, w in weights.items():
            w.mul_(self.masks[k])

    def _to_device(self, model: nn.Module) -> None:
        """Method state restored from a (CPU) checkpoint follows the model to its device."""
        device = next(model.parameters()).device
        for d in (self.Z, self.U, self.masks):
            for k, t in d.items():
                if t.device != device:
                    d[k] = t.to(device)

    # -- training hooks ------------------------------------------------------------------------------
    def loss(self, model, x, y):
        self._to_device(model)
        if self.phase == "start":
            self._start(model)
        out = self.forward_pair(model, x, y)
        out["ce_adv"] = out["ce_adv"].detach()
        if self.phase == "admm":
            rho = self.cfg.method.admm_rho
            penalty = sum(((w - self.Z[k] + self.U[k]) ** 2).sum() for k, w in prunable_weights(model).items())
            out["loss"] = out["loss"] + 0.5 * rho * penalty
            out["admm_penalty"] = (0.5 * rho * penalty).detach()
        return out

    def on_step_end(self, model):
        if self.phase == "retrain":
            self._to_device(model)
            self._apply_masks(prunable_weights(model))

    def on_epoch_end(self, model, epoch):
        self._to_device(model)
        if self.phase == "start":  # an epoch without a step (empty loader); start now
            self._start(model)
        if self.phase != "admm":
            return
        if epoch + 1 >= self.admm_epochs:
            self._hard_prune(model)
        elif (epoch + 1) % self.cfg.method.admm_update_every == 0:
            self._update_zu(model)

    def epoch_metrics(self, model):
        weights = prunable_weights(model)
        total = sum(w.numel() for w in weights.values())
        zeros = sum(int((w.detach() == 0).sum()) for w in weights.values())
        out: dict[str, Any] = {"admm_phase": self.phase, "admm_updates": self.n_updates,
                               "pruned_weight_pct": round(100.0 * zeros / max(total, 1), 2)}
        if self.phase == "admm":
            self._to_device(model)
            gap = sum(float((w.detach() - self.Z[k]).norm() ** 2) for k, w in weights.items()) ** 0.5
            out["admm_w_minus_z"] = round(gap, 5)
        return out

    # -- checkpointed state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "n_updates": self.n_updates, "admm_epochs": self.admm_epochs,
                "Z": dict(self.Z), "U": dict(self.U), "masks": dict(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.phase = state["phase"]
        self.n_updates = int(state["n_updates"])
        self.Z, self.U, self.masks = dict(state["Z"]), dict(state["U"]), dict(state["masks"])
