"""Training methods (one per file): ``METHODS.get(name)(cfg, n_train).loss(model, x, y) -> dict``.

Every module of this package is imported on the first lookup (:class:`anpvs.core.registry.Registry`), so a new
method is one file here with ``@register_method("name")`` and no import list to edit."""

from .base import METHODS, Method, Settings, build_method, list_methods, register_method

__all__ = ["METHODS", "Method", "Settings", "build_method", "list_methods", "register_method"]
