"""A run's config resolved against the plug-ins: defaults < dataset preset < method preset < YAML file < CLI
overrides, the ``method`` section built from every registered method's settings, and the checks of the names.

Why here: :mod:`anpvs.core.config` (a foundation) holds the sections, YAML loading, override parsing and every
check that needs no plug-in; resolving a config needs three plug-in registries on top of that: the chosen
dataset's preset (declared next to its format, :data:`~anpvs.core.registry.DATA_FORMATS`), the method section's
keys and the chosen method's preset and settings (declared next to each method,
:data:`~anpvs.core.registry.METHODS`) and the model's name (:data:`~anpvs.core.registry.MODELS`). A registry
imports its plug-in package at the first lookup, so the resolution must sit at or above the highest of those
packages (the methods); the training layer is the lowest one that is (``tests/test_layers.py``), and a resolved
config is what a training run is made of (``fit(build_config({...}))``; the jobs read a run's saved config back with
:func:`config_from_dict` / :func:`checkpoint_config`).

>>> cfg = build_config({"method.name": "anp_vs", "train.epochs": 3})
>>> (cfg.method.name, cfg.method.beta, cfg.train.epochs)
('anp_vs', 4.0, 3)
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from typing import Any

from ..core import config as core
from ..core.config import Config, ConfigError, MethodSection, MethodSettings, check_setting_clash, setting_fields
from ..core.errors import short
from ..core.registry import DATA_FORMATS, METHODS, MODELS
from ..data.base import dataset_names
from ..models.checkpoint import saved_config_error

_S = typing.TypeVar("_S", bound=MethodSettings)


def _settings_as(self: Any, cls: type[_S]) -> _S:
    """:meth:`anpvs.core.config.MethodSection.settings_as` of a resolved section: the values of ``cls``'s keys, when
    ``cls`` is the chosen method's settings class or one of its bases (a ``TypeError`` otherwise)."""
    chosen = getattr(METHODS.get(self.name), "settings", None)
    if chosen is None or not issubclass(chosen, cls):
        raise TypeError(f"method {self.name!r} does not declare the settings {cls.__qualname__}")
    return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})


def method_config_class() -> type[MethodSection]:
    """The ``method`` section's dataclass: ``name`` and every registered method's settings
    (:class:`anpvs.methods.base.Settings` subclasses, declared next to each method), built once on first use (a
    subclass of :class:`anpvs.core.config.MethodSection`).

    Every run's config holds all of them, whatever its method (the layout of ``config.yaml`` and of the
    checkpoints' config, which older runs and checkpoints keep loading); the settings of a method live in its
    file, so a new method adds its keys there. Two methods declaring one key differently is a ``TypeError``
    (already when the second registers, :func:`anpvs.methods.base.register_method`). Code that wants the
    typed settings of the chosen method reads :meth:`anpvs.core.config.Config.method_settings`."""
    global _METHOD_CONFIG
    if _METHOD_CONFIG is None:
        fields: list[tuple[str, Any, Any]] = []
        seen: dict[str, tuple[str, tuple[Any, Any]]] = {}
        for cls in dict.fromkeys(getattr(factory, "settings", None) for _, factory in METHODS.items()):
            if cls is None:
                continue
            for name, (tp, default) in setting_fields(cls).items():
                if name in seen:
                    check_setting_clash(name, cls.__qualname__, (tp, default), *seen[name])
                    continue
                seen[name] = (cls.__qualname__, (tp, default))
                factory = (lambda v=default: type(v)(v)) if isinstance(default, (list, dict)) else None
                fields.append((name, tp, field(default_factory=factory) if factory else field(default=default)))
        _METHOD_CONFIG = dataclasses.make_dataclass("MethodConfig", fields, bases=(MethodSection,),
                                                    namespace={"settings_as": _settings_as})
    return _METHOD_CONFIG


_METHOD_CONFIG: type[MethodSection] | None = None


def new_config() -> Config:
    """The defaults: a :class:`~anpvs.core.config.Config` whose method section holds every method's settings."""
    return Config(method=method_config_class()())


def valid_keys() -> list[str]:
    """Every dotted key of a resolved config, every method's settings included."""
    return core.valid_keys(new_config())


def dataset_preset(name: str) -> dict[str, Any]:
    """The config values of dataset ``name`` (docs/reference.md §5: the paper's per-dataset hyperparameters,
    eps and steps in pixel units), declared next to its format (``register_format(..., preset=...)``)."""
    if not isinstance(name, str) or name not in DATA_FORMATS:
        raise ConfigError(f"unknown dataset {short(name)}; valid: {', '.join(dataset_names())}")
    return dict(getattr(DATA_FORMATS.get(name), "preset", {}))


def build_config(overrides: dict[str, Any] | None = None, *, base: dict[str, Any] | None = None) -> Config:
    """Resolve a config: defaults, then the dataset's preset, then the method's, then ``base`` (e.g. a YAML file),
    then ``overrides`` (CLI). The dataset and the method are read from the merged overrides before the presets
    are applied."""
    merged = {**(base or {}), **(overrides or {})}
    cfg = new_config()
    dataset = merged.get("data.name", cfg.data.name)
    preset = dataset_preset(dataset)
    method = merged.get("method.name", cfg.method.name)
    if not isinstance(method, str):
        raise ConfigError(f"method.name: expected a string, got {short(method)}")
    # the method's preset (its class's ``preset``, next to its code) comes after the dataset's
    method_preset = getattr(METHODS.get(method), "preset", {}) if method in METHODS else {}
    for key, value in {**preset, **method_preset, **merged}.items():
        core.set_key(cfg, key, value)
    no_preset = "attack.eps" not in preset
    if no_preset:  # evaluation follows the threat model the user chose for training
        for k in ("eps", "norm"):
            if f"eval.{k}" not in merged:
                setattr(cfg.eval, k, getattr(cfg.attack, k))
    validate(cfg, given=[k.removeprefix("method.") for k in merged if k.startswith("method.")])
    if no_preset and "attack.eps" not in merged:
        raise ConfigError(f"data.name={dataset} has no default attack radius: choose one with --eps "
                          f"(pixel units, e.g. 0.3 for MNIST-like digits, 0.03 for 32x32 RGB images)")
    return cfg


def config_from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config saved with :meth:`~anpvs.core.config.Config.to_dict` (no presets applied; keys and types
    checked, values not: :func:`validate`)."""
    cfg = new_config()
    for key, value in core.flatten(d).items():
        core.set_key(cfg, key, value)
    return cfg


def checkpoint_config(ckpt: dict[str, Any], where: str = "checkpoint") -> Config:
    """The config saved in a checkpoint (read with :func:`anpvs.models.checkpoint.read_checkpoint`, which checks
    only that it is a mapping naming the model of its weights), rebuilt: one that does not rebuild is a damaged
    checkpoint (:class:`~anpvs.models.checkpoint.CheckpointError`, exit status 1, not a usage error)."""
    try:
        return config_from_dict(ckpt.get("config") or {})
    except (ConfigError, AttributeError, TypeError) as e:
        raise saved_config_error(where, e) from None


def _settings_to_check(method: str, given: typing.Iterable[str]) -> list[type[MethodSettings]]:
    """The chosen method's settings class, and for each key in ``given`` that it does not declare one class
    that does (each class once)."""
    chosen = getattr(METHODS.get(method), "settings", None)
    out = [chosen] if chosen is not None else []
    declared = {f.name for f in dataclasses.fields(chosen)} if chosen is not None else set()
    for key in dict.fromkeys(given):
        if key == "name" or key in declared:
            continue
        for _, factory in METHODS.items():
            cls = getattr(factory, "settings", None)
            if cls is not None and key in {f.name for f in dataclasses.fields(cls)}:
                if cls not in out:
                    out.append(cls)
                declared |= {f.name for f in dataclasses.fields(cls)}
                break
    return out


def validate(cfg: Config, *, given: typing.Iterable[str] = ()) -> None:
    """Reject values that cannot work, with one-line messages naming the key and the fix: the model and method
    names (an unknown one lists the valid ones), every check that needs no plug-in
    (:func:`anpvs.core.config.check_values`), then the method's settings.

    The chosen method checks its settings; ``given``: ``method.*`` keys the user set (without the prefix), each
    also checked by a method that declares it when the chosen one does not (a value set is never unchecked)."""
    MODELS.get(cfg.model.name)  # an unknown name raises a ConfigError listing the valid ones
    METHODS.get(cfg.method.name)
    core.check_values(cfg)
    for cls in _settings_to_check(cfg.method.name, given):
        cls(**{f.name: getattr(cfg.method, f.name) for f in dataclasses.fields(cls)}).validate()


__all__ = ["Config", "ConfigError", "build_config", "checkpoint_config", "config_from_dict", "dataset_preset",
           "method_config_class", "new_config", "valid_keys", "validate"]
