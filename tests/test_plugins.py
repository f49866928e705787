"""The plug-in registries: discovery without import lists, attacks built from one ThreatSpec, sparsifiers."""

from __future__ import annotations

import sys

import pytest

from anpvs.attacks import PGD, ThreatSpec
from anpvs.core.registry import ATTACKS, Registry, UnknownNameError
from anpvs.models import create_model
from anpvs.nn.beta_bernoulli import mask_parameters
from anpvs.sparsifiers import sparsifiers_of


def test_registry_discovers_every_module_of_its_package(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "plugins_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, value in (("first", 1), ("second", 2)):
        (pkg / f"{name}.py").write_text(f"from test_plugins_registry import REG\n\n"
                                        f"@REG.register({name!r})\ndef make():\n    return {value}\n")
    (pkg / "_private.py").write_text("raise RuntimeError('modules starting with _ are not imported')\n")
    holder = type(sys)("test_plugins_registry")
    holder.REG = Registry("plugin", "plugins_pkg")
    monkeypatch.setitem(sys.modules, "test_plugins_registry", holder)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert holder.REG.names() == ["first", "second"]  # nothing imported the modules but the lookup
    assert holder.REG.get("second")() == 2
    with pytest.raises(UnknownNameError, match="valid names: first, second"):
        holder.REG.get("third")


def test_attacks_are_registered_and_built_from_one_spec() -> None:
    assert {"pgd", "fgsm", "autoattack"} <= set(ATTACKS.names())
    spec = ThreatSpec(eps=0.1, step_size=0.02, steps=7, restarts=2, norm="l2", eot=3)
    pgd = ATTACKS.get("pgd")(spec)
    assert isinstance(pgd, PGD)
    assert (pgd.eps, pgd.step_size, pgd.steps, pgd.restarts, pgd.norm, pgd.eot) == (0.1, 0.02, 7, 2, "l2", 3)
    fgsm = ATTACKS.get("fgsm")(spec)
    assert (fgsm.eps, fgsm.steps, fgsm.norm, fgsm.eot) == (0.1, 1, "l2", 3)


def test_sparsifiers_of_a_model() -> None:
    assert sparsifiers_of(create_model("lenet5_caffe")) == []
    model = create_model("lenet5_caffe_bbd")
    (masks,) = sparsifiers_of(model)
    assert masks.name == "masks" and masks.loss_key == "mask_loss"
    assert [id(p) for p in masks.parameters()] == [id(p) for p in mask_parameters(model)]
