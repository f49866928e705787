"""Evaluation extras: EOT and sampled-weight ensembles, AutoAttack, the black-box source, ``anpvs check``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from _toys import Noisy, TemplateLinear, toy_data

from anpvs.attacks import PGD, AutoAttack, OptionalDependencyError
from anpvs.attacks.autoattack import INSTALL_HINT
from anpvs.cli import main
from anpvs.evaluation.checks import check_stochastic_forward
from anpvs.evaluation.evaluate import evaluate
from anpvs.jobs.evaluate import evaluate_checkpoint
from anpvs.models import create_model
from anpvs.models.checkpoint import atomic_save, make_checkpoint, read_checkpoint

torch.set_num_threads(1)


# --- EOT and ensembles on a stochastic toy ------------------------------------------------------------------------

def test_eot_pgd_beats_single_sample_pgd_on_a_stochastic_model():
    x, y = toy_data(100)
    accs = {}
    for eot in (1, 20):
        attack = PGD(eps=0.45, step_size=0.45 / 4, steps=10, eot=eot)
        m = evaluate(Noisy(), x, y, {"pgd": attack}, ensemble=20, seed=0)
        accs[eot] = m["pgd_acc"]
        torch.manual_seed(1)
        x_adv = attack(Noisy(), x, y)
        assert 0 <= x_adv.min() and x_adv.max() <= 1 and (x_adv - x).abs().max() <= 0.45 + 1e-6
    assert accs[20] < accs[1] - 20, accs  # single gradients follow the noise; their average does not


def test_ensemble_prediction_averages_sampled_forwards():
    x, y = toy_data(200)
    single = evaluate(Noisy(), x, y, seed=0)["clean_acc"]
    averaged = evaluate(Noisy(), x, y, seed=0, ensemble=30)["clean_acc"]
    assert single < 90.0 <= averaged  # the mean model is exact; one sample is not
    assert evaluate(TemplateLinear(), x, y, ensemble=3)["clean_acc"] == 100.0
    with pytest.raises(ValueError, match="ensemble"):
        evaluate(TemplateLinear(), x, y, ensemble=0)


def test_black_box_source_runs_in_eval_mode():
    x, y = toy_data(20)
    target, source = TemplateLinear().train(), TemplateLinear().train()
    m = evaluate(target, x, y, {"pgd": PGD(eps=0.5, step_size=0.1, steps=5)}, source=source)
    assert m["bb_pgd_acc"] == 0.0
    assert source.modes_seen and not any(source.modes_seen) and not any(target.modes_seen)
    assert source.training and target.training  # the caller's modes are restored


def test_white_box_results_do_not_depend_on_a_black_box_source_beside_them():
    # every attack call draws its random starts from its own seed, so the table's white-box PGD (evaluated
    # with a source) equals anpvs eval's (without one); the vulnerability, a continuous function of the
    # starts, would differ from the second batch on if the black-box attack consumed the same random stream
    x, y = toy_data(40)
    pgd = {"pgd": PGD(eps=0.3, step_size=0.05, steps=3)}
    alone = evaluate(TemplateLinear(), x, y, pgd, batch_size=8, seed=3)
    beside = evaluate(TemplateLinear(), x, y, pgd, source=TemplateLinear(), batch_size=8, seed=3)
    assert {k: beside[k] for k in alone} == alone
    other_seed = evaluate(TemplateLinear(), x, y, pgd, batch_size=8, seed=4)
    assert other_seed["pgd_vulnerability"] != alone["pgd_vulnerability"]  # the starts do matter


# --- AutoAttack -------------------------------------------------------------------------------------------------

def test_autoattack_wrapper_on_a_tiny_model():
    pytest.importorskip("pyautoattack")
    x, y = toy_data(8)
    model = TemplateLinear().train()
    # eps 0.45 breaks every point with APGD-CE, so the slow Square/FAB stages are skipped (seconds on a CPU)
    attack = AutoAttack(eps=0.45, seed=0)
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert 0 <= x_adv.min() and x_adv.max() <= 1 and (x_adv - x).abs().max() <= 0.45 + 1e-5
    assert model.training and not any(model.modes_seen)  # attacked in eval mode, mode restored
    m = evaluate(TemplateLinear(), x, y, {"autoattack": attack})
    assert m["autoattack_acc"] <= m["clean_acc"] and "autoattack_vulnerability" in m
    assert attack.describe()["version"] == "standard"


def test_autoattacks_own_reliability_warnings_reach_the_record():
    # pyautoattack only logs its checks (logger "auto-attack"); evaluate keeps them per attack and batch, and
    # check_metrics turns them into the record's warnings, which `anpvs eval`, the tables and the audit show
    import logging

    from anpvs.attacks.autoattack import AA_LOGGER
    from anpvs.evaluation.checks import check_metrics

    msg = "Square Attack has decreased the robust accuracy of 2.20%."

    def flagged(model, x, y):  # an attack whose AutoAttack run logs the Square flag, as pyautoattack does
        logging.getLogger(AA_LOGGER).warning(msg)
        return x

    x, y = toy_data(8)
    m = evaluate(TemplateLinear(), x, y, {"autoattack": flagged, "pgd": lambda model, x, y: x}, batch_size=4)
    assert m["autoattack_flags"] == [f"batch 0: {msg}", f"batch 1: {msg}"] and "pgd_flags" not in m
    assert check_metrics(m) == [f"autoattack: AutoAttack's check: batch 0: {msg}",
                                f"autoattack: AutoAttack's check: batch 1: {msg}"]
    assert not any(type(h).__name__ == "_Collect" for h in logging.getLogger(AA_LOGGER).handlers)  # no trace


def test_autoattack_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # makes `import pyautoattack` fail
    with pytest.raises(OptionalDependencyError, match=r"pip install 'anpvs\[eval\]'"):
        AutoAttack(eps=0.3)


# --- checkpoints: eval with source / EOT / sampled weights, and `anpvs check` ---------------------------------------

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    rc = main(["train", "--dataset", "mnist_sample", "--train-limit", "200", "--test-limit", "100", "--epochs", "1",
               "--pgd-steps", "2", "--device", "cpu", "--out", str(out), "--quiet"])
    assert rc == 0
    return out / "checkpoint.pt"


def _variant(ckpt: Path, out: Path, name: str, input_shape: list[int] | None = None, **kwargs) -> Path:
    """A checkpoint of another (untrained) model with the tiny run's config."""
    base = read_checkpoint(ckpt)
    model = create_model(name, **{**base["model_kwargs"], **kwargs})
    data = {**base["data"], "input_shape": input_shape or base["data"]["input_shape"]}
    atomic_save(make_checkpoint(model, config=base["config"], epoch=1, data=data), out)
    return out


def test_anpvs_check_prints_the_table_and_writes_check_json(tiny_ckpt, capsys):
    assert main(["check", str(tiny_ckpt), "--test-limit", "40", "--steps", "5", "--device", "cpu", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "eps" in text and "accuracy" in text
    record = json.loads((tiny_ckpt.parent / "check.json").read_text())
    assert [r["eps"] for r in record["metrics"]["sweep"]] == [0.0, 0.1, 0.2, 0.3, 0.5, 1.0]
    assert record["metrics"]["n"] == 40 and isinstance(record["warnings"], list)
    assert record["metrics"]["sweep"][0]["acc"] == record["metrics"]["clean_acc"]
    for r in record["metrics"]["sweep"]:
        assert f"{r['acc']:6.2f}%" in text


def test_anpvs_check_strict_fails_on_warnings(tiny_ckpt, tmp_path, capsys):
    # A sweep that stops at a tiny radius cannot reach 0% accuracy: check (f) fires.
    args = ["check", str(tiny_ckpt), "--test-limit", "20", "--steps", "2", "--eps-sweep", "0,0.001",
            "--device", "cpu", "--quiet", "--out", str(tmp_path / "c.json")]
    assert main(args) == 0
    assert "docs/checks.md#eps-sweep" in capsys.readouterr().out
    assert main([*args, "--strict"]) == 1


def test_eval_black_box_with_eot_records_the_source(tiny_ckpt, tmp_path):
    source = _variant(tiny_ckpt, tmp_path / "source.pt", "lenet5_caffe")
    record = evaluate_checkpoint(tiny_ckpt, source=source, eot=2, steps=2, test_limit=20, device="cpu",
                                 out=tmp_path / "bb.json")
    assert record["black_box_source"] == str(source)
    assert record["attack"]["eot"] == 2 and record["attack"]["sampled_weights"] is False
    assert {"pgd_acc", "bb_pgd_acc", "bb_pgd_vulnerability"} <= set(record["metrics"])
    assert isinstance(record["warnings"], list)
    assert json.loads((tmp_path / "bb.json").read_text())["black_box_source"] == str(source)


def test_eval_rejects_a_source_with_another_input_shape(tiny_ckpt, tmp_path, capsys):
    source = _variant(tiny_ckpt, tmp_path / "rgb.pt", "lenet5_caffe", input_shape=[3, 28, 28], in_channels=3)
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tiny_ckpt), "--attack-source", str(source), "--test-limit", "10", "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anpvs: error:") and "shape" in err and "\n" not in err


def test_eval_autoattack_missing_extra_is_one_line(tiny_ckpt, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tiny_ckpt), "--attack", "autoattack", "--test-limit", "10", "--device", "cpu"])
    assert e.value.code == 1
    assert capsys.readouterr().err.strip() == f"anpvs: error: {INSTALL_HINT}"


# an untrained BNN: noise, any result
@pytest.mark.filterwarnings("ignore::anpvs.evaluation.checks.AnpvsEvaluationWarning")
def test_eval_sampled_weights_of_a_bayesian_model(tiny_ckpt, tmp_path, capsys):
    pytest.importorskip("anpvs.nn.bayes")
    bnn = _variant(tiny_ckpt, tmp_path / "bnn" / "checkpoint.pt", "lenet5_caffe_bnn")
    record = evaluate_checkpoint(bnn, sample_weights=True, eot=2, ensemble=3, steps=2, test_limit=20, device="cpu")
    a = record["attack"]
    assert (a["sampled_weights"], a["eot"], a["ensemble"]) == (True, 2, 3)
    assert Path(record["record_path"]).name == "eval_sampled.json"
    # check (a) sees the sampling unless EOT is on
    from anpvs.models.checkpoint import load_model
    from anpvs.nn.bayes import set_sampling

    model, _ = load_model(bnn)
    set_sampling(model, True)
    x = torch.rand(4, 1, 28, 28)
    with pytest.warns(UserWarning, match="stochastic"):
        assert check_stochastic_forward(model, x)
    set_sampling(model, False)
    assert check_stochastic_forward(model, x) == []
    # a deterministic model cannot sample weights: one-line error, exit status 2
    with pytest.raises(SystemExit) as e:
        main(["eval", str(tiny_ckpt), "--sample-weights", "--test-limit", "10", "--device", "cpu"])
    assert e.value.code == 2 and "Bayesian" in capsys.readouterr().err
