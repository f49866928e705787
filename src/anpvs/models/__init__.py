"""Model registry: ``create_model(name, **kwargs)``; ``list_models()``.

Every module of this package is imported on the first lookup (:class:`anpvs.core.registry.Registry`), so a new
architecture is one file here: a :class:`~anpvs.models.base.Classifier` implementing the architecture protocol
(:mod:`anpvs.models.base`; docs/architecture.md) with ``@register_model("name")`` (and ``"name_bbd"``).

Beside the architectures, what every architecture shares: :mod:`.base` (the protocol, ``eval_mode`` and the
probe ``output_classes``), :mod:`.compaction` (the compacted network's building blocks), :mod:`.masks` (a model's
Beta-Bernoulli masks and active units), :mod:`.compact` (physical compaction of any architecture) and
:mod:`.checkpoint` (self-describing checkpoints)."""

from __future__ import annotations

from torch import nn

from ..core.registry import MODELS


def register_model(name: str, *, config_keys: dict[str, str] | None = None):
    """Register a model factory. ``config_keys`` maps ``model.*`` config keys to the factory's keyword
    arguments (e.g. ``{"mask_init": "head_mask_init"}``): training passes the keys a run sets (not None)."""
    def deco(factory):
        factory.config_keys = dict(config_keys or {})
        return MODELS.register(name)(factory)

    return deco


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model. Unknown names raise ``KeyError`` listing the valid ones."""
    model = MODELS.get(name)(**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


def list_models() -> list[str]:
    return MODELS.names()


__all__ = ["MODELS", "create_model", "list_models", "register_model"]
