"""What a training method is: a callable returning a dict of losses for one batch.

The one training loop (:func:`anpvs.training.loop.fit`) calls ``method.loss(model, x, y)`` and:

* back-propagates ``out["loss"]`` into the weights (conv/linear/BN parameters);
* back-propagates ``out["mask_loss"]`` into the mask parameters (``a_uc``, ``b_uc``) when the
  method returns one (docs/decisions.md item 7: two optimizers, two losses); without it the masks, if any,
  receive ``out["loss"]``;
* logs ``out["logits"]`` accuracy and every other scalar entry as-is.

L2 weight decay is applied by the optimizer (``train.weight_decay``), not by the methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn
from torch.nn import functional as F

from ..attacks import PGD
from ..core.config import Config, check_setting_clash, setting_fields
from ..core.errors import ConfigError
from ..core.registry import METHODS


@dataclass
class Settings:
    """The ``method.*`` settings of a method, declared next to its code (one dataclass per family, inheriting
    the settings it shares). The config's ``method`` section holds every registered method's settings
    (:func:`anpvs.training.run_config.method_config_class`); each method validates its own in :meth:`validate`."""

    kl_n: int = 0  # N in beta*KL/N and the BNN KL; 0 = size of the training set (the reference: 60,000 / 50,000)
    reinit_head: bool = False  # init: re-initialise a classifier head whose shape differs (pretrained_at: true)

    @staticmethod
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    def validate(self) -> None:
        """Raise :class:`~anpvs.core.errors.ConfigError` (one line naming the key and the fix) for values that cannot
        work."""
        self.need(self.kl_n >= 0, "method.kl_n must be >= 0 (0 = training-set size)")


#: ``method.*`` key -> (the settings class that declared it first, (type, default)); every registered method's
_DECLARED: dict[str, tuple[str, tuple[Any, Any]]] = {}


def check_settings(cls: type[Settings], declared: dict[str, tuple[str, tuple[Any, Any]]] | None = None) -> None:
    """Raise ``TypeError`` if ``cls`` declares a ``method.*`` key that an already registered method declares with
    another type or default (the config's ``method`` section holds one value per key, so one of the two would
    silently get the other's default). A setting shared through a common base class is one declaration."""
    declared = _DECLARED if declared is None else declared
    for key, have in setting_fields(cls).items():
        if key in declared:
            check_setting_clash(key, cls.__qualname__, have, *declared[key])


def register_method(name: str):
    """Register a :class:`Method` subclass as ``name``; its ``settings`` must agree with every registered
    method's on the keys they share (:func:`check_settings`)."""
    def deco(cls):
        settings = getattr(cls, "settings", None)
        if settings is not None:
            check_settings(settings)
        METHODS.register(name)(cls)
        if settings is not None:
            for key, have in setting_fields(settings).items():
                _DECLARED.setdefault(key, (settings.__qualname__, have))
        return cls

    return deco


class Method:
    """Base class. ``model_variant`` names the architecture variant the method needs ("" or "bbd")."""

    model_variant: str = ""
    #: whether the method must start from a trained (Standard) checkpoint given with ``init``
    wants_init: bool = False
    #: the ``method.*`` settings it reads
    settings: ClassVar[type[Settings]] = Settings
    #: config values the method sets after the dataset preset (below the user's YAML and flags)
    preset: ClassVar[dict[str, Any]] = {}
    #: whether what it trains depends on ``train.epochs`` (e.g. ADMM's phases), so a finished run of it
    #: cannot be extended with ``--resume --epochs N``
    depends_on_epochs: ClassVar[bool] = False

    def __init__(self, cfg: Config, n_train: int) -> None:
        self.cfg = cfg
        self.n_train = n_train

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def sparsifiers(self, model: nn.Module) -> list:
        """Pruning schemes this method brings (:class:`anpvs.sparsifiers.Sparsifier`, e.g. ADMM's), driven by
        the training loop beside the ones the model carries; their state belongs in :meth:`state_dict`."""
        return []

    def on_step_end(self, model: nn.Module) -> None:
        """Hook after each optimizer step."""

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """Hook after each epoch, before the checkpoint is written."""

    def epoch_metrics(self, model: nn.Module) -> dict[str, Any]:
        """Extra scalars for the epoch's log line."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Method state saved in checkpoints (tensors and primitive containers only), restored on resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def list_methods() -> list[str]:
    """The registered method names (every module of :mod:`anpvs.methods` is imported on first use)."""
    return METHODS.names()


def build_method(cfg: Config, n_train: int) -> Method:
    return METHODS.get(cfg.method.name)(cfg, n_train)


def train_attack(cfg: Config) -> PGD:
    """The training-time PGD of the config (random start, run on the test-mode network)."""
    a = cfg.attack
    return PGD(eps=a.eps, step_size=a.step_size, steps=a.steps, norm=a.norm)


def mixed_ce(logits: Tensor, logits_adv: Tensor, y: Tensor, cfg: Config) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, ce_clean, ce_adv)``: ``(CE_clean + w CE_adv) / (1 + w)`` ("mixed", reference) or CE_adv ("madry")."""
    ce_clean = F.cross_entropy(logits, y)
    ce_adv = F.cross_entropy(logits_adv, y)
    if cfg.method.adv_loss == "madry":
        return ce_adv, ce_clean, ce_adv
    w = cfg.method.adv_weight
    return (ce_clean + w * ce_adv) / (1.0 + w), ce_clean, ce_adv
