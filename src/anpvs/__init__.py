"""anpvs: Adversarial Neural Pruning with latent Vulnerability Suppression (ANP-VS) in PyTorch.

Public API::

    from anpvs import create_model, list_models, PGD, FGSM, load_model, load_pretrained, fit, evaluate, compact

The names are imported on first use, so ``import anpvs`` (and ``anpvs --version``) does not load torch.
"""

from __future__ import annotations

import importlib

from ._version import __version__

#: public name -> the module that defines it
_API = {
    "FGSM": "attacks", "PGD": "attacks", "load_model": "models.checkpoint", "load_pretrained": "models.checkpoint",
    "compact": "models.compact", "evaluate": "evaluation.evaluate", "create_model": "models", "list_models": "models",
    "fit": "training.loop",
}


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FGSM", "PGD", "__version__", "compact", "create_model", "evaluate", "fit", "list_models",
           "load_model", "load_pretrained"]
