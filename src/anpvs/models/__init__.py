"""Model registry: ``create_model(name, **kwargs)``; ``list_models()``.

Every module of this package is imported on the first lookup (:class:`anpvs.registry.Registry`), so a new
architecture is one file here with ``@register_model("name")``."""

from __future__ import annotations

from torch import nn

from ..registry import MODELS


def register_model(name: str):
    return MODELS.register(name)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model. Unknown names raise ``KeyError`` listing the valid ones."""
    model = MODELS.get(name)(**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


def list_models() -> list[str]:
    return MODELS.names()


__all__ = ["MODELS", "create_model", "list_models", "register_model"]
