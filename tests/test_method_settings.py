"""Per-method settings: one declaration per ``method.*`` key, only the chosen method's checked, typed access; and
dataset presets declared next to their format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from anpvs.core.config import ConfigError
from anpvs.core.registry import DATA_FORMATS
from anpvs.data.base import register_format
from anpvs.data.formats.idx import MNIST_PRESET
from anpvs.methods import METHODS, Method, Settings
from anpvs.methods.admm import ADMMSettings
from anpvs.methods.adversarial import AdversarialSettings
from anpvs.methods.anp_vs import MaskSettings
from anpvs.methods.base import check_settings, register_method
from anpvs.methods.trades import TRADESSettings
from anpvs.training.run_config import (
    build_config,
    config_from_dict,
    dataset_preset,
    method_config_class,
    valid_keys,
)


@dataclasses.dataclass
class _Clash(Settings):
    beta: int = 9  # MaskSettings declares beta: float = 1.0


@dataclasses.dataclass
class _Shared(AdversarialSettings):  # shares AT's keys through the base class: one declaration
    extra_key_of_a_test: float = 0.5


def test_a_key_declared_twice_differently_fails_at_registration() -> None:
    with pytest.raises(TypeError, match="method.beta is declared by _Clash as <class 'int'> = 9 and by"):
        register_method("clash_of_a_test")(type("ClashMethod", (Method,), {"settings": _Clash}))
    assert "clash_of_a_test" not in METHODS  # nothing registered
    check_settings(_Shared)  # inherited keys are the same declaration

    @dataclasses.dataclass
    class Same(Settings):
        beta: float = 1.0  # same type and default as MaskSettings': no clash

    check_settings(Same)


def test_the_method_section_keeps_every_methods_keys() -> None:
    # config.yaml and checkpoints store every method's keys whatever the method; they keep loading
    keys = {f.name for f in dataclasses.fields(method_config_class())}
    for name, method in METHODS.items():
        assert {f.name for f in dataclasses.fields(method.settings)} <= keys, name
    saved = build_config({"method.name": "standard"}).to_dict()
    assert {"admm_rho", "trades_beta", "beta", "vs_weight", "target_units"} <= set(saved["method"])
    assert config_from_dict(saved).to_dict() == saved


def test_only_the_chosen_methods_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def spying(cls: type, real):
        def spy(self) -> None:
            calls.append(cls.__name__)
            real(self)
        return spy

    for cls in {m.settings for _, m in METHODS.items()} | {Settings}:
        for klass in cls.__mro__:  # every class's own check, bases included (each patched once)
            if "validate" in klass.__dict__ and not getattr(klass.__dict__["validate"], "spied", False):
                spy = spying(klass, klass.__dict__["validate"])
                spy.spied = True
                monkeypatch.setattr(klass, "validate", spy)
    build_config({"method.name": "trades"})
    assert calls == ["TRADESSettings", "Settings"]  # its own check and its base's, once each
    calls.clear()
    build_config({"method.name": "at", "method.admm_rho": 0.5})  # a value set is checked by a method declaring it
    assert calls.count("ADMMSettings") == 1 and "TRADESSettings" not in calls and "MaskSettings" not in calls
    with pytest.raises(ConfigError, match="admm_rho"):
        build_config({"method.name": "at", "method.admm_rho": -1.0})


def test_typed_access_to_the_chosen_methods_settings() -> None:
    cfg = build_config({"method.name": "anp_vs", "method.vs_reduction": "sum"})
    adv = cfg.method_settings(AdversarialSettings)
    assert isinstance(adv, AdversarialSettings) and adv.vs_reduction == "sum" and adv.vs_weight == 1e-3
    assert cfg.method_settings(MaskSettings).beta == 4.0
    with pytest.raises(TypeError, match="does not declare the settings ADMMSettings"):
        cfg.method_settings(ADMMSettings)
    with pytest.raises(TypeError, match="TRADESSettings"):
        build_config({"method.name": "at"}).method_settings(TRADESSettings)


def test_dataset_presets_live_next_to_their_format(tmp_path: Path) -> None:
    assert dataset_preset("mnist") == dataset_preset("mnist_sample") == MNIST_PRESET
    assert dataset_preset("imagefolder") == {}
    assert dataset_preset("cifar100")["method.vs_weight"] == 0.1 and dataset_preset("cifar10")["attack.eps"] == 0.03
    for name in DATA_FORMATS.names():
        assert set(dataset_preset(name)) <= set(valid_keys()), name
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; valid: mnist_sample, mnist"):
        build_config({"data.name": "nope"})
    # a new format is one registration, its preset included
    register_format("tiny_format_of_a_test", preset={"attack.eps": 0.2, "eval.eps": 0.2, "method.beta": 3.0})(
        lambda data_dir, download: None)
    try:
        cfg = build_config({"data.name": "tiny_format_of_a_test", "method.name": "anp_vs"})
        assert (cfg.attack.eps, cfg.eval.eps, cfg.method.beta) == (0.2, 0.2, 3.0)
    finally:
        DATA_FORMATS._items.pop("tiny_format_of_a_test")
