"""Beta-Bernoulli dropout masks on neurons and channels (paper section 3; reference ``bbdropout.py``).

The mask parameters (``a_uc``, ``b_uc`` of every :class:`~anpvs.nn.beta_bernoulli.BetaBernoulliDropout`) have
their own Adam optimizer (``train.mask_lr``) and their own loss: a method returns ``mask_loss``
(``CE_adv + beta * KL / N`` for ANP and ANP-VS, as the reference code's two optimizers), the weights see only
``loss``. The epoch log gets the masks' learning rate, active units and KL per layer and the analytic
efficiency; a layer left without an active unit stops the run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.config import Config
from ..models.compact import efficiency_columns
from ..models.masks import mask_summary, named_masks
from ..nn.beta_bernoulli import mask_parameters
from .base import Sparsifier, register_sparsifier


class BetaBernoulliMasks(Sparsifier):
    name = "masks"
    loss_key = "mask_loss"

    def __init__(self, model: nn.Module) -> None:
        self._params = mask_parameters(model)

    def parameters(self) -> list[nn.Parameter]:
        return self._params

    def make_optimizer(self, cfg: Config) -> torch.optim.Optimizer:
        return torch.optim.Adam(self._params, lr=cfg.train.mask_lr)

    def epoch_metrics(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        rep = efficiency_columns(model)
        return {"mask_lr": optimizer.param_groups[0]["lr"], **mask_summary(model),
                "unit_sparsity": round(rep["unit_sparsity"], 2), "flops_speedup": round(rep["flops_speedup"], 3),
                "memory_pct": round(rep["memory_pct"], 2)}

    def health(self, model: nn.Module, cfg: Config, n_train: int, epoch: int) -> tuple[str, str] | None:
        """A masked layer without an active unit: the network can no longer predict."""
        for name, m in named_masks(model):
            if m.n_active() == 0:
                n = cfg.method.kl_n or n_train
                return (f"layer {name!r} collapsed to 0 active units at epoch {epoch + 1} with "
                        f"method.beta={cfg.method.beta} (beta*KL/N, N={n})", "lower method.beta or raise method.kl_n")
        return None


@register_sparsifier("beta_bernoulli")
def beta_bernoulli(model: nn.Module) -> BetaBernoulliMasks | None:
    s = BetaBernoulliMasks(model)
    return s if s.parameters() else None


__all__ = ["BetaBernoulliMasks"]
