"""A tiny name -> object registry that fails loudly on unknown names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import AnpvsError

T = TypeVar("T")


class UnknownNameError(AnpvsError, KeyError):
    """A name that is not in a registry (a ``KeyError``; the message lists the valid names)."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to factories. ``get`` on an unknown name raises ``KeyError`` listing valid names.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("toy")
    ... def toy(): return 1
    >>> MODELS.get("toy")()
    1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
