"""Unit targets: the target-sparsity control of the Beta-Bernoulli methods (BP, ANP, ANP-VS) and the unit
counts of the L1 baseline (:mod:`anpvs.methods.l1_prune`). docs/target_sparsity.md.

Ask with one of ``method.target_sparsity`` (a unit sparsity over all masks, e.g. 0.84),
``method.target_units`` (the units each mask keeps, in mask order) or ``method.target_units_from`` (the
active units per mask of another masked checkpoint, e.g. an ANP-VS run, so that two models have the same
per-layer widths). After ``method.target_epoch`` epochs (0: before the first step, on the masks of the
``init`` checkpoint) the masks are cut to that budget by a :class:`~anpvs.sparsifiers.budget.UnitBudget` and
held there while the weights go on training (adversarially for ANP / ANP-VS): the run ends with exactly the
asked units.

For the Beta-Bernoulli methods the kept units are those of highest E[pi], the keep probability the masks
learned against the (adversarial) loss and the KL. E[pi] is on one scale in every layer (each unit has the
same Beta(alpha, 1) prior and its own KL term), so a global target is one threshold on E[pi] across layers:
the method's own pruning rule (``E[pi] <= 1e-3``) with the threshold moved to where the target is met, except
that every mask keeps at least its best unit (:func:`~anpvs.sparsifiers.budget.top_units_global`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..core.config import Config
from ..core.errors import ConfigError
from ..models.checkpoint import load_model
from ..models.masks import active_units, named_masks
from ..nn.beta_bernoulli import bbd_layers, kumaraswamy_mean
from ..sparsifiers.budget import UnitBudget, kept_total, top_units, top_units_global
from .base import Settings


@dataclass
class TargetSettings(Settings):
    """The unit target of a masked model (at most one of the first three)."""

    target_sparsity: float = 0.0  # unit sparsity asked for: fraction of all masked units pruned (e.g. 0.84); 0 = off
    target_units: list[int] = field(default_factory=list)  # units kept per mask, in mask order; [] = off
    target_units_from: str = ""  # checkpoint of a masked run whose active units per mask are the target; "" = off
    target_epoch: int = 0  # the cut comes after this many epochs; 0 = before the first step, on the init's masks

    def validate(self) -> None:
        super().validate()
        self.need(0 <= self.target_sparsity < 1,
                  f"method.target_sparsity is a fraction of units in [0, 1) (got {self.target_sparsity})")
        self.need(all(k >= 1 for k in self.target_units),
                  f"method.target_units entries must be >= 1, every mask keeps a unit (got {self.target_units})")
        asked = [k for k in ("target_sparsity", "target_units", "target_units_from") if getattr(self, k)]
        self.need(len(asked) <= 1, f"set one of method.{', method.'.join(asked)}: they are three ways to ask")
        self.need(self.target_epoch >= 0, f"method.target_epoch must be >= 0 (got {self.target_epoch})")
        self.need(asked or not self.target_epoch, "method.target_epoch is when a unit target is cut; ask for one "
                  "(method.target_sparsity, target_units or target_units_from) or leave it at 0")


def asked_target(cfg: Config) -> dict[str, Any]:
    """What a run asked for, for its log and evaluation records (``target_sparsity`` in percent, as the achieved
    ``unit_sparsity``); empty when it asked for nothing."""
    m = cfg.method
    if m.target_sparsity:
        return {"target_sparsity": round(100.0 * m.target_sparsity, 2)}
    if m.target_units:
        return {"target_units": list(m.target_units)}
    if m.target_units_from:
        return {"target_units_from": m.target_units_from}
    return {}


def check_target_epoch(cfg: Config) -> None:
    if cfg.method.target_epoch > cfg.train.epochs:
        raise ConfigError(f"method.target_epoch={cfg.method.target_epoch} is after the last epoch "
                          f"(train.epochs={cfg.train.epochs}); the cut would never happen")


def units_from(path: str) -> list[int]:
    """Active units per mask of a masked checkpoint (BP, ANP, ANP-VS, l1_prune)."""
    model, _ = load_model(path)
    if not named_masks(model):
        raise ConfigError(f"method.target_units_from={path!r} has no Beta-Bernoulli masks; pass the checkpoint.pt "
                          f"of a masked run (bp, anp, anp_vs, l1_prune), not a plain or compacted one")
    return active_units(model)


def target_counts(cfg: Config, widths: list[int]) -> list[int] | None:
    """The units each mask keeps when the run asks per layer (``target_units`` / ``target_units_from``), checked
    against the model's mask widths; None when it does not."""
    m = cfg.method
    if m.target_units:
        counts, where = list(m.target_units), "method.target_units"
    elif m.target_units_from:
        counts, where = units_from(m.target_units_from), f"method.target_units_from ({m.target_units_from})"
    else:
        return None
    if len(counts) != len(widths) or not all(1 <= k <= n for k, n in zip(counts, widths, strict=False)):
        raise ConfigError(f"{where} = {counts} does not fit the model's masks {widths}: one count per mask, "
                          f"each between 1 and the mask's width")
    return counts


def masks_untrained(model: nn.Module) -> bool:
    """Whether every mask still holds its initial parameters (nothing to rank by)."""
    return all(bool((m.a_uc == m.a_init).all() and (m.b_uc == m.b_init).all()) for m in bbd_layers(model))


class TargetedMasks:
    """Mixin of BP, ANP and ANP-VS: the unit target (module docstring), cut by expected keep probability E[pi]."""

    def __init__(self, cfg: Config, n_train: int) -> None:
        super().__init__(cfg, n_train)  # type: ignore[call-arg]
        self.budget: UnitBudget | None = None
        if asked_target(cfg):
            check_target_epoch(cfg)
            self.budget = UnitBudget(self.choose, at_epoch=cfg.method.target_epoch, asked=asked_target(cfg))

    def plan(self, model: nn.Module) -> tuple[list[int] | None, int]:
        """``(units per mask or None, units kept in all)``; an impossible target is a ConfigError."""
        cfg = self.cfg  # type: ignore[attr-defined]
        widths = [m.num_units for m in bbd_layers(model)]
        counts = target_counts(cfg, widths)
        total = sum(counts) if counts else kept_total(cfg.method.target_sparsity, widths)
        if total < len(widths):
            raise ConfigError(f"method.target_sparsity={cfg.method.target_sparsity} keeps {total} of {sum(widths)} "
                              f"units, fewer than one per mask ({len(widths)}); ask for a lower sparsity")
        return counts, total

    def choose(self, model: nn.Module) -> list[Tensor]:
        if masks_untrained(model):
            raise ConfigError("the masks still hold their initial values, so E[pi] cannot rank the units: set "
                              "method.target_epoch >= 1 (the masks learn first) or init from a trained bp / anp / "
                              "anp_vs checkpoint")
        counts, total = self.plan(model)
        with torch.no_grad():
            scores = [kumaraswamy_mean(m.a, m.b) for m in bbd_layers(model)]
        if counts is not None:
            return [top_units(s, k) for s, k in zip(scores, counts, strict=True)]
        return top_units_global(scores, total)

    def sparsifiers(self, model: nn.Module) -> list:
        if self.budget is None:
            return []
        self.plan(model)  # a target the model cannot meet stops the run now, not at the cut
        return [self.budget]

    def state_dict(self) -> dict[str, Any]:
        return {"budget": self.budget.state_dict()} if self.budget is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.budget is not None and state:
            self.budget.load_state_dict(state["budget"])


__all__ = ["TargetSettings", "TargetedMasks", "asked_target", "check_target_epoch", "masks_untrained",
           "target_counts", "units_from"]
