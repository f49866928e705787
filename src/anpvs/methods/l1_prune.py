"""L1 filter pruning of an adversarially trained network, then adversarial fine-tuning: the simple structured
baseline of the sparsity-robustness frontier (docs/target_sparsity.md).

Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient ConvNets" (ICLR 2017,
https://arxiv.org/abs/1608.08710): rank the filters of a layer by the L1 norm of their weights, remove the
smallest with the feature maps they produce, retrain. Here every unit that a Beta-Bernoulli mask of the
``_bbd`` model covers is scored by the L1 norm of the weights that make it:

* a conv channel (LeNet mask1, mask2; VGG mask1-13): its filter ``W[k]``;
* a hidden unit of a dense layer (LeNet mask4, VGG mask15): its row of incoming weights;
* an input of a dense layer that no layer of its own makes (LeNet mask3: one of the 16 positions of a conv2
  channel; VGG mask14: a conv13 channel after the last pool): its column of outgoing weights. A position of a
  pruned conv channel is dead (the channel's map is gone, as in Li et al.), so it ranks below every live one,
  and every kept channel keeps at least its best position, so that no kept channel is left feeding nothing.

Layers are pruned independently on the ``init`` weights (Li et al.'s "independent" strategy) to the counts of
the unit target (:mod:`anpvs.methods.target`): ``method.target_units`` per mask, ``method.target_units_from``
(the active units per mask of another masked checkpoint, e.g. an ANP-VS run: the same widths layer by layer,
for a comparison at equal architecture) or ``method.target_sparsity`` (the same fraction in every layer: raw L1
norms of layers with different fan-in are not comparable, so there is no global ranking). Nothing asked: no
unit is pruned.

The cut happens before the first step; kept units are switched fully on and pruned ones off
(:data:`~anpvs.nn.beta_bernoulli.UNIT_ON` / ``UNIT_OFF``), and the masks are held there: they are fixed 0/1
gates, so ``anpvs eval`` counts the pruned units and ``anpvs compact`` removes them like ANP-VS's. The weights
are then fine-tuned for ``train.epochs`` with the AT row's loss (mixed ``(CE + 2 CE_adv) / 3``, PGD from
``attack.*``). Start from an AT checkpoint (``init``)::

    anpvs train --method at --out runs/at
    anpvs train --method l1_prune --init runs/at/checkpoint.pt --epochs 2 --out runs/l1 \\
        --set method.target_units_from=runs/anp_vs/checkpoint.pt
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.errors import ConfigError
from ..nn.beta_bernoulli import bbd_layers
from ..sparsifiers.budget import UnitBudget, kept_per_layer, top_units
from .adversarial import Adversarial, AdversarialSettings
from .base import register_method
from .target import TargetSettings, asked_target, target_counts


def unit_weights(model: nn.Module) -> list[tuple[Tensor, int, int | None]]:
    """Per mask of a masked model, in mask order: ``(weight, dim, parent)``: unit ``k`` is scored by ``weight``'s
    slice ``k`` along ``dim``; ``parent`` is the mask of the conv channels whose positions the units are (or
    None). The architecture declares them (``model.unit_weights()``, the architecture protocol)."""
    declared = getattr(model, "unit_weights", None)
    if declared is None:
        raise ConfigError(f"l1_prune needs a model that declares unit_weights(); {type(model).__name__} does not")
    return declared()


def l1_scores(weight: Tensor, dim: int) -> Tensor:
    """L1 norm of every slice of ``weight`` along ``dim`` (a filter, a row or a column)."""
    return weight.detach().abs().transpose(0, dim).flatten(1).sum(1)


def l1_keep(model: nn.Module, counts: list[int]) -> list[Tensor]:
    """Boolean keep-vector per mask: the ``counts[i]`` units of largest L1 norm of mask ``i`` (ties to the lower
    index). For positions of conv channels (a ``parent`` mask): every kept channel first keeps its best position
    (when there are at least as many places as kept channels), then the other places go by L1 norm, and the
    positions of pruned channels come last. Ranking the positions on their own would leave kept channels none of
    whose positions is kept: channels that feed nothing, which compaction removes, so the network would be
    narrower than the counts say (13 of LeNet's 37 conv2 channels at ANP-VS's 75% widths, docs/target_sparsity.md)."""
    keep: list[Tensor] = []
    for (w, dim, parent), k in zip(unit_weights(model), counts, strict=True):
        score = l1_scores(w, dim)
        if parent is not None:
            channels = keep[parent].to(score.device)
            per = score.numel() // channels.numel()
            score = score.masked_fill(~channels.repeat_interleave(per), float("-inf"))
            best = score.view(-1, per).argmax(1) + torch.arange(channels.numel(), device=score.device) * per
            first = top_units(score[best].masked_fill(~channels, float("-inf")), min(k, int(channels.sum())))
            score = score.index_fill(0, best[first], float("inf"))  # reserved: every kept channel's best position
        keep.append(top_units(score, k))
    return keep


@dataclass
class L1Settings(AdversarialSettings, TargetSettings):
    """AT's loss settings and the unit target (``target_epoch`` must stay 0: the init is pruned)."""


@register_method("l1_prune")
class L1Prune(Adversarial):
    """Prune an AT model's channels and neurons by the L1 norm of their filters, then fine-tune adversarially."""

    model_variant = "bbd"
    wants_init = True
    settings = L1Settings

    def __init__(self, cfg, n_train):
        super().__init__(cfg, n_train)
        if cfg.method.target_epoch:
            raise ConfigError(f"l1_prune prunes its init checkpoint before the first step, so method.target_epoch "
                              f"must be 0 (got {cfg.method.target_epoch}); train the model first (--method at)")
        self.budget = UnitBudget(self.choose, switch_on=True, asked=asked_target(cfg))

    def counts(self, model: nn.Module) -> list[int]:
        """Units kept per mask: the asked counts, or every layer pruned by ``method.target_sparsity``."""
        widths = [m.num_units for m in bbd_layers(model)]
        return target_counts(self.cfg, widths) or kept_per_layer(self.cfg.method.target_sparsity, widths)

    def choose(self, model: nn.Module) -> list[Tensor]:
        return l1_keep(model, self.counts(model))

    def sparsifiers(self, model: nn.Module) -> list:
        unit_weights(model)
        self.counts(model)  # an impossible target stops the run now, before any training
        return [self.budget]

    def state_dict(self) -> dict[str, Any]:
        return {"budget": self.budget.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.budget.load_state_dict(state["budget"])


__all__ = ["L1Prune", "L1Settings", "l1_keep", "l1_scores", "unit_weights"]
