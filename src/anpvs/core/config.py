"""One typed configuration: its sections, YAML files, overrides and the checks that need no plug-in.

Keys are dotted (``train.epochs``, ``attack.eps``). Unknown keys, wrong types and invalid values
raise :class:`ConfigError` with a one-line message.

This module is a foundation, so it knows no plug-in: resolving a config (defaults < dataset preset < method preset
< YAML file < CLI overrides), the ``method`` section's settings, and the checks of the model, method and dataset
names need the registries of the methods, models and data formats, which live above it. That is
:mod:`anpvs.training.run_config` (:func:`~anpvs.training.run_config.build_config`,
:func:`~anpvs.training.run_config.config_from_dict`); a bare :class:`Config` here holds a method section with the
method's name only (:class:`MethodSection`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..io.yamlfile import YamlRefused, parse_yaml, read_yaml
from .errors import ConfigError, short


@dataclass
class DataConfig:
    name: str = "mnist_sample"  # mnist_sample | mnist | fashion_mnist | cifar10 | cifar100 | imagefolder
    dir: str | None = None  # local folder with the data (standard torchvision layout or raw IDX files)
    download: bool = False  # let torchvision download the dataset when it is not found locally
    val_size: int = 0  # images held out of the training set for per-epoch validation (never the test set)
    train_limit: int | None = None  # keep a seeded random subset of the training set (CPU-scale runs)
    test_limit: int | None = None  # evaluate on a seeded random subset of the test set (None = all of it)
    augment: bool | None = None  # pad-4 crop + flip; None = on for CIFAR, off otherwise
    seed: int = 0  # seed of the validation split and of the subsets (fixed across training seeds)


@dataclass
class ModelConfig:
    name: str = "lenet5_caffe"  # base architecture; methods with masks switch to its "_bbd" variant
    mask_init: float | None = None  # initial a_uc of LeNet masks and VGG head masks (reference: -1.0)
    conv_mask_init: float | None = None  # initial a_uc of VGG conv masks (reference: 2.0)
    width: float | None = None  # width multiplier of VGG-16 (every layer; None = the paper's network, 1.0)
    dropout_scale: float | None = None  # VGG-16's dropout rates times this (None = the paper's, 1.0; 0 = none)
    depth: int | None = None  # WideResNet depth, 6n + 4 (None = 28)
    widen_factor: int | None = None  # WideResNet widen factor k of WRN-d-k (None = 4)


@dataclass
class AttackConfig:
    """The training-time attack (PGD in the test-mode network, docs/reference.md §4)."""

    eps: float = 0.3
    step_size: float = 0.01
    steps: int = 20
    norm: str = "linf"


@dataclass
class EvalConfig:
    """The evaluation attack (docs/reference.md §5-6): PGD-40 with random start on the whole test set."""

    eps: float = 0.3
    step_size: float = 0.01
    steps: int = 40
    restarts: int = 1
    norm: str = "linf"
    batch_size: int = 500
    precision: str = "fp32"  # fp32 | bf16 (autocast of the attacks and forwards; tables are always fp32)
    latency: bool = True  # time the masked vs the compacted network (B=1, B=256) in every evaluation record


@dataclass(frozen=True)
class EvalSpec:
    """Where and how a model is evaluated by default: the run's ``eval.*`` section, the one truth that
    ``anpvs eval``, ``anpvs check``, ``anpvs figures`` and ``anpvs reproduce`` read (the presets keep
    ``eval.eps == attack.eps``; a dataset without a preset copies the training radius and norm into ``eval.*``
    when the config is built, :func:`anpvs.training.run_config.build_config`).

    >>> spec = EvalSpec.of(Config()).with_overrides(eps=0.1)
    >>> (spec.eps, spec.norm, spec.steps)
    (0.1, 'linf', 40)
    """

    eps: float
    norm: str
    step_size: float
    steps: int
    restarts: int
    batch_size: int
    precision: str
    latency: bool

    @classmethod
    def of(cls, cfg: Config) -> EvalSpec:
        e = cfg.eval
        return cls(eps=e.eps, norm=e.norm, step_size=e.step_size, steps=e.steps, restarts=e.restarts,
                   batch_size=e.batch_size, precision=e.precision, latency=e.latency)

    def with_overrides(self, **overrides: Any) -> EvalSpec:
        """This spec with the given fields replaced; ``None`` values keep this spec's (a flag not given).
        An unknown field is a ``TypeError``, as an unknown keyword argument."""
        self.check_names(overrides)
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def check_names(cls, overrides: dict[str, Any]) -> None:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown evaluation setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")

    def attack_settings(self) -> dict[str, Any]:
        """The attack's part (what makes two evaluations comparable): eps, norm, step_size, steps, restarts."""
        return {"eps": self.eps, "norm": self.norm, "step_size": self.step_size, "steps": self.steps,
                "restarts": self.restarts}


@typing.runtime_checkable
class MethodSettings(typing.Protocol):
    """What every method's settings are (:class:`anpvs.methods.base.Settings` and its subclasses, declared next
    to each method): a dataclass of ``method.*`` values that checks itself."""

    def validate(self) -> None: ...


def setting_fields(cls: type) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, default)}`` of a settings dataclass (a default factory called once)."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.default_factory() if f.default_factory is not dataclasses.MISSING
                     else f.default) for f in dataclasses.fields(cls)}


def check_setting_clash(name: str, where: str, have: tuple[Any, Any], other: str, want: tuple[Any, Any]) -> None:
    """Two declarations of one ``method.*`` key must agree on type and default (a shared base dataclass is the
    way to share a setting); otherwise one method would silently get the other's default."""
    if have != want:
        raise TypeError(f"method.{name} is declared by {where} as {have[0]} = {have[1]!r} and by {other} as "
                        f"{want[0]} = {want[1]!r}; rename one, or share it through a common settings base class")


_S = typing.TypeVar("_S", bound=MethodSettings)


@dataclass
class MethodSection:
    """The ``method`` section as the foundations know it: the chosen method's name, and no settings.

    The section of a resolved config is a subclass holding every registered method's settings, built from the
    plug-ins by :func:`anpvs.training.run_config.method_config_class` (this module knows no plug-in); it answers
    :meth:`settings_as` for the chosen method."""

    name: str = "standard"

    def settings_as(self, cls: type[_S]) -> _S:
        """The chosen method's settings as ``cls`` (:meth:`Config.method_settings`); a bare section holds none."""
        raise TypeError(f"method {self.name!r} does not declare the settings {cls.__qualname__} in a bare config; "
                        f"build it with anpvs.training.run_config.build_config or config_from_dict")


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3  # Adam learning rate of the weights
    mask_lr: float = 1e-2  # Adam learning rate of the mask parameters (a_uc, b_uc)
    weight_decay: float = 1e-4  # L2 on conv/linear weights: adds weight_decay * sum(w^2)/2 to the loss
    decay_scope: str = "weights"  # weights: conv/linear weight tensors only | all: every trainable weight-optimizer
    #                               parameter (biases, BN gamma/beta too: the reference's sum over trainable variables)
    optimizer: str = "adam"  # adam (reference) | sgd (Nesterov momentum; recipes of TRADES, Pretrained AT, ADMM)
    momentum: float = 0.9  # SGD momentum
    schedule: str = "staircase"  # staircase (reference) | cosine | constant
    lr_milestones: list[float] = field(default_factory=lambda: [0.5, 0.7])  # staircase: fractions of all steps
    lr_gamma: float = 0.1  # staircase factor at each milestone
    val_every: int = 1  # epochs between test-mode validation passes (needs data.val_size > 0)
    precision: str = "fp32"  # fp32 | bf16: attack and training forwards under bf16 autocast (masks, KL, optimizer fp32)
    compile: bool = False  # torch.compile the model (does not pay on a small CPU: docs/performance.md)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # a MethodSection; in a resolved config (anpvs.training.run_config) the subclass with every registered
    # method's settings (plug-ins, so no static type); typed access to the chosen method's: method_settings(cls)
    method: Any = field(default_factory=MethodSection)
    attack: AttackConfig = field(default_factory=AttackConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    out: str = "runs/default"  # run directory: checkpoint, config, log, evaluation records
    init: str | None = None  # checkpoint whose weights initialise the model (BP / ANP / ANP-VS start from Standard)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def method_settings(self, cls: type[_S]) -> _S:
        """The ``method`` section as the typed settings ``cls``, for code (and type checkers) that read it:
        ``cfg.method_settings(AdversarialSettings).vs_reduction``. ``cls`` must be the chosen method's settings
        class or one of its bases (a ``TypeError`` otherwise: that method does not declare those keys). The
        section answers (:meth:`MethodSection.settings_as`): it knows the chosen method's settings class."""
        return self.method.settings_as(cls)


#: the largest magnitude of a float setting: rates, weights, radii and fractions are far below it, and their
#: products stay finite in float32 (``train.lr=1e300`` would overflow in the first optimizer step)
MAX_FLOAT = 1e6

#: a decimal number as text, e.g. "1e6" or "-2.5E-3" (YAML 1.1 leaves these as strings)
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (int, float, str, bool, list[float], X | None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {tp}, got {short(value)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {short(value)}")
        return [_coerce(key, v, item) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {short(value)}")
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e6 (no dot) as text
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                v = float(value)
            except OverflowError:
                raise ConfigError(f"{key}: {short(value)} is too large") from None
            if not math.isfinite(v):
                raise ConfigError(f"{key}: expected a finite number, got {short(value)}")
            if abs(v) > MAX_FLOAT:
                raise ConfigError(f"{key}: {short(value)} is out of range (at most {MAX_FLOAT:g} in magnitude)")
            return v
        if isinstance(value, str) and value.strip().lower().lstrip("+-.") in ("nan", "inf", "infinity"):
            raise ConfigError(f"{key}: expected a finite number, got {short(value)}")
        raise ConfigError(f"{key}: expected a number, got {short(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {short(value)}")
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}`` (sections are the Config's dataclass fields).

    A key given twice (``train.epochs: 3`` beside ``train: {epochs: 4}``) is a :class:`ConfigError`."""
    sections = set() if prefix else {f.name for f in dataclasses.fields(Config)
                                     if f.default_factory is not dataclasses.MISSING}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        nested = flatten(v, prefix=f"{key}.") if isinstance(v, dict) and (k in sections) else {key: v}
        twice = [n for n in nested if n in out]
        if twice:
            raise ConfigError(f"{short(twice[0], 80)} is set twice (as a dotted key and in its section); keep one")
        out.update(nested)
    return out


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set a dotted key, checking that it exists and that the value has the right type."""
    obj: Any = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or part not in _field_types(type(obj)):
            raise ConfigError(f"unknown config key {short(key, 80)}; valid keys: {', '.join(valid_keys(cfg))}")
        obj = getattr(obj, part)
    types_ = _field_types(type(obj)) if dataclasses.is_dataclass(obj) else {}
    name = parts[-1]
    if name not in types_ or dataclasses.is_dataclass(getattr(obj, name)):
        raise ConfigError(f"unknown config key {short(key, 80)}; valid keys: {', '.join(valid_keys(cfg))}")
    setattr(obj, name, _coerce(key, value, types_[name]))


def valid_keys(cfg: Config | None = None) -> list[str]:
    """The dotted keys of ``cfg`` (default: a bare :class:`Config`, whose method section is ``method.name`` only;
    :func:`anpvs.training.run_config.valid_keys` gives a resolved config's, every method's settings included)."""
    cfg = Config() if cfg is None else cfg
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(value)]
        else:
            keys.append(f.name)
    return keys


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` -> ``("train.epochs", 5)``; values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {short(text)} must look like key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except YamlRefused as e:
        raise ConfigError(f"the value of {short(key.strip())} {e}") from None
    except yaml.YAMLError:
        raise ConfigError(f"cannot parse the value of {short(key.strip())}: {short(raw)}") from None
    return key.strip(), value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The flattened keys of a ``--config`` file (read with :func:`anpvs.io.yamlfile.read_yaml`: bounded size
    and depth, no aliases, no duplicate keys)."""
    p = Path(path)
    data = read_yaml(p, what="config file", error=ConfigError, fix="pass a YAML file of config keys to --config")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys to values")
    try:
        return flatten(data)
    except ConfigError as e:
        raise ConfigError(f"config file {str(p)!r}: {e}") from None


def check_values(cfg: Config) -> None:
    """Reject values that cannot work, with one-line messages naming the key and the fix: every check that needs
    no plug-in (seeds, attack, evaluation, training and data sections). The names of the model, method and
    dataset and the method's settings are checked where the config is resolved
    (:func:`anpvs.training.run_config.validate`)."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    for key, seed in (("seed", cfg.seed), ("data.seed", cfg.data.seed)):
        need(-2**63 <= seed < 2**63, f"{key} must fit in 64 bits (got {seed}); use a smaller seed")
    for name, a in (("attack", cfg.attack), ("eval", cfg.eval)):
        need(a.eps >= 0, f"{name}.eps must be >= 0 (got {a.eps})")
        need(a.step_size > 0, f"{name}.step_size must be > 0 (got {a.step_size})")
        need(a.steps >= 1, f"{name}.steps must be >= 1 (got {a.steps})")
        need(a.norm in ("linf", "l2"), f"{name}.norm must be linf or l2 (got {a.norm!r})")
    need(cfg.eval.restarts >= 1, f"eval.restarts must be >= 1 (got {cfg.eval.restarts})")
    need(cfg.eval.batch_size >= 1, "eval.batch_size must be >= 1")
    t = cfg.train
    need(t.epochs >= 1, f"train.epochs must be >= 1 (got {t.epochs})")
    need(t.batch_size >= 1, f"train.batch_size must be >= 1 (got {t.batch_size})")
    need(t.lr > 0 and t.mask_lr > 0, "train.lr and train.mask_lr must be > 0")
    need(t.weight_decay >= 0, "train.weight_decay must be >= 0")
    need(t.decay_scope in ("weights", "all"), f"train.decay_scope must be weights or all (got {t.decay_scope!r})")
    need(all(0 < m <= 1 for m in t.lr_milestones), "train.lr_milestones are fractions of training in (0, 1]")
    need(t.lr_gamma > 0, "train.lr_gamma must be > 0")
    need(t.optimizer in ("adam", "sgd"), f"train.optimizer must be adam or sgd (got {t.optimizer!r})")
    need(t.schedule in ("staircase", "cosine", "constant"),
         f"train.schedule must be staircase, cosine or constant (got {t.schedule!r})")
    need(t.val_every >= 1, "train.val_every must be >= 1")
    for key, value in (("train.precision", t.precision), ("eval.precision", cfg.eval.precision)):
        need(value in ("fp32", "bf16"), f"{key} must be fp32 or bf16 (got {value!r})")
    d = cfg.data
    need(d.val_size >= 0, f"data.val_size must be >= 0 (got {d.val_size})")
    need(d.train_limit is None or d.train_limit >= 1, "data.train_limit must be >= 1")
    need(d.test_limit is None or d.test_limit >= 1, "data.test_limit must be >= 1")
    need(d.name != "imagefolder" or d.dir is not None,
         "data.name=imagefolder needs data.dir (--data-dir) pointing at a folder with train/ and test/")
