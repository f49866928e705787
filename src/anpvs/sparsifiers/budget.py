"""Unit budgets on Beta-Bernoulli masks: at a fixed epoch, keep a chosen set of units, switch the others off for
good, and hold every mask there for the rest of training (docs/target_sparsity.md).

Two users, each bringing one :class:`UnitBudget` (:meth:`anpvs.methods.base.Method.sparsifiers`):

* the target-sparsity control of BP, ANP and ANP-VS (:mod:`anpvs.methods.target`): the units of highest E[pi]
  are kept, with the posterior they learned;
* the L1 filter-pruning baseline (:mod:`anpvs.methods.l1_prune`): the filters of largest L1 norm are kept and
  switched fully on, so its masks are fixed 0/1 gates.

A pruned unit gets :data:`~anpvs.nn.beta_bernoulli.UNIT_OFF`: its E[pi] and every training sample of its mask are
exactly 0, so the training forward, the test-mode network and the compacted one (:func:`anpvs.models.compact.compact`)
all drop it and the efficiency metrics count it as pruned. After the cut every mask parameter is put back after
each optimizer step (the masks' own optimizer still steps; what it does is undone), so a run ends with the units
it was asked to keep. The held masks are this sparsifier's state, saved with the method's checkpoint state: a
resumed run holds the same masks bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..nn.beta_bernoulli import UNIT_OFF, UNIT_ON, bbd_layers
from .base import Sparsifier

#: what a budget keeps: one boolean keep-vector per Beta-Bernoulli mask of the model, in module order
Choice = Callable[[nn.Module], list[Tensor]]


def top_units(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the ``k`` highest ``scores``; ties go to the lower index (a stable sort), so the choice is
    the same on every device.

    >>> top_units(torch.tensor([0.2, 0.9, 0.2, 0.5]), 2).tolist()
    [False, True, False, True]
    """
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[torch.sort(scores.flatten(), descending=True, stable=True).indices[:k]] = True
    return keep


def top_units_global(scores: Sequence[Tensor], total: int) -> list[Tensor]:
    """The ``total`` highest scores over all layers, with at least one unit in every layer (an empty layer would cut
    the network in two): the best unit of each layer is reserved, the other places go to the highest remaining
    scores, i.e. one threshold across layers.

    >>> [k.tolist() for k in top_units_global([torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.1, 0.2])], 3)]
    [[True, True, False], [False, True]]
    """
    sizes = [s.numel() for s in scores]
    if not len(sizes) <= total <= sum(sizes):
        raise ValueError(f"cannot keep {total} units of {sum(sizes)} with at least one in each of {len(sizes)} layers")
    best = torch.cat([top_units(s, 1) for s in scores])
    flat = torch.cat([s.detach().flatten().float() for s in scores])
    rest = top_units(flat.masked_fill(best, float("-inf")), total - len(sizes))
    return list((best | rest).split(sizes))


def kept_per_layer(sparsity: float, widths: Sequence[int]) -> list[int]:
    """Units each layer keeps when every layer is pruned by ``sparsity``: ``round((1 - sparsity) n)``, at least 1.

    >>> kept_per_layer(0.84, [20, 50, 800, 500])
    [3, 8, 128, 80]
    """
    return [max(1, round((1.0 - sparsity) * n)) for n in widths]


def kept_total(sparsity: float, widths: Sequence[int]) -> int:
    """Units kept over all layers at unit sparsity ``sparsity``: ``round((1 - sparsity) sum(widths))``.

    >>> kept_total(0.84, [20, 50, 800, 500])
    219
    """
    return round((1.0 - sparsity) * sum(widths))


class UnitBudget(Sparsifier):
    """Cut the model's Beta-Bernoulli masks to the units ``choose(model)`` keeps, then hold them.

    Args:
        choose: the keep-vectors, one per mask (called once, at the cut).
        at_epoch: the cut comes after this many epochs; 0: before the first step, on the masks the run starts
            from (e.g. those of a trained ANP-VS checkpoint given as ``init``).
        switch_on: kept units become fully on (:data:`~anpvs.nn.beta_bernoulli.UNIT_ON`: fixed 0/1 gates);
            otherwise they keep their learned posterior, and kept units that the KL had already pruned restart
            at the mask's initial value (``revived_units`` in the log).
        asked: what the user asked for (e.g. ``{"target_sparsity": 84.0}``), logged every epoch beside the
            achieved ``unit_sparsity`` that the masks' own metrics report.
    """

    name = "budget"

    def __init__(self, choose: Choice, *, at_epoch: int = 0, switch_on: bool = False,
                 asked: dict[str, Any] | None = None) -> None:
        self.choose = choose
        self.at_epoch = at_epoch
        self.switch_on = switch_on
        self.asked = dict(asked or {})
        self.held: list[tuple[Tensor, Tensor]] = []  # (a_uc, b_uc) of every mask once cut
        self.revived = 0

    @torch.no_grad()
    def cut(self, model: nn.Module) -> None:
        masks = bbd_layers(model)
        keep = self.choose(model)
        if len(keep) != len(masks):
            raise ValueError(f"the budget chose units for {len(keep)} masks; the model has {len(masks)}")
        for m, k in zip(masks, keep, strict=True):
            k = k.to(m.a_uc.device)
            if self.switch_on:
                m.set_units(k, UNIT_ON)
            else:
                dead = k & ~m.keep_mask()
                m.set_units(dead, (m.a_init, m.b_init))
                self.revived += int(dead.sum())
            m.set_units(~k, UNIT_OFF)
        self.held = [(m.a_uc.detach().clone(), m.b_uc.detach().clone()) for m in masks]

    def on_train_start(self, model: nn.Module) -> None:
        if not self.held and self.at_epoch == 0:
            self.cut(model)

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        if not self.held and epoch + 1 >= self.at_epoch:
            self.cut(model)

    @torch.no_grad()
    def on_step_end(self, model: nn.Module) -> None:
        for m, (a, b) in zip(bbd_layers(model), self.held, strict=False):  # nothing before the cut
            m.a_uc.copy_(a)
            m.b_uc.copy_(b)

    def epoch_metrics(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {**self.asked, "budget_cut": bool(self.held)}
        if self.revived:
            out["revived_units"] = self.revived
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"held": [[a, b] for a, b in self.held], "revived": self.revived}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.held = [(a, b) for a, b in state["held"]]
            self.revived = int(state["revived"])


__all__ = ["Choice", "UnitBudget", "kept_per_layer", "kept_total", "top_units", "top_units_global"]
