"""Model registry: ``create_model(name, **kwargs)``; ``list_models()``."""

from __future__ import annotations

from torch import nn

from ..registry import Registry

MODELS: Registry = Registry("model")


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


from . import bnn, lenet5_caffe, vgg16  # noqa: E402,F401  (registration side effects)
