"""Tests of the typed configuration (STYLE rule 7): presets, precedence, loud errors, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anpvs.core.config import Config, ConfigError, load_yaml, parse_override, set_key
from anpvs.training.run_config import build_config, config_from_dict


def test_defaults_are_the_mnist_sample_preset() -> None:
    cfg = build_config()
    assert cfg.data.name == "mnist_sample"
    assert cfg.model.name == "lenet5_caffe"
    assert cfg.method.name == "standard"
    assert cfg.train.epochs == 200 and cfg.train.batch_size == 64


@pytest.mark.parametrize("dataset", ["mnist_sample", "mnist", "fashion_mnist"])
def test_mnist_presets(dataset: str) -> None:
    # docs/reference.md §5, MNIST column
    cfg = build_config({"data.name": dataset})
    assert cfg.model.name == "lenet5_caffe"
    assert (cfg.attack.eps, cfg.attack.step_size, cfg.attack.steps) == (0.3, 0.01, 20)
    assert (cfg.eval.eps, cfg.eval.step_size, cfg.eval.steps) == (0.3, 0.01, 40)
    assert cfg.method.beta == 4.0
    assert cfg.method.vs_weight == 1e-3
    assert cfg.train.lr_milestones == [0.5, 0.7]


@pytest.mark.parametrize(("dataset", "beta", "vs_weight"), [("cifar10", 2.0, 1e-4), ("cifar100", 1.0, 0.1)])
def test_cifar_presets(dataset: str, beta: float, vs_weight: float) -> None:
    # docs/reference.md §5 and docs/decisions.md item 1 (eps and step in pixel units)
    cfg = build_config({"data.name": dataset})
    assert cfg.model.name == "vgg16"
    assert (cfg.attack.eps, cfg.attack.step_size, cfg.attack.steps) == (0.03, 0.007, 10)
    assert (cfg.eval.eps, cfg.eval.step_size, cfg.eval.steps) == (0.03, 0.007, 40)
    assert cfg.method.beta == beta
    assert cfg.method.vs_weight == vs_weight
    assert cfg.train.lr_milestones == [0.5, 0.8]


def test_presets_do_not_leak_between_configs() -> None:
    # the presets are shared dicts; building one config must not change the next
    build_config({"data.name": "cifar10", "train.lr_milestones": [0.1]})
    assert build_config({"data.name": "cifar10"}).train.lr_milestones == [0.5, 0.8]
    assert build_config().train.lr_milestones == [0.5, 0.7]


def test_bp_method_preset_sets_beta_one() -> None:
    # the reference's BP ignores beta_weight (docs/reference.md §8)
    assert build_config({"method.name": "bp"}).method.beta == 1.0
    assert build_config({"data.name": "cifar10", "method.name": "bp"}).method.beta == 1.0
    assert build_config({"method.name": "bp", "method.beta": 3.0}).method.beta == 3.0
    assert build_config({"method.name": "anp_vs"}).method.beta == 4.0


def test_precedence_defaults_preset_yaml_cli(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"name": "cifar10"}, "attack": {"eps": 0.05}, "train.epochs": 7}))
    base = load_yaml(path)
    cfg = build_config({}, base=base)
    assert cfg.data.name == "cifar10"  # the YAML's dataset picks the preset
    assert cfg.attack.step_size == 0.007  # preset over default
    assert cfg.attack.eps == 0.05  # YAML over preset
    assert cfg.train.epochs == 7  # YAML over default
    assert cfg.train.batch_size == 64  # default
    cfg = build_config({"attack.eps": 0.07, "train.epochs": 9}, base=base)
    assert (cfg.attack.eps, cfg.train.epochs) == (0.07, 9)  # CLI over YAML
    cfg = build_config({"data.name": "cifar100"}, base=base)
    assert cfg.method.beta == 1.0  # a CLI dataset switches the preset under the YAML's values
    assert cfg.attack.eps == 0.05


def test_yaml_nested_sections_and_dotted_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  lr_milestones: [0.4, 0.9]\nmethod.name: at\nseed: 5\n"
                    "data:\n  train_limit: 100\n  dir: null\n")
    flat = load_yaml(path)
    assert flat == {"train.epochs": 3, "train.lr_milestones": [0.4, 0.9], "method.name": "at", "seed": 5,
                    "data.train_limit": 100, "data.dir": None}
    cfg = build_config(base=flat)
    assert cfg.train.epochs == 3 and cfg.train.lr_milestones == [0.4, 0.9]
    assert cfg.method.name == "at" and cfg.seed == 5 and cfg.data.train_limit == 100


def test_empty_yaml_is_an_empty_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_yaml(path) == {}


@pytest.mark.parametrize("text", ["train: [1, 2\n", "- a\n- b\n"])
def test_bad_yaml_raises_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize("key", ["foo", "foo.bar", "train.epoch", "train.epochs.x", "train"])
def test_unknown_key_is_named(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({key: 1})
    assert repr(key) in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_in_yaml_section_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match="'train.epocs'"):
        build_config(base=load_yaml(path))


@pytest.mark.parametrize(("key", "value"), [
    ("train.epochs", "ten"), ("train.epochs", 2.5), ("train.epochs", True), ("attack.eps", "big"),
    ("data.download", 1), ("train.lr_milestones", 0.5), ("train.lr_milestones", ["a"]),
    ("data.train_limit", "all"), ("seed", None),
])
def test_wrong_type_raises(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config({key: value})


def test_ints_are_accepted_for_floats() -> None:
    cfg = build_config({"attack.eps": 1, "train.lr_milestones": [1]})
    assert cfg.attack.eps == 1.0 and isinstance(cfg.attack.eps, float)
    assert cfg.train.lr_milestones == [1.0]


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"attack.eps": -0.1}, "attack.eps"),
    ({"eval.eps": -1.0}, "eval.eps"),
    ({"attack.step_size": 0.0}, "attack.step_size"),
    ({"model.name": "vgg61"}, "vgg61"),
    ({"data.name": "imagenet"}, "imagenet"),
    ({"method.name": "madry"}, "madry"),
    ({"train.epochs": 0}, "train.epochs"),
    ({"attack.norm": "l1"}, "attack.norm"),
    ({"eval.norm": "linf2"}, "eval.norm"),
    ({"train.lr_milestones": [1.5]}, "lr_milestones"),
    ({"method.vs_reduction": "max"}, "vs_reduction"),
    ({"data.name": "imagefolder"}, "data.dir"),
])
def test_invalid_values_raise(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(overrides)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_model_lists_valid_names() -> None:
    from anpvs.models import list_models

    with pytest.raises(ConfigError) as info:
        build_config({"model.name": "vgg61"})
    assert all(name in str(info.value) for name in list_models())


def test_round_trip_through_dict() -> None:
    cfg = build_config({"data.name": "cifar10", "method.name": "anp_vs", "train.epochs": 3, "data.dir": "/d",
                        "init": "runs/std/checkpoint.pt", "train.lr_milestones": [0.25]})
    d = cfg.to_dict()
    again = config_from_dict(d)
    assert again == cfg
    assert again.to_dict() == d
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(d))) == cfg  # as written to config.yaml


def test_config_from_dict_rejects_unknown_keys() -> None:
    d = Config().to_dict()
    d["train"]["warmup"] = 5
    with pytest.raises(ConfigError, match="train.warmup"):
        config_from_dict(d)


def test_set_key_and_parse_override() -> None:
    cfg = Config()
    set_key(cfg, "train.epochs", 5)
    assert cfg.train.epochs == 5
    assert parse_override("train.lr_milestones=[0.5,0.8]") == ("train.lr_milestones", [0.5, 0.8])
    assert parse_override("attack.eps=0.1") == ("attack.eps", 0.1)
    assert parse_override(" data.dir = /tmp/x") == ("data.dir", "/tmp/x")
    assert parse_override("init=") == ("init", None)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")
