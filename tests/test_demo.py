"""``anpvs demo`` and the bundled MNIST test digits it evaluates on.

Part 1 (the pretrained MNIST AT and ANP-VS models on the 2,000 bundled real MNIST test digits) runs on a tiny
registry built in a temporary folder that ``$ANPVS_PRETRAINED_DIR`` points at (two LeNet5-Caffe checkpoints
trained for a few steps, as tests/test_pretrained.py builds its registry); without models it prints one line
and part 2 (the smoke test of training) still runs. ``anpvs eval --dataset mnist_test_sample`` evaluates any
MNIST checkpoint on those digits, and refuses a dataset whose images or classes are not the model's.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from _toys import run_cli

import anpvs
from anpvs.data import load_dataset
from anpvs.io import pretrained
from anpvs.jobs import demo as runner  # the module of anpvs demo

pytestmark = pytest.mark.usefixtures("fake_git")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(anpvs.__file__).resolve().parent / "_data"
#: a few training steps on a handful of bundled digits
TINY = ["--dataset", "mnist_sample", "--train-limit", "64", "--test-limit", "16", "--pgd-steps", "1",
        "--batch-size", "32", "--epochs", "1", "--device", "cpu", "--quiet", "--set", "train.lr_milestones=[]"]
EVAL = ["--test-limit", "16", "--steps", "1", "--no-latency", "--device", "cpu", "--quiet"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny runs: AT, and ANP-VS from it cut to fixed unit counts (so it has a compacted twin), evaluated."""
    tmp = tmp_path_factory.mktemp("demo_runs")
    at, anp = tmp / "at", tmp / "anp_vs"
    assert run_cli(["train", *TINY, "--method", "at", "--out", str(at)]) == 0
    assert run_cli(["train", *TINY, "--method", "anp_vs", "--init", str(at / "checkpoint.pt"),
                    "--set", "method.target_units=[10,25,300,200]", "--set", "method.target_epoch=1",
                    "--out", str(anp)]) == 0
    for run in (at, anp):
        assert run_cli(["eval", str(run / "checkpoint.pt"), *EVAL]) == 0
    return {"at": at, "anp_vs": anp}


@pytest.fixture(scope="module")
def registry(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained registry holding the two tiny runs under the names part 1 looks for."""
    folder = tmp_path_factory.mktemp("registry")
    _script("make_pretrained").build([("mnist/at", runs["at"]), ("mnist/anp_vs", runs["anp_vs"])], folder,
                                    check_limit=16)
    return folder


@pytest.fixture()
def empty_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty registry as $ANPVS_PRETRAINED_DIR, so that the demo's part 1 is skipped whatever the installed
    package ships."""
    folder = tmp_path / "empty_registry"
    folder.mkdir()
    (folder / pretrained.MANIFEST).write_text("format: anpvs-pretrained\nformat_version: 1\nmodels: []\n")
    monkeypatch.setenv(pretrained.ENV, str(folder))
    return folder


def _rows(text: str) -> list[str]:
    return [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]


# --------------------------------------------------------------------------------------------------------
# The bundled MNIST test digits
# --------------------------------------------------------------------------------------------------------


def test_the_bundled_test_digits_are_2000_mnist_test_digits() -> None:
    with np.load(DATA / "mnist_test_sample.npz", allow_pickle=False) as z:
        x, y, idx = z["x_test"], z["y_test"], z["indices"]
        assert str(z["source"]).startswith("MNIST test files t10k-images-idx3-ubyte")
    assert x.dtype == np.uint8 and x.shape == (2000, 28, 28) and x.min() == 0 and x.max() == 255
    assert y.shape == (2000,) and set(np.unique(y)) == set(range(10))
    assert np.bincount(y).tolist() == [200] * 10
    # positions in MNIST's test file (10,000 digits), each taken once, in file order
    assert idx.shape == (2000,) and idx.min() >= 0 and idx.max() <= 9999
    assert np.all(np.diff(idx) > 0)
    assert (DATA / "mnist_test_sample.npz").stat().st_size < 500_000
    # none of them is one of the 5,000 MNIST *training* digits of mnist_sample
    with np.load(DATA / "mnist_sample.npz") as z:
        seen = {d.tobytes() for d in np.concatenate([z["x_train"], z["x_test"]])}
    assert not any(d.tobytes() in seen for d in x)


def test_mnist_test_sample_tests_on_them_and_trains_on_the_sample() -> None:
    data = load_dataset("mnist_test_sample")
    sample = load_dataset("mnist_sample")
    with np.load(DATA / "mnist_test_sample.npz", allow_pickle=False) as z:
        assert np.array_equal(data.test.images[:, 0].numpy(), z["x_test"])
        assert np.array_equal(data.test.labels.numpy(), z["y_test"])
    assert (data.name, data.num_classes, data.input_shape) == ("mnist_test_sample", 10, (1, 28, 28))
    assert np.array_equal(data.train.images.numpy(), sample.train.images.numpy())
    assert "MNIST test digits" in data.source
    sub = load_dataset("mnist_test_sample", test_limit=200)  # the demo's AutoAttack subset: class-stratified
    assert sub.test.class_counts(10).tolist() == [20] * 10


def test_the_script_rebuilds_the_digits_from_idx_files(tmp_path: Path) -> None:
    from conftest import _write_idx

    make = _script("make_mnist_test_sample")
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(10_000, 28, 28), dtype=np.uint8)
    labels = (np.arange(10_000) % 10).astype(np.uint8)
    rng.shuffle(labels)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert make.main([str(tmp_path), "--out", str(a), "--per-class", "20"]) == 0
    make.main([str(tmp_path), "--out", str(b), "--per-class", "20"])
    assert a.read_bytes() == b.read_bytes()  # reproducible
    with np.load(a, allow_pickle=False) as z:
        idx = z["indices"]
        assert np.array_equal(z["x_test"], images[idx]) and np.array_equal(z["y_test"], labels[idx])
        assert np.bincount(z["y_test"]).tolist() == [20] * 10 and np.all(np.diff(idx) > 0)


# --------------------------------------------------------------------------------------------------------
# anpvs eval --dataset
# --------------------------------------------------------------------------------------------------------


def test_eval_takes_the_bundled_test_digits(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run = runs["at"]
    own = (run / "eval.json").read_bytes()
    assert run_cli(["eval", str(run / "checkpoint.pt"), "--dataset", "mnist-test-sample", *EVAL]) == 0
    assert "on mnist_test_sample (16 test images" in capsys.readouterr().out
    rec = json.loads((run / "eval_mnist_test_sample.json").read_text())
    assert rec["dataset"] == "mnist_test_sample" and rec["metrics"]["n"] == 16
    assert "MNIST test digits" in rec["data_source"]
    assert (run / "eval.json").read_bytes() == own  # the run's own record is kept


def test_check_takes_the_bundled_test_digits(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # anpvs check --dataset, as anpvs eval --dataset: the eps sweep on the bundled test digits, its own record
    run = runs["at"]
    assert run_cli(["check", str(run / "checkpoint.pt"), "--dataset", "mnist_test_sample", "--test-limit", "16",
                    "--eps-sweep", "0,0.3", "--steps", "2", "--device", "cpu", "--quiet"]) == 0
    assert "on mnist_test_sample (16 test images" in capsys.readouterr().out
    rec = json.loads((run / "check_mnist_test_sample.json").read_text())
    assert rec["dataset"] == "mnist_test_sample" and rec["metrics"]["n"] == 16
    assert not (run / "check.json").exists()  # the run's own record is another file


def _imagefolder(root: Path, mode: str, side: int, classes: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            shape = (side, side) if mode == "L" else (side, side, 3)
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(root / split / f"c{c}/0.png")
    return root


@pytest.mark.parametrize(("mode", "side", "classes", "fragment"), [
    ("L", 28, 3, "with 10 classes; imagefolder has 3"),
    ("RGB", 32, 10, "images of shape (1, 28, 28); imagefolder has images of shape (3, 32, 32)"),
])
def test_eval_refuses_a_dataset_that_is_not_the_models(runs: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str], mode: str, side: int,
                                                       classes: int, fragment: str) -> None:
    folder = _imagefolder(tmp_path / "images", mode, side, classes)
    assert run_cli(["eval", str(runs["at"] / "checkpoint.pt"), "--dataset", "imagefolder", "--data-dir", str(folder),
                    *EVAL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("anpvs: error:") and fragment in err[0], err


def test_eval_refuses_an_unknown_dataset_before_any_work(runs: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["eval", str(runs["at"] / "checkpoint.pt"), "--dataset", "mnist_test", *EVAL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anpvs: error: unknown dataset 'mnist_test'") and "mnist_test_sample" in err
    assert not (runs["at"] / "eval_mnist_test.json").exists()


# --------------------------------------------------------------------------------------------------------
# anpvs demo, part 1: the pretrained models
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_autoattack", [True, False])
def test_part_1_evaluates_the_pretrained_models_on_the_bundled_test_digits(
        registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        with_autoattack: bool) -> None:
    if with_autoattack:
        pytest.importorskip("pyautoattack")
    else:
        monkeypatch.setattr(runner, "_have_autoattack", lambda: False)
    monkeypatch.setenv(pretrained.ENV, str(registry))
    # the demo's evaluation on a few of the digits: same rows, same code path, seconds instead of minutes
    monkeypatch.setattr(runner, "PRETRAINED_TEST_LIMIT", 20)
    monkeypatch.setattr(runner, "PRETRAINED_AA_IMAGES", 10)
    monkeypatch.setattr(runner, "PRETRAINED_PGD", {**runner.PRETRAINED_PGD, "steps": 2, "step_size": 0.15})
    out = tmp_path / "demo"
    assert run_cli(["demo", "--skip-training", "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "## Part 1: pretrained models on real MNIST test digits" in text
    assert "Pretrained comparison skipped" not in text
    header = next(line for line in text.splitlines() if line.startswith("| Model"))
    assert "| FLOPs (x) | Measured speed-up (x) |" in header
    assert ("AutoAttack acc, 10 digits (%)" in header) == with_autoattack
    assert _rows(text)[1:] == ["AT", "ANP-VS"]
    assert "pretrained:mnist/at" in text and "pretrained:mnist/anp_vs" in text
    assert "Part 2 (the smoke test of training) skipped: --skip-training." in text
    rows = json.loads((out / "pretrained.json").read_text())
    assert list(rows) == ["AT", "ANP-VS"]
    for label, name in runner.PRETRAINED_ROWS:
        rec = json.loads((out / "pretrained" / name / "eval.json").read_text())
        assert rec["checkpoint"] == f"pretrained:{name}" and rec["dataset"] == "mnist_test_sample"
        assert rec["metrics"]["n"] == 20 and "MNIST test digits" in rec["data_source"]
        assert (rec["attack"]["eps"], rec["attack"]["steps"]) == (0.3, 2)
        (m,) = rows[label]
        assert m["clean_acc"] == rec["metrics"]["clean_acc"] and m["wallclock_speedup_b256"] > 0
        if with_autoattack:
            aa = json.loads((out / "pretrained" / name / "eval_autoattack.json").read_text())
            assert aa["metrics"]["n"] == 10 and aa["dataset"] == "mnist_test_sample"
            assert m["autoattack_acc"] <= m["aa_pgd_acc"]
    assert rows["ANP-VS"][0]["unit_sparsity"] > 0 and rows["AT"][0]["unit_sparsity"] == 0
    assert not (out / "table.json").exists() and not (out / "at").exists()  # nothing trained


def test_a_registry_with_one_of_the_models_shows_it_and_names_the_other(
        runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "registry"
    _script("make_pretrained").build([("mnist/at", runs["at"])], folder, check_limit=16)
    monkeypatch.setenv(pretrained.ENV, str(folder))
    monkeypatch.setattr(runner, "PRETRAINED_TEST_LIMIT", 10)
    monkeypatch.setattr(runner, "PRETRAINED_PGD", {**runner.PRETRAINED_PGD, "steps": 1})
    text, rows = runner.pretrained_part(tmp_path / "demo", device="cpu", progress=False, autoattack=False)
    assert list(rows) == ["AT"] and "Not in the registry, so not shown: mnist/anp_vs." in text


# --------------------------------------------------------------------------------------------------------
# anpvs demo without pretrained models: the skip line, then part 2
# --------------------------------------------------------------------------------------------------------


def test_the_package_ships_the_models_that_part_1_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    # the README's first table is part 1's: the installed registry must hold both models, each with its compacted
    # twin where it is pruned, and their records' full test-set figures
    monkeypatch.delenv(pretrained.ENV, raising=False)
    entries = {m.name: m for m in pretrained.read_manifest()}
    for _, name in runner.PRETRAINED_ROWS:
        assert name in entries, f"{name} is not shipped"
        assert entries[name].info["metrics"]["n"] == 10000
    anp_vs = entries["mnist/anp_vs"]
    assert anp_vs.compact is not None and anp_vs.compact.file == "mnist/anp_vs.compact.pt"
    assert anp_vs.info["metrics"]["unit_sparsity"] > 50


def test_the_skip_line_says_why_and_how_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pretrained.ENV, raising=False)
    line = runner.skip_line()
    assert "\n" not in line
    assert "no pretrained MNIST models are installed in this version of anpvs (mnist/at, mnist/anp_vs)" in line
    assert "scripts/make_pretrained.py" in line and "README, Pretrained models" in line


def test_without_models_part_1_is_one_line_and_part_2_runs(empty_registry: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_have_autoattack", lambda: False)
    # part 2's recipe on a few digits (as the test below)
    monkeypatch.setattr(runner, "DEMO_COMMON", {**runner.DEMO_COMMON, "data.train_limit": 64, "data.test_limit": 24,
                                                "train.batch_size": 32, "eval.steps": 2, "eval.step_size": 0.15})
    text = runner.run_demo(tmp_path, epochs_scale=0.1, device="cpu", progress=False)
    part1, part2 = text.split("## Part 2: smoke test of training, pruning and compaction (not results)")
    assert [ln for ln in part1.splitlines() if ln.strip()] == [
        "## Part 1: pretrained models on real MNIST test digits",
        f"Pretrained comparison skipped: the pretrained-model registry {pretrained.ENV}={str(empty_registry)!r} "
        f"holds none of them (mnist/at, mnist/anp_vs). Build them from finished full-data runs with "
        f"{pretrained.BUILD}."]
    assert _rows(part2)[1:] == ["Standard", "ANP-VS"]
    assert "these numbers are not the method's results" in part2 and "docs/results/mnist_full" in part2
    assert not (tmp_path / "pretrained.json").exists() and (tmp_path / "table.md").read_text() in text


# --------------------------------------------------------------------------------------------------------
# Part 2, the smoke test (moved from tests/test_cli.py; an empty registry keeps part 1 out of it)
# --------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("empty_registry")
def test_the_smoke_test_trains_prunes_and_compacts_and_attacks_with_pgd_only(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from anpvs.jobs import demo as runner  # the module of anpvs demo

    # the demo's recipe on a few digits: same rows, same code path, seconds instead of minutes
    monkeypatch.setattr(runner, "DEMO_COMMON", {**runner.DEMO_COMMON, "data.train_limit": 64, "data.test_limit": 24,
                                                "train.batch_size": 32, "eval.steps": 2, "eval.step_size": 0.15})
    text = runner.run_demo(tmp_path, epochs_scale=0.1, device="cpu", progress=False)
    part2 = text.split("## Part 2: smoke test of training, pruning and compaction (not results)")[1]
    header = next(line for line in part2.splitlines() if line.startswith("| Model"))
    assert "| FLOPs (x) | Measured speed-up (x) |" in header and "AutoAttack" not in header
    assert _rows(part2)[1:] == ["Standard", "ANP-VS"]
    assert "ANP-VS from the Standard model" in part2 and "under PGD-40 and AutoAttack: part 1" in part2
    rows = json.loads((tmp_path / "table.json").read_text())
    for label, (m,) in rows.items():
        assert m["wallclock_speedup_b256"] > 0 and m["compact_params"] > 0, label
        assert "autoattack_acc" not in m, label
    # ANP-VS started from the Standard run, and no run of part 2 wrote an AutoAttack record (part 1 has them)
    assert str(tmp_path / "standard" / "checkpoint.pt") in (tmp_path / "anp_vs" / "config.yaml").read_text()
    assert not list(tmp_path.rglob("eval_autoattack.json"))


def test_the_package_data_takes_the_digits() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["anpvs"]
    assert any(fnmatch.fnmatch("_data/mnist_test_sample.npz", p) for p in patterns), patterns


