"""AutoAttack (optional extra ``anpvs[eval]``) behind the common ``attack(model, x, y) -> x_adv`` call.

The ensemble itself comes from the ``pyautoattack`` package (PyPI, MIT; Croce and Hein's
``fra31/auto-attack``); this module only adapts it so that :func:`anpvs.evaluate.evaluate` runs it
like any other attack, which also gives AutoAttack's adversarial examples a vulnerability number.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import AnpvsError
from ..registry import ATTACKS
from .base import NORMS, ThreatSpec, eval_mode

INSTALL_HINT = "autoattack needs the optional extra: pip install 'anpvs[eval]'"
_AA_NORMS = {"linf": "Linf", "l2": "L2"}
VERSIONS = ("standard", "plus", "rand")
#: the logger through which pyautoattack reports its own reliability checks
AA_LOGGER = "auto-attack"


class OptionalDependencyError(AnpvsError, ImportError):
    """An optional extra that a requested feature needs is not installed."""


def autoattack_available() -> bool:
    """Whether the optional ``pyautoattack`` package (``pip install 'anpvs[eval]'``) can be imported."""
    try:
        _import_autoattack()
    except OptionalDependencyError:
        return False
    return True


def _import_autoattack():
    try:
        from pyautoattack import AutoAttack as _AutoAttack
    except ImportError:
        raise OptionalDependencyError(INSTALL_HINT) from None
    return _AutoAttack


@contextlib.contextmanager
def autoattack_flags() -> Iterator[list[str]]:
    """Collects, as strings, the warnings AutoAttack's own reliability checks log while the block runs, e.g.
    "Square Attack has decreased the robust accuracy of 2.20%": the black-box Square found points that the
    gradient attacks before it missed, a sign of masked gradients (Croce and Hein's ``flags_doc.md``).
    pyautoattack only logs them; :func:`anpvs.evaluate.evaluate` puts them into the record."""
    handler = _Collect()
    logger = logging.getLogger(AA_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


class _Collect(logging.Handler):
    """Keeps the messages of the WARNING (and higher) records it is handed."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _LogitsOnly(nn.Module):
    """Hands AutoAttack a module whose forward returns one ``(N, C)`` tensor (auto-attack#83)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


@dataclass(frozen=True)
class AutoAttack:
    """AutoAttack, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks" (Croce and Hein, ICML 2020, arXiv:2003.01690).

    ``version="standard"``: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries).
    ``version="rand"``: APGD-CE and APGD-DLR with 20 EOT samples, for stochastic models.

    Distance measure: L-inf (default) or L2, in pixel units; inputs must lie in [0, 1].

    Args:
        eps: radius of the threat model.
        norm: ``"linf"`` or ``"l2"``.
        version: ``"standard"``, ``"plus"`` or ``"rand"``.
        seed: seed of AutoAttack's random restarts (fixed so that reruns agree).

    Shape: x (N, C, H, W) in [0, 1]; y (N,). Returns detached adversarial images on x's device. The model runs
    in eval mode (every module's flag is restored afterwards) and must return logits. Points the model already
    misclassifies are returned unchanged, as AutoAttack does.

    Raises :class:`OptionalDependencyError` at construction when ``pyautoattack`` is not installed.

    >>> attack = AutoAttack(eps=0.3)  # doctest: +SKIP
    >>> x_adv = attack(model, x, y)  # doctest: +SKIP
    """

    eps: float
    norm: str = "linf"
    version: str = "standard"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        if self.version not in VERSIONS:
            raise ValueError(f"unknown AutoAttack version {self.version!r}; valid: {', '.join(VERSIONS)}")
        _import_autoattack()  # fail before any data is loaded

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        aa_cls = _import_autoattack()
        x = x.detach()
        with eval_mode(model):
            adversary = aa_cls(_LogitsOnly(model).eval(), eps=self.eps, norm=_AA_NORMS[self.norm], seed=self.seed,
                               version=self.version, device=x.device)
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=max(len(x), 1))
        return x_adv.detach().to(x.device).clamp_(0.0, 1.0)

    def describe(self) -> dict[str, object]:
        """The settings written into evaluation records."""
        return {"package": "pyautoattack", "version": self.version, "norm": _AA_NORMS[self.norm], "eps": self.eps,
                "seed": self.seed}


__all__ = ["INSTALL_HINT", "AutoAttack", "OptionalDependencyError", "autoattack_flags"]


@ATTACKS.register("autoattack")
def autoattack_attack(spec: ThreatSpec) -> AutoAttack:
    # a model with sampled weights is a randomized defense: AutoAttack's "rand" version (EOT)
    return AutoAttack(eps=spec.eps, norm=spec.norm, version="rand" if spec.sampled_weights else "standard",
                      seed=spec.seed)
