"""Name -> object registries that fail loudly on unknown names, and discover their plug-ins.

The plug-in kinds of anpvs are declared here, once: :data:`MODELS`, :data:`METHODS`, :data:`ATTACKS`,
:data:`SPARSIFIERS` and :data:`DATA_FORMATS`. Each names the package whose modules register into it; the first
lookup imports every module of that package (``pkgutil``), so a new model, method, attack, sparsifier or dataset
format is one file in its package with a ``@register_...`` decorator, and no import list is edited. Looking a
name up never needs the caller to import the package (``anpvs.training.run_config`` checks names without importing
the methods). A lookup is an import made at run time, so only a module at the plug-in package's layer or above
looks it up (``tests/test_layers.py``)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError, KeyError):
    """A name that is not in a registry (a ``KeyError`` and a :class:`~anpvs.core.errors.ConfigError`; the message
    lists the valid names; exit status 2)."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to factories. ``get`` on an unknown name raises ``KeyError`` listing valid names.

    ``package``: a dotted package name whose modules are imported on the first lookup (discovery).

    >>> MODELS = Registry("model")
    >>> @MODELS.register("toy")
    ... def toy(): return 1
    >>> MODELS.get("toy")()
    1
    """

    #: when a set: every ``(module, package)`` pair of a module that looked a plug-in up in a discovering registry
    #: (the first caller outside this module), for ``tests/test_layers.py``: a lookup is an import made at run
    #: time, so it must not reach from a lower layer into a higher one. ``None`` (the default) records nothing.
    trace: set[tuple[str, str]] | None = None

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._items: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def discover(self) -> None:
        """Import every module of ``package`` once (their decorators register them)."""
        if Registry.trace is not None and self.package is not None:
            frame = sys._getframe(1)
            while frame is not None and frame.f_globals.get("__name__") == __name__:
                frame = frame.f_back
            if frame is not None:
                Registry.trace.add((frame.f_globals.get("__name__", "?"), self.package))
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str) -> T:
        self.discover()
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self.discover()
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._items


MODELS: Registry[Callable[..., Any]] = Registry("model", "anpvs.models")
METHODS: Registry[Callable[..., Any]] = Registry("method", "anpvs.methods")
ATTACKS: Registry[Callable[..., Any]] = Registry("attack", "anpvs.attacks")
SPARSIFIERS: Registry[Callable[..., Any]] = Registry("sparsifier", "anpvs.sparsifiers")
DATA_FORMATS: Registry[Callable[..., Any]] = Registry("dataset", "anpvs.data.formats")
#: architecture name (``model.arch``) -> its masked/plain network class (:class:`anpvs.models.base.Classifier`
#: subclasses register themselves), for what is read from an architecture rather than one model
ARCHITECTURES: Registry[type] = Registry("architecture", "anpvs.models")

__all__ = ["ARCHITECTURES", "ATTACKS", "DATA_FORMATS", "METHODS", "MODELS", "SPARSIFIERS", "Registry",
           "UnknownNameError"]
