"""anpvs: Adversarial Neural Pruning with latent Vulnerability Suppression (ANP-VS) in PyTorch.

Public API::

    from anpvs import create_model, list_models, PGD, FGSM, load_model, load_pretrained, fit, evaluate, compact

The names are imported on first use, so ``import anpvs`` (and ``anpvs --version``) does not load torch.
"""

from __future__ import annotations

import importlib
import sys
import types

from ._version import __version__

#: public name -> the module that defines it
_API = {
    "FGSM": "attacks", "PGD": "attacks", "load_model": "checkpoint", "load_pretrained": "checkpoint",
    "compact": "compact", "evaluate": "evaluate", "create_model": "models", "list_models": "models", "fit": "train",
}


class _Package(types.ModuleType):
    """The package module. ``anpvs.evaluate`` is the function, although a submodule has the same name:
    importing the submodule makes the import system bind the package attribute ``evaluate`` to the module,
    and this property ignores that binding (the module stays importable through ``sys.modules``:
    ``from anpvs.evaluate import ...``, ``importlib.import_module("anpvs.evaluate")``)."""

    @property
    def evaluate(self):
        return importlib.import_module(f"{__name__}.evaluate").evaluate

    @evaluate.setter
    def evaluate(self, value) -> None:  # the import system binding the submodule
        pass


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
        if name != "evaluate":
            globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FGSM", "PGD", "__version__", "compact", "create_model", "evaluate", "fit", "list_models",
           "load_model", "load_pretrained"]
