"""The Beta-Bernoulli masks of a model (their names, active units, per-layer summary): bookkeeping shared by
training, evaluation, compaction and the efficiency metrics. The pruning schemes that train masks are
:mod:`anpvs.sparsifiers`."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..nn.beta_bernoulli import BetaBernoulliDropout


def named_masks(model: nn.Module) -> list[tuple[str, BetaBernoulliDropout]]:
    """The Beta-Bernoulli layers of ``model`` with their module names, in forward order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BetaBernoulliDropout)]


def active_units(model: nn.Module) -> list[int]:
    """Active units per masked layer (E[pi] > threshold); the full widths for an unmasked model."""
    masks = named_masks(model)
    if masks:
        return [m.n_active() for _, m in masks]
    from ..metrics.efficiency import model_full_units

    return model_full_units(model)


def mask_summary(model: nn.Module) -> dict[str, Any]:
    """``{"active_units": {layer: n}, "kl_per_layer": {layer: kl}}`` for logging (empty for unmasked models).

    Not ``"kl"``: that key is the methods' scalar KL, which the epoch log already holds."""
    masks = named_masks(model)
    return {
        "active_units": {name: m.n_active() for name, m in masks},
        "kl_per_layer": {name: round(float(m.kl().detach()), 4) for name, m in masks},
    }
