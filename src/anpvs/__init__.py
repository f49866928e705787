"""anpvs: Adversarial Neural Pruning with latent Vulnerability Suppression (ANP-VS) in PyTorch.

Public API::

    from anpvs import create_model, list_models, PGD, FGSM, load_model, fit, evaluate, compact
"""

__version__ = "0.1.0"

from .attacks import FGSM, PGD  # noqa: E402
from .checkpoint import load_model  # noqa: E402
from .compact import compact  # noqa: E402

# ``from anpvs import evaluate`` is the function: importing the submodule binds the package attribute
# ``evaluate`` to the module, so the function is bound over it here, once the submodule is loaded (the
# module stays importable as ``anpvs.evaluate`` through sys.modules: ``from anpvs.evaluate import ...``).
from .evaluate import evaluate  # noqa: E402
from .models import create_model, list_models  # noqa: E402


def __getattr__(name: str):
    # fit pulls in the data and training stack; import it lazily.
    if name == "fit":
        from .train import fit

        return fit
    raise AttributeError(name)


__all__ = ["FGSM", "PGD", "__version__", "compact", "create_model", "evaluate", "fit", "list_models",
           "load_model"]
