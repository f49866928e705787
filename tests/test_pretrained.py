"""The pretrained-model registry (issue 24): ``scripts/make_pretrained.py`` builds it from finished runs,
``anpvs pretrained`` lists it, ``pretrained:NAME`` is read (SHA-256 first) by eval / check / compact /
``--attack-source`` / ``--init`` and ``anpvs.load_pretrained``, and nothing is written into the registry.

Two tiny real runs on the bundled digits (a Standard model, and an ANP-VS model from it cut to fixed unit
counts so that it has a compacted twin), evaluated, then built into a registry in a temporary folder that
``$ANPVS_PRETRAINED_DIR`` points at: the tests never write into the package. The package's own registry is
only read: each model it ships must reproduce the ``check`` of its manifest entry.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from _toys import run_cli

import anpvs
from anpvs.core.config import flatten
from anpvs.data import DataNotFoundError, default_data_dir, load_dataset
from anpvs.io import pretrained
from anpvs.io.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "mnist_sample", "--train-limit", "256", "--test-limit", "64", "--pgd-steps", "1",
        "--batch-size", "32", "--device", "cpu", "--quiet", "--set", "train.lr_milestones=[]"]
#: the evaluation of the runs, and of the pretrained models that must reproduce it
EVAL = ["--test-limit", "64", "--steps", "2", "--no-latency", "--device", "cpu", "--quiet"]
#: test images of the builder's check of the tiny models (the models of the package use its default, 200)
CHECK_LIMIT = 32
#: the datasets bundled with anpvs, which a check can always use
BUNDLED = ("mnist_sample", "mnist_test_sample")


def _builder():
    spec = importlib.util.spec_from_file_location("make_pretrained", ROOT / "scripts" / "make_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_pretrained = _builder()


@dataclass
class Built:
    registry: Path
    standard: Path  # run folders
    anp_vs: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("pretrained")
    # the Standard run sits in a reproduction folder, as anpvs reproduce lays it out
    repro = tmp / "repro"
    std = repro / "runs" / "standard" / "seed0"
    anp = tmp / "anp_vs"
    assert run_cli(["train", *TINY, "--method", "standard", "--epochs", "2", "--out", str(std)]) == 0
    assert run_cli(["train", *TINY, "--method", "anp_vs", "--epochs", "1", "--init", str(std / "checkpoint.pt"),
                    "--set", "method.target_units=[10,25,300,200]", "--set", "method.target_epoch=1",
                    "--out", str(anp)]) == 0
    for run in (std, anp):
        assert run_cli(["eval", str(run / "checkpoint.pt"), *EVAL]) == 0
    (repro / "reproduce.json").write_text(json.dumps({
        "protocol": "mnist_sample.yaml", "table": "mnist", "scale": "sample", "seeds": [0],
        "rows": [{"key": "standard", "label": "Standard"}], "runs": {"standard/seed0": "runs/standard/seed0"}}))
    registry = tmp / "registry"
    make_pretrained.build([("tiny/standard", std), ("tiny/anp_vs", anp)], registry, check_limit=CHECK_LIMIT)
    return Built(registry, std, anp)


@pytest.fixture()
def use(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Built:
    """The built registry as $ANPVS_PRETRAINED_DIR, the working folder a fresh temporary one."""
    monkeypatch.setenv(pretrained.ENV, str(built.registry))
    monkeypatch.chdir(tmp_path)
    return built


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(err: str, fragment: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("anpvs: error:") and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    return lines[0]


def manifest(built: Built) -> dict[str, dict]:
    data = yaml.safe_load((built.registry / pretrained.MANIFEST).read_text())
    return {m["name"]: m for m in data["models"]}


# --------------------------------------------------------------------------------------------------------
# Zero models: the package's own registry, and an empty one
# --------------------------------------------------------------------------------------------------------


def test_the_package_registry_reads_and_every_shipped_file_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pretrained.ENV, raising=False)
    assert pretrained.registry_dir() == Path(anpvs.__file__).resolve().parent / "pretrained"
    assert pretrained.read_manifest(), "the package ships models (README, Pretrained models)"
    for m in pretrained.read_manifest():  # each shipped file must match its hash
        for f in filter(None, (m.weights, m.compact)):
            assert pretrained.sha256_file(pretrained.registry_dir() / f.file) == f.sha256


def test_an_empty_registry_says_so_and_how_to_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / pretrained.MANIFEST).write_text(f"format: {pretrained.FORMAT}\nformat_version: 1\nmodels: []\n")
    monkeypatch.setenv(pretrained.ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert run_cli(["pretrained"]) == 0
    out = capsys.readouterr().out
    assert "holds no models" in out and "scripts/make_pretrained.py" in out
    assert run_cli(["eval", "pretrained:mnist/anp_vs"]) == 2
    one_error_line(capsys.readouterr().err, "holds none")
    monkeypatch.delenv(pretrained.ENV)
    if not pretrained.read_manifest():  # the package's own registry, had it no models
        assert run_cli(["pretrained"]) == 0
        assert "no pretrained models are shipped in this version" in capsys.readouterr().out
        assert run_cli(["compact", "pretrained:mnist/anp_vs"]) == 2
        one_error_line(capsys.readouterr().err, "none are shipped in this version of anpvs")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------------------


def test_the_builder_records_files_hashes_command_and_metrics(built: Built) -> None:
    entries = manifest(built)
    assert sorted(entries) == ["tiny/anp_vs", "tiny/standard"]
    std, anp = entries["tiny/standard"], entries["tiny/anp_vs"]
    for e in (std, anp):
        for f in filter(None, (e, e["compact"])):
            path = built.registry / f["file"]
            assert f["sha256"] == pretrained.sha256_file(path) and f["size"] == path.stat().st_size
    # only the model with pruned units has a compacted twin, which loads as a compacted network
    assert std["compact"] is None and anp["compact"]["file"] == "tiny/anp_vs.compact.pt"
    twin = torch.load(built.registry / anp["compact"]["file"], weights_only=True)
    assert twin["model_name"] == "lenet5_caffe_compact"
    # shipped without the training state: a third of the run's checkpoint
    shipped = torch.load(built.registry / std["file"], weights_only=True)
    assert set(shipped) <= set(make_pretrained.KEEP) and "optimizers" not in shipped
    assert std["size"] < RunDir(built.standard).checkpoint.stat().st_size / 2
    # metrics are those of the run's evaluation record, with the attack and the test-set size
    for e, run in ((std, built.standard), (anp, built.anp_vs)):
        rec = json.loads((run / "eval.json").read_text())
        assert e["metrics"]["record"] == "eval.json" and e["metrics"]["n"] == rec["metrics"]["n"] == 64
        for key in ("clean_acc", "pgd_acc", "flops_speedup", "unit_sparsity"):
            assert e["metrics"][key] == rec["metrics"][key]
        assert e["metrics"]["vulnerability"] == rec["metrics"]["pgd_vulnerability"]
        assert e["metrics"]["attack"]["steps"] == 2 and e["metrics"]["autoattack"] is None
    assert anp["metrics"]["active_units"] == [10, 25, 300, 200]
    # the Standard run belongs to a reproduction: its reproduce command; ANP-VS's --init names the Standard model
    assert std["training"]["protocol"]["command"].startswith(
        "anpvs reproduce --table mnist --scale sample --seeds 1 --rows standard")
    assert anp["training"]["protocol"] is None
    assert "--init runs/tiny/standard/checkpoint.pt" in anp["training"]["command"]


def test_the_builder_records_a_check_on_the_bundled_test_digits(built: Built) -> None:
    entries = manifest(built)
    for name, run in (("tiny/standard", built.standard), ("tiny/anp_vs", built.anp_vs)):
        check = entries[name]["check"]
        # the runs are on MNIST's images: the check is on the real MNIST test digits bundled with anpvs, with the
        # model's own evaluation spec (PGD-40 of its config, not the --steps 2 of its record)
        assert {k: check[k] for k in ("dataset", "test_limit", "n", "seed", "device")} == {
            "dataset": "mnist_test_sample", "test_limit": CHECK_LIMIT, "n": CHECK_LIMIT, "seed": 0, "device": "cpu"}
        assert check["attack"] == {"norm": "linf", "eps": 0.3, "step_size": 0.01, "steps": 40, "restarts": 1}
        assert 0 <= check["pgd_acc"] <= check["clean_acc"] <= 100
        assert check["command"] == (f"anpvs eval pretrained:{name} --dataset mnist_test_sample --test-limit "
                                    f"{CHECK_LIMIT} --seed 0 --device cpu --no-latency")
        assert sorted(p.name for p in run.iterdir() if p.name.startswith("eval")) == ["eval.json"]  # nothing new
    assert sorted(p.relative_to(built.registry).as_posix() for p in built.registry.rglob("*") if p.is_file()) == [
        "manifest.yaml", "tiny/anp_vs.compact.pt", "tiny/anp_vs.pt", "tiny/standard.pt"]
    # the run folders without the machine's paths, beside the SHA-256 of their checkpoints
    std, anp = entries["tiny/standard"]["training"], entries["tiny/anp_vs"]["training"]
    assert std["run"] == "runs/standard/seed0" and anp["run"].endswith("/anp_vs") and anp["run"].count("/") == 2
    assert std["source_sha256"] == pretrained.sha256_file(RunDir(built.standard).checkpoint)
    assert str(built.registry.parent) not in (built.registry / pretrained.MANIFEST).read_text()


def test_the_builder_refuses_a_check_without_its_data(built: Built, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(built.standard, run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["config"]["data"]["name"] = "fashion_mnist"  # a dataset that is not bundled (same images and classes)
    torch.save(ckpt, run / "checkpoint.pt")
    with pytest.raises(make_pretrained.BuildError, match="fashion_mnist test data of its check are not found in "
                                                         ".*; give their folder with --check-data-dir DIR"):
        make_pretrained.build([("tiny/other", run)], tmp_path / "reg", check_limit=4,
                              check_data_dir=str(tmp_path / "nodata"))
    assert not (tmp_path / "reg").exists()  # refused before any file is written


@pytest.mark.parametrize("name", ["tiny/standard", "tiny/anp_vs"])
def test_the_training_command_rebuilds_the_runs_config(built: Built, name: str) -> None:
    from anpvs.cli import _train_config, build_parser

    run = built.standard if name == "tiny/standard" else built.anp_vs
    command = shlex.split(manifest(built)[name]["training"]["command"])
    assert command[:2] == ["anpvs", "train"]
    cfg = flatten(_train_config(build_parser().parse_args(command[1:])).to_dict())
    want = flatten(yaml.safe_load(RunDir(run).config.read_text()))
    assert cfg["out"] == f"runs/{name}"
    for key in ("out", "device", "init"):
        cfg.pop(key), want.pop(key)
    assert cfg == want


def test_the_builder_refuses_a_stale_or_missing_record(built: Built, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(built.standard, run)
    rec = json.loads((run / "eval.json").read_text())
    (run / "eval.json").write_text(json.dumps({**rec, "epochs": 1}))  # the record of an earlier epoch
    with pytest.raises(make_pretrained.BuildError, match="at epoch 1, but the checkpoint .* at epoch 2"):
        make_pretrained.build([("tiny/stale", run)], tmp_path / "reg")
    (run / "eval.json").unlink()
    with pytest.raises(make_pretrained.BuildError, match="has no evaluation record"):
        make_pretrained.build([("tiny/stale", run)], tmp_path / "reg")
    with pytest.raises(anpvs.core.config.ConfigError, match="dataset/model"):
        make_pretrained.build([("Tiny", built.standard)], tmp_path / "reg")
    assert not (tmp_path / "reg" / pretrained.MANIFEST).exists()


# --------------------------------------------------------------------------------------------------------
# One name everywhere
# --------------------------------------------------------------------------------------------------------


def test_pretrained_lists_the_models_with_their_metrics(use: Built, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["pretrained"]) == 0
    out = capsys.readouterr().out
    clean = manifest(use)["tiny/standard"]["metrics"]["clean_acc"]
    row = next(ln for ln in out.splitlines() if ln.startswith("tiny/standard "))
    assert f"{clean:.2f}" in row and "standard" in row and "mnist_sample" in row
    assert "tiny/anp_vs.compact" in next(ln for ln in out.splitlines() if ln.startswith("tiny/anp_vs "))


def test_eval_of_a_pretrained_model_reproduces_its_manifest(use: Built, tmp_path: Path) -> None:
    before = snapshot(use.registry)
    entries = manifest(use)
    for spec, name, record in (("pretrained:tiny/standard", "tiny/standard", "eval.json"),
                               ("pretrained:tiny/anp_vs.compact", "tiny/anp_vs", "eval_compact.json")):
        m = entries[name]["metrics"]
        assert run_cli(["eval", spec, *EVAL]) == 0
        out = tmp_path / "runs" / "pretrained" / name / record  # under the working folder, not the registry
        rec = json.loads(out.read_text())
        assert rec["checkpoint"] == spec and rec["metrics"]["n"] == m["n"]
        assert (rec["metrics"]["clean_acc"], rec["metrics"]["pgd_acc"]) == (m["clean_acc"], m["pgd_acc"])
    assert snapshot(use.registry) == before


@pytest.mark.parametrize("name", ["tiny/standard", "tiny/anp_vs"])
def test_eval_of_a_pretrained_model_reproduces_its_check(use: Built, tmp_path: Path, name: str) -> None:
    """The check's command, run on this machine, gives the check's accuracies exactly."""
    check = manifest(use)[name]["check"]
    argv = shlex.split(check["command"])
    assert argv[:3] == ["anpvs", "eval", f"pretrained:{name}"]
    assert run_cli([*argv[1:], "--quiet"]) == 0
    rec = json.loads((tmp_path / "runs/pretrained" / name / "eval_mnist_test_sample.json").read_text())
    assert rec["dataset"] == check["dataset"] and rec["metrics"]["n"] == check["n"]
    assert {k: rec["attack"][k] for k in check["attack"]} == check["attack"]
    assert (rec["metrics"]["clean_acc"], rec["metrics"]["pgd_acc"]) == (check["clean_acc"], check["pgd_acc"])


def _shipped() -> list:
    """The models of the package's own registry (never $ANPVS_PRETRAINED_DIR's), one test each."""
    try:
        models = pretrained.read_manifest(Path(anpvs.__file__).resolve().parent / "pretrained")
    except pretrained.PretrainedError as e:  # reported by the test, not as an error of the whole module
        return [pytest.param(e, id="manifest")]
    if not models:
        return [pytest.param(None, id="none", marks=pytest.mark.skip(reason="no pretrained models are shipped in "
                                                                          "this version of anpvs"))]
    return [pytest.param(m, id=m.name) for m in models]


def _images(acc: float, n: int) -> int:
    return round(acc * n / 100)


@pytest.mark.parametrize("model", _shipped())
def test_each_shipped_model_reproduces_its_check(model: pretrained.Pretrained, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``anpvs eval pretrained:NAME`` with the arguments of the manifest's ``check`` gives its clean and PGD
    accuracy within one image. On the machine that built the check they are the same exactly (the test above);
    another CPU, thread count or torch build may order the floating-point reductions differently, and a last-bit
    difference can move one attacked image across the decision boundary. The checks are made on a CPU (the
    builder's default), and evaluated again on the CPU here. A check on a dataset that is not bundled runs when
    its data are in the default data folder ($ANPVS_DATA_DIR), and is skipped otherwise."""
    if isinstance(model, Exception):
        raise model
    monkeypatch.delenv(pretrained.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    check = model.info.get("check")
    assert isinstance(check, dict), f"{model.name} has no check: rebuild it with scripts/make_pretrained.py"
    argv = shlex.split(check["command"])
    assert argv[:3] == ["anpvs", "eval", f"pretrained:{model.name}"]
    assert argv[argv.index("--dataset") + 1] == check["dataset"]
    assert argv[argv.index("--test-limit") + 1] == str(check["test_limit"])
    if check["dataset"] not in BUNDLED:
        try:
            load_dataset(check["dataset"], None, test_limit=1)
        except DataNotFoundError:
            pytest.skip(f"{model.name}: {check['dataset']} is not in {default_data_dir()} (set ANPVS_DATA_DIR)")
        argv += ["--data-dir", str(default_data_dir())]
    out = tmp_path / "check.json"
    assert run_cli([*argv[1:], "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    m = json.loads(out.read_text())["metrics"]
    assert m["n"] == check["n"]
    for key in ("clean_acc", "pgd_acc"):
        assert abs(_images(m[key], m["n"]) - _images(check[key], m["n"])) <= 1, (key, m[key], check[key])


def test_attack_source_check_and_compact_take_pretrained_names(use: Built, tmp_path: Path) -> None:
    before = snapshot(use.registry)
    assert run_cli(["eval", "pretrained:tiny/anp_vs", *EVAL, "--attack-source", "pretrained:tiny/standard"]) == 0
    rec = json.loads((tmp_path / "runs/pretrained/tiny/anp_vs/eval_bb.json").read_text())
    assert rec["black_box_source"] == "pretrained:tiny/standard" and "bb_pgd_acc" in rec["metrics"]
    assert run_cli(["check", "pretrained:tiny/standard", "--test-limit", "16", "--steps", "1", "--eps-sweep", "0,0.3",
                    "--device", "cpu", "--quiet"]) == 0
    assert json.loads((tmp_path / "runs/pretrained/tiny/standard/check.json").read_text())["metrics"]["n"] == 16
    assert run_cli(["compact", "pretrained:tiny/anp_vs"]) == 0
    small, ckpt = anpvs.load_model(tmp_path / "runs/pretrained/tiny/anp_vs/checkpoint.compact.pt")
    assert ckpt["compact"]["source_sha256"] == manifest(use)["tiny/anp_vs"]["sha256"]
    assert snapshot(use.registry) == before


def test_load_pretrained_and_init(use: Built, tmp_path: Path) -> None:
    model, ckpt = anpvs.load_pretrained("tiny/standard")
    same, _ = anpvs.load_model(RunDir(use.standard).checkpoint)
    x = torch.rand(4, 1, 28, 28)
    assert not model.training and torch.equal(model(x), same(x))
    twin, _ = anpvs.load_pretrained("pretrained:tiny/anp_vs.compact")
    full, _ = anpvs.load_pretrained("tiny/anp_vs")
    assert torch.allclose(twin(x), full(x), atol=1e-5)
    with pytest.raises(anpvs.core.config.ConfigError, match="known: tiny/anp_vs, tiny/anp_vs.compact, tiny/standard"):
        anpvs.load_pretrained("tiny/nope")
    assert run_cli(["train", *TINY, "--train-limit", "64", "--method", "at", "--epochs", "1", "--init",
                    "pretrained:tiny/standard", "--out", str(tmp_path / "ft")]) == 0


def test_an_unknown_name_lists_the_known_ones(use: Built, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["eval", "pretrained:tiny/nope"]) == 2
    one_error_line(capsys.readouterr().err, "known: tiny/anp_vs, tiny/anp_vs.compact, tiny/standard")


# --------------------------------------------------------------------------------------------------------
# Tampered files and manifests
# --------------------------------------------------------------------------------------------------------


def _tampered(built: Built, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "registry"
    shutil.copytree(built.registry, copy)
    edit(copy / "tiny" / "standard.pt")
    return copy


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("edit, fragment", [
    (_flip, "is not the file the manifest lists (SHA-256"),
    (lambda p: p.write_bytes(p.read_bytes() + b"\0"), "bytes, the manifest says"),
    (lambda p: p.unlink(), "is missing"),
], ids=["bit-flipped", "appended", "missing"])
@pytest.mark.parametrize("command", [["eval", "pretrained:tiny/standard", *EVAL],
                                     ["check", "pretrained:tiny/standard", "--test-limit", "16"],
                                     ["compact", "pretrained:tiny/standard"],
                                     ["eval", "pretrained:tiny/anp_vs.compact", "--attack-source",
                                      "pretrained:tiny/standard", *EVAL]],
                         ids=["eval", "check", "compact", "attack-source"])
def test_a_tampered_file_is_refused_before_torch_load(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], edit, fragment: str,
                                                      command: list[str]) -> None:
    registry = _tampered(built, tmp_path, edit)
    monkeypatch.setenv(pretrained.ENV, str(registry))
    monkeypatch.chdir(tmp_path)
    loads: list[object] = []
    real_load = torch.load

    def spy(f, *args, **kwargs):
        loads.append(f)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    before = snapshot(tmp_path)
    assert run_cli(command) == 1
    one_error_line(capsys.readouterr().err, fragment)
    # nothing parsed the file: the black-box case parsed only its (verified) target before refusing the source
    assert len(loads) == (1 if "--attack-source" in command else 0)
    assert snapshot(tmp_path) == before  # no record written
    with pytest.raises(pretrained.PretrainedError, match=re.escape(fragment)):
        anpvs.load_pretrained("tiny/standard")


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m["models"][0].update(file="../outside.pt"), "not a relative .pt path inside the folder"),
    (lambda m: m["models"][0].update(file="/etc/passwd"), "not a relative .pt path inside the folder"),
    (lambda m: m["models"][0].update(sha256="0" * 63), "has no SHA-256"),
    (lambda m: m["models"].append(copy.deepcopy(m["models"][0])), "lists tiny/anp_vs twice"),
    (lambda m: m["models"][0].update(name="Mnist/x y"), "has no valid name"),
    (lambda m: m.update(format="something-else"), "is not a format_version 1"),
    (lambda m: m["models"][0]["check"].update(pgd_acc=101.0), "tiny/anp_vs check has no pgd_acc, an accuracy in"),
    (lambda m: m["models"][1]["check"].update(test_limit=0), "tiny/standard check has no test_limit"),
    (lambda m: m["models"][0]["check"].update(dataset="/data/x"), "check names no dataset"),
    (lambda m: m["models"][0].update(check=[1, 2]), "check is not a mapping"),
], ids=["dotdot", "absolute", "short-sha", "twice", "bad-name", "format", "check-acc", "check-limit",
        "check-dataset", "check-list"])
def test_a_bad_manifest_is_one_line(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], edit, fragment: str) -> None:
    registry = _tampered(built, tmp_path, lambda p: None)
    data = yaml.safe_load((registry / pretrained.MANIFEST).read_text())
    edit(data)
    (registry / pretrained.MANIFEST).write_text(yaml.safe_dump(data))
    monkeypatch.setenv(pretrained.ENV, str(registry))
    assert run_cli(["pretrained"]) == 1
    one_error_line(capsys.readouterr().err, fragment)


def test_a_link_out_of_the_registry_is_refused(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "elsewhere.pt"
    registry = _tampered(built, tmp_path, lambda p: (shutil.move(p, outside), p.symlink_to(outside)))
    monkeypatch.setenv(pretrained.ENV, str(registry))
    assert run_cli(["eval", "pretrained:tiny/standard", *EVAL]) == 1
    one_error_line(capsys.readouterr().err, "leads outside")


def test_the_cli_still_imports_no_torch_and_the_api_is_lazy() -> None:
    code = ("import sys, anpvs, anpvs.cli\n"
            "assert 'load_pretrained' in anpvs.__all__\n"
            "print(','.join(m for m in ('torch', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_commands_name_no_machine_data_folder(built: Built, tmp_path: Path) -> None:
    """A run trained from ``--data-dir`` and ``--init`` of its machine: the manifest's command names
    ``~/data/DATASET`` and the init run's last folders instead (committed files carry no machine paths)."""
    config = yaml.safe_load(RunDir(built.standard).config.read_text())
    config["data"]["dir"] = str(tmp_path / "datasets" / "mnist-idx")
    config["init"] = str(tmp_path / "results" / "runs" / "standard" / "seed0" / "checkpoint.pt")  # not shipped
    argv = shlex.split(make_pretrained.train_command(config, "tiny/standard", {}))
    assert str(tmp_path) not in " ".join(argv)
    assert argv[argv.index("--data-dir") + 1] == f"~/data/{config['data']['name']}"
    assert argv[argv.index("--init") + 1] == "runs/standard/seed0/checkpoint.pt"


def _strings(obj) -> list[str]:
    """Every string in a checkpoint dict but its tensors."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings(v)]
    return []


#: an absolute path of a POSIX or Windows machine inside a string
MACHINE_PATH = re.compile(r"(^|[\s'\"(=])(/[A-Za-z_.]|[A-Za-z]:\\)")


def test_the_builder_ships_files_without_the_machines_paths(built: Built) -> None:
    """The shipped copy names its folders as the manifest's command does (``runs/NAME``), its compacted twin's
    source is ``pretrained:NAME`` with the shipped file's SHA-256, and the weights are the run's, unchanged."""
    entries = manifest(built)
    for name, run in (("tiny/standard", built.standard), ("tiny/anp_vs", built.anp_vs)):
        ckpt = torch.load(built.registry / entries[name]["file"], weights_only=True)
        assert not [s for s in _strings(ckpt) if MACHINE_PATH.search(s) or str(built.registry.parent) in s]
        assert ckpt["config"]["out"] == f"runs/{name}"
        run_ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        assert all(torch.equal(v, run_ckpt["state_dict"][k]) for k, v in ckpt["state_dict"].items())
    assert ckpt["config"]["init"] == "runs/tiny/standard/checkpoint.pt"  # the registry's other model
    twin = torch.load(built.registry / entries["tiny/anp_vs"]["compact"]["file"], weights_only=True)
    assert not [s for s in _strings(twin) if MACHINE_PATH.search(s) or str(built.registry.parent) in s]
    assert twin["compact"]["source"] == "pretrained:tiny/anp_vs"
    assert twin["compact"]["source_sha256"] == entries["tiny/anp_vs"]["sha256"]


def test_a_shipped_copy_names_the_data_folder_as_the_readme_does(tmp_path: Path) -> None:
    folder = tmp_path / "datasets" / "mnist-idx"
    ckpt = {"state_dict": {}, "optimizer": {"lr": 1.0}, "data": {"source": f"{folder} (IDX files)"},
            "config": {"out": str(tmp_path / "runs" / "at"), "init": None,
                       "data": {"name": "mnist", "dir": str(folder)}}}
    shipped = make_pretrained.portable(ckpt, "mnist/at", None)
    assert "optimizer" not in shipped  # no training state
    assert shipped["config"] == {"out": "runs/mnist/at", "init": None, "data": {"name": "mnist", "dir": "~/data/mnist"}}
    assert shipped["data"]["source"] == "~/data/mnist (IDX files)"
    assert ckpt["config"]["data"]["dir"] == str(folder)  # the run's own checkpoint dict is left as it was


def test_the_package_ships_no_machine_paths_in_its_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pretrained.ENV, raising=False)
    for m in pretrained.read_manifest(pretrained.registry_dir()):
        for f in filter(None, (m.weights, m.compact)):
            ckpt = torch.load(pretrained.registry_dir() / f.file, weights_only=True)
            assert not [s for s in _strings(ckpt) if MACHINE_PATH.search(s)], f.file
        if m.compact is not None:
            twin = torch.load(pretrained.registry_dir() / m.compact.file, weights_only=True)
            assert twin["compact"]["source"] == f"pretrained:{m.name}"
            assert twin["compact"]["source_sha256"] == m.weights.sha256
