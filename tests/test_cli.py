"""Tests of the command line, run in-process (``anpvs.cli.main``; ``runpy`` for ``python -m anpvs.cli``)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml
from _toys import run_cli

import anpvs
from anpvs.training.run_config import config_from_dict

pytestmark = pytest.mark.usefixtures("fake_git")


def assert_one_line_error(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("anpvs: error: ")
    assert "Traceback" not in err


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"anpvs {anpvs.__version__}"


def test_version_as_a_module(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # What `python -m anpvs.cli --version` runs, in-process (a subprocess would pay seconds of torch import).
    # The `anpvs` console script of pyproject.toml is `anpvs.cli:main`, tested everywhere else in this file.
    monkeypatch.setattr(sys, "argv", ["anpvs", "--version"])
    monkeypatch.delitem(sys.modules, "anpvs.cli")  # runpy warns when re-running an imported module
    with pytest.raises(SystemExit) as info:
        runpy.run_module("anpvs.cli", run_name="__main__", alter_sys=True)
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"anpvs {anpvs.__version__}"


@pytest.mark.parametrize(("args", "fragment"), [
    (["--set", "foo.bar=1"], "'foo.bar'"),
    (["--set", "train.epochs=many"], "train.epochs"),
    (["--set", "train.epochs"], "key=value"),
    (["--eps", "-1"], "attack.eps"),
    (["--model", "vgg61"], "vgg61"),
    (["--dataset", "imagenet"], "imagenet"),
    (["--method", "madry"], "madry"),
    (["--epochs", "0"], "train.epochs"),
    (["--config", "MISSING.yaml"], "not found"),
])
def test_train_rejects_bad_input_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               args: list[str], fragment: str) -> None:
    out = tmp_path / "run"
    status = run_cli(["train", "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err
    assert status == 2
    assert_one_line_error(err)
    assert fragment in err
    assert not out.exists(), "a rejected command must not create the run directory"


def test_train_rejects_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2\n")
    assert run_cli(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "bad.yaml" in err


def test_print_config_applies_precedence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  name: cifar10\nattack.eps: 0.05\ntrain:\n  epochs: 7\n")
    assert run_cli(["train", "--config", str(path), "--eps", "0.07", "--set", "train.lr_milestones=[0.25]",
                    "--print-config"]) == 0
    cfg = config_from_dict(yaml.safe_load(capsys.readouterr().out))
    assert cfg.data.name == "cifar10" and cfg.model.name == "vgg16"  # preset from the YAML's dataset
    assert cfg.attack.eps == 0.07  # flag over YAML
    assert cfg.train.epochs == 7  # YAML over default
    assert cfg.train.lr_milestones == [0.25]  # --set over preset
    assert cfg.attack.step_size == 0.007  # preset over default


def test_eval_of_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = run_cli(["eval", str(tmp_path / "nope" / "checkpoint.pt"), "--quiet"])
    err = capsys.readouterr().err
    assert status != 0
    assert_one_line_error(err)
    assert "not found" in err


def test_eval_of_a_file_that_is_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_text("hello")
    assert run_cli(["eval", str(path), "--quiet"]) == 1
    assert_one_line_error(capsys.readouterr().err)


def test_train_then_eval_end_to_end(tiny_mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    train = ["train", "--dataset", "mnist", "--data-dir", str(tiny_mnist_dir), "--method", "at", "--epochs", "1",
             "--batch-size", "16", "--train-limit", "32", "--test-limit", "32", "--pgd-steps", "2",
             "--device", "cpu", "--out", str(out), "--quiet"]
    assert run_cli(train) == 0
    captured = capsys.readouterr()
    assert "checkpoint" in captured.out and "Traceback" not in captured.err
    ckpt = out / "checkpoint.pt"
    assert ckpt.is_file() and (out / "config.yaml").is_file()
    assert len((out / "log.jsonl").read_text().splitlines()) == 1

    # the same command again must not overwrite the finished run
    assert run_cli(train) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "--resume" in err

    assert run_cli(["eval", str(ckpt), "--steps", "3", "--device", "cpu", "--quiet"]) == 0
    assert "clean accuracy" in capsys.readouterr().out
    record = json.loads((out / "eval.json").read_text())
    metrics = record["metrics"]
    for key in ("clean_acc", "pgd_acc", "pgd_vulnerability", "memory_pct", "flops_speedup", "unit_sparsity"):
        assert key in metrics, key
    assert metrics["n"] == 32
    assert 0 <= metrics["pgd_acc"] <= metrics["clean_acc"] <= 100
    assert metrics["pgd_vulnerability"] > 0
    assert len(metrics["pgd_vulnerability_per_layer"]) == 3
    assert (metrics["memory_pct"], metrics["flops_speedup"], metrics["unit_sparsity"]) == (100.0, 1.0, 0.0)
    assert record["attack"]["steps"] == 3 and record["attack"]["eps"] == 0.3
    assert record["method"] == "at" and record["model"] == "lenet5_caffe"

    # an invalid attack setting is a one-line usage error too
    assert run_cli(["eval", str(ckpt), "--steps", "0", "--device", "cpu", "--quiet"]) == 2
    assert_one_line_error(capsys.readouterr().err)
