"""ADMM weight pruning as a sparsifier: the Z/U algebra, the hard prune and the masked retraining of
:mod:`anpvs.methods.admm` (Ye et al., "Adversarial Robustness vs. Model Compression, or Both?", ICCV 2019).

The ADMM method brings one :class:`ADMMPruning` (``Method.sparsifiers``); the training loop drives it through
the sparsifier protocol: its :meth:`~ADMMPruning.penalty` joins the weights' loss during the ADMM phase,
:meth:`~ADMMPruning.on_epoch_end` updates Z/U and hard-prunes at the end of the phase,
:meth:`~ADMMPruning.on_step_end` keeps pruned weights at 0 while retraining. Its state (phase, Z, U, masks)
is saved as the method's checkpoint state. The schedule and settings are documented in the method's module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..core.config import Config
from .base import Sparsifier

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


class ADMMPruning(Sparsifier):
    """ADMM then hard pruning then masked retraining of every conv/linear weight, over ``train.epochs``:
    the first ``round(method.admm_fraction * train.epochs)`` epochs are ADMM (phase ``admm``), the rest
    masked retraining (``retrain``). No parameters of its own: it acts on the model's weights."""

    name = "admm"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.admm_epochs = int(round(cfg.method.admm_fraction * cfg.train.epochs))
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
        """State restored from a (CPU) checkpoint follows the model to its device."""
        device = next(model.parameters()).device
        for d in (self.Z, self.U, self.masks):
            for k, t in d.items():
                if t.device != device:
                    d[k] = t.to(device)

    # -- the sparsifier protocol ---------------------------------------------------------------------
    def penalty(self, model: nn.Module) -> Tensor | None:
        """``rho/2 sum_l ||W_l - Z_l + U_l||^2`` during the ADMM phase (the first call starts it)."""
        self._to_device(model)
        if self.phase == "start":
            self._start(model)
        if self.phase != "admm":
            return None
        rho = self.cfg.method.admm_rho
        return 0.5 * rho * sum(((w - self.Z[k] + self.U[k]) ** 2).sum() for k, w in prunable_weights(model).items())

    def on_step_end(self, model: nn.Module) -> None:
        if self.phase == "retrain":
            self._to_device(model)
            self._apply_masks(prunable_weights(model))

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        self._to_device(model)
        if self.phase == "start":  # an epoch without a step (empty loader); start now
            self._start(model)
        if self.phase != "admm":
            return
        if epoch + 1 >= self.admm_epochs:
            self._hard_prune(model)
        elif (epoch + 1) % self.cfg.method.admm_update_every == 0:
            self._update_zu(model)

    def epoch_metrics(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
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

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "n_updates": self.n_updates, "admm_epochs": self.admm_epochs,
                "Z": dict(self.Z), "U": dict(self.U), "masks": dict(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.phase = state["phase"]
        self.n_updates = int(state["n_updates"])
        self.Z, self.U, self.masks = dict(state["Z"]), dict(state["U"]), dict(state["masks"])


__all__ = ["STRUCTURES", "ADMMPruning", "keep_masks", "prunable_weights"]
