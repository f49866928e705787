"""Training methods (one per file): ``METHODS.get(name)(cfg, n_train).loss(model, x, y) -> dict``."""

from . import adversarial, anp_vs, bayesian_pruning, standard  # noqa: E402,F401,I001  (registration)
from . import admm, adv_bnn, pretrained_at, trades  # noqa: E402,F401,I001  (registration)
from .base import METHODS, Method, build_method, register_method

__all__ = ["METHODS", "Method", "build_method", "register_method"]
