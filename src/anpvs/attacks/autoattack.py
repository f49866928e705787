"""AutoAttack (optional extra ``anpvs[eval]``) behind the common ``attack(model, x, y) -> x_adv`` call.

The ensemble itself comes from the ``pyautoattack`` package (PyPI, MIT; Croce and Hein's
``fra31/auto-attack``); this module only adapts it so that :func:`anpvs.evaluation.evaluate.evaluate` runs it
like any other attack, which also gives AutoAttack's adversarial examples a vulnerability number.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

from torch import Tensor, nn

from ..core.errors import AnpvsError
from ..core.registry import ATTACKS
from .base import NORMS, ThreatSpec, eval_mode

INSTALL_HINT = "autoattack needs the optional extra: pip install 'anpvs[eval]'"
_AA_NORMS = {"linf": "Linf", "l2": "L2"}
VERSIONS = ("standard", "plus", "rand")
#: the logger through which pyautoattack reports its own reliability checks
AA_LOGGER = "auto-attack"

log = logging.getLogger(__name__)


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
    pyautoattack only logs them; :func:`anpvs.evaluation.evaluate.evaluate` puts them into the record."""
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


class _Progress(logging.Handler):
    """The handler of the private logger an AutoAttack run with ``progress`` logs to: at the start of each stage
    (APGD-CE, APGD-T, FAB-T, Square) one INFO line of :data:`log` naming it, with the accuracy so far and the
    time spent; every record that the ``auto-attack`` logger would pass on goes on there (so
    :func:`autoattack_flags` still collects the reliability warnings)."""

    def __init__(self, n: int, stages: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.n, self.stages, self.t0, self.accuracy = n, stages, time.time(), ""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        stage = msg.removeprefix("running ")
        if stage in self.stages and self.accuracy != "0.00%":  # with no robust point left the stage is skipped
            log.info("AutoAttack on %d images: %s (%d/%d)%s, %.0f s", self.n, stage, self.stages.index(stage) + 1,
                     len(self.stages), f", accuracy so far {self.accuracy}" if self.accuracy else "",
                     time.time() - self.t0)
        elif found := re.search(r"accuracy.*: ([\d.]+%)", msg):
            self.accuracy = found.group(1)
        aa_logger = logging.getLogger(AA_LOGGER)
        if aa_logger.isEnabledFor(record.levelno):
            aa_logger.handle(record)


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
        progress: log a line as each of its attacks starts (``anpvs eval`` without ``--quiet``): a standard
            AutoAttack of a few hundred images runs for minutes.

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
    progress: bool = False

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
            if self.progress:  # pyautoattack logs its stages at DEBUG to "auto-attack"; a private logger hears them
                adversary.logger = logging.Logger(f"{AA_LOGGER}.progress", logging.DEBUG)
                adversary.logger.addHandler(_Progress(len(x), list(adversary.attacks_to_run)))
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
                      seed=spec.seed, progress=spec.progress)
