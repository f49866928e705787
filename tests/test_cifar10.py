"""CIFAR-10 on real-image layouts and at CPU scale: the JPEG class-folder reader (archive and extracted folder, label
order, the .npy cache, hostile members), VGG-16's width multiplier through the efficiency metrics and compaction,
and the reproduction protocol's run order and second AutoAttack radius."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from anpvs.core.errors import DataError
from anpvs.data import load_dataset
from anpvs.data.formats import cifar_jpeg
from anpvs.jobs.reproduce import ProtocolError, load_protocol, plan, protocol_path
from anpvs.metrics.efficiency import efficiency_report, measured_flops
from anpvs.models import create_model

CLASSES = cifar_jpeg.CLASSES


def _jpeg(rng: np.random.Generator, label: int, size: int = 32, mode: str = "RGB") -> bytes:
    from PIL import Image

    base = np.full((size, size, 3), 20 * label + 30, dtype=np.uint8)  # a class-coloured image with noise
    img = np.clip(base.astype(int) + rng.integers(-10, 10, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(img).convert(mode).save(out, format="JPEG", quality=95)
    return out.getvalue()


def _files(n_train: int = 3, n_test: int = 2, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {f"{split}/{c}/{i:04d}.jpg": _jpeg(rng, k) for split, n in (("train", n_train), ("test", n_test))
            for k, c in enumerate(CLASSES) for i in range(n)}


def write_archive(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(files.items(), reverse=True):  # out of order on purpose
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return path


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own decoded-array cache and an empty in-process memo."""
    monkeypatch.setenv(cifar_jpeg.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(cifar_jpeg, "_MEMO", {})
    return tmp_path / "cache"


# ------------------------------------------------------------------------------------------- JPEG layout


def test_archive_reads_in_label_order_with_the_original_indices(tmp_path: Path) -> None:
    write_archive(tmp_path / "d" / "cifar10_jpeg.tar.gz", _files())
    d = load_dataset("cifar10", tmp_path / "d")
    assert d.num_classes == 10 and d.classes == CLASSES and d.input_shape == (3, 32, 32)
    assert len(d.train) == 30 and len(d.test) == 20
    assert d.train.labels.tolist() == [k for k in range(10) for _ in range(3)]  # airplane=0 ... truck=9
    # each class's images carry its colour, so the labels really follow the folders
    means = d.train.images.float().mean((1, 2, 3)).view(10, 3).mean(1)
    assert torch.allclose(means, torch.tensor([20.0 * k + 30 for k in range(10)]), atol=3)
    assert "JPEG" in d.source and "not the original python batches" in d.source


def test_archive_path_subfolder_and_extracted_folder_give_the_same_arrays(tmp_path: Path) -> None:
    files = _files()
    archive = write_archive(tmp_path / "a" / "cifar10-jpeg" / "cifar10_jpeg.tar.gz", files)
    folder = write_folder(tmp_path / "f", files)
    by_root = load_dataset("cifar10", tmp_path / "a")
    by_file = load_dataset("cifar10", archive)
    by_folder = load_dataset("cifar10", folder)
    for d in (by_file, by_folder):
        assert torch.equal(d.train.images, by_root.train.images) and torch.equal(d.test.labels, by_root.test.labels)


def test_decoded_once_per_process_then_read_from_the_npy_cache(tmp_path: Path, _private_cache: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    write_archive(tmp_path / "d" / "cifar10_jpeg.tar.gz", _files())
    first = load_dataset("cifar10", tmp_path / "d")
    cached = sorted(p.name for p in _private_cache.rglob("*") if p.is_file())
    assert cached == ["meta.json", "x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy"]

    def no_decode(*_):
        raise AssertionError("decoded twice")

    monkeypatch.setattr(cifar_jpeg, "_decode_archive", no_decode)
    again = load_dataset("cifar10", tmp_path / "d")  # the in-process memo
    monkeypatch.setattr(cifar_jpeg, "_MEMO", {})
    from_disk = load_dataset("cifar10", tmp_path / "d")  # a new process: the .npy cache, no decoding
    for d in (again, from_disk):
        assert torch.equal(d.train.images, first.train.images) and torch.equal(d.test.labels, first.test.labels)
    # the cache holds plain arrays: a pickled object array in its place is ignored and rebuilt, never unpickled
    x = next(_private_cache.rglob("x_train.npy"))
    np.save(x, np.array([object()], dtype=object), allow_pickle=True)
    monkeypatch.setattr(cifar_jpeg, "_MEMO", {})
    with pytest.raises(AssertionError, match="decoded twice"):
        load_dataset("cifar10", tmp_path / "d")


def test_a_changed_archive_is_decoded_again(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "d" / "cifar10_jpeg.tar.gz", _files(seed=0))
    a = load_dataset("cifar10", tmp_path / "d")
    write_archive(path, _files(seed=1))
    b = load_dataset("cifar10", tmp_path / "d")
    assert not torch.equal(a.train.images, b.train.images)


@pytest.mark.parametrize("problem, match", [
    ("big", "not a 32x32"),
    ("gray", "mode L, not RGB"),
    ("symlink", "not a regular file"),
    ("notjpeg", "cannot decode"),
    ("noclass", "no test images of class"),
])
def test_bad_members_are_one_line_errors_naming_the_file(tmp_path: Path, problem: str, match: str) -> None:
    files = _files()
    rng = np.random.default_rng(0)
    extra = []
    if problem == "big":
        files["train/cat/0000.jpg"] = _jpeg(rng, 3, size=64)
    elif problem == "gray":
        files["train/cat/0000.jpg"] = _jpeg(rng, 3, mode="L")
    elif problem == "symlink":
        link = tarfile.TarInfo("train/cat/9999.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        extra.append(link)
    elif problem == "notjpeg":
        files["train/cat/0000.jpg"] = b"not a jpeg at all"
    else:
        files = {k: v for k, v in files.items() if not k.startswith("test/truck/")}
    write_archive(tmp_path / "d" / "cifar10_jpeg.tar.gz", files, extra)
    with pytest.raises(DataError, match=match) as exc:
        load_dataset("cifar10", tmp_path / "d")
    assert "\n" not in str(exc.value)
    if problem != "noclass":
        assert "train/cat/" in str(exc.value)


def test_symlink_in_an_extracted_folder_is_refused(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "f", _files())
    (folder / "train" / "cat" / "9999.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    with pytest.raises(DataError, match="not a regular file"):
        load_dataset("cifar10", folder)


def test_missing_data_names_both_layouts(tmp_path: Path) -> None:
    from anpvs.data.base import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py.*JPEG layout"):
        load_dataset("cifar10", tmp_path)


# ------------------------------------------------------------------------------------------- VGG-16 width


def test_vgg16_width_scales_every_layer_and_the_efficiency_columns() -> None:
    m = create_model("vgg16_bbd", width=0.25)
    assert m.unit_widths == (16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128, 128, 128)
    assert [c.out_channels for c in m.convs] == list(m.unit_widths[:13]) and m.dense14.out_features == 128
    full = list(m.unit_widths)
    rep = efficiency_report("vgg16", full, full=full)
    assert rep["flops_speedup"] == 1.0 and rep["unit_sparsity"] == 0.0 and rep["units_total"] == sum(full)
    # the analytic count of the narrow network equals the paper's formula applied to its widths
    paper = efficiency_report("vgg16", [64] * 2 + [128] * 2 + [256] * 3 + [512] * 8)
    assert rep["flops_orig"] < paper["flops_orig"] / 14
    half = [max(1, u // 2) for u in full]
    pruned = efficiency_report("vgg16", half, full=full)
    assert pruned["unit_sparsity"] == pytest.approx(50.0, abs=0.5) and 3 < pruned["flops_speedup"] < 4.2
    with pytest.raises(ValueError, match="outside"):
        efficiency_report("vgg16", [u + 1 for u in full], full=full)
    with pytest.raises(ValueError, match="width"):
        create_model("vgg16", width=0.0)


def test_vgg16_dropout_scale_changes_training_mode_only() -> None:
    from anpvs.models.vgg16 import AFTER_BLOCK

    torch.manual_seed(0)
    paper, none = create_model("vgg16", width=0.25), create_model("vgg16", width=0.25, dropout_scale=0.0)
    none.load_state_dict(paper.state_dict())
    assert paper.after_block == AFTER_BLOCK and paper.head_dropout == 0.5
    assert all(a == "M" or a == 0 for a in none.after_block) and none.head_dropout == 0
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(paper.eval()(x), none.eval()(x))  # the test-time function is the same network
    torch.manual_seed(1)
    a = none.train()(x)
    torch.manual_seed(2)
    assert torch.equal(a, none(x))  # no dropout: training mode is deterministic
    with pytest.raises(ValueError, match="dropout_scale"):
        create_model("vgg16_bbd", dropout_scale=-1.0)


def test_narrow_vgg16_compacts_to_the_same_logits_and_counted_flops() -> None:
    from anpvs.models.compact import compact
    from anpvs.models.masks import active_units

    torch.manual_seed(0)
    m = create_model("vgg16_bbd", width=0.25).eval()
    with torch.no_grad():
        for i, mask in enumerate(m.masks):  # prune the first half of every conv mask
            mask.a_uc[: mask.a_uc.numel() // 2] = -20.0 if i % 2 else mask.a_uc[0]
        for bn in m.bns:
            bn.running_mean.uniform_(-0.5, 0.5)
    net = compact(m)
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(net(x), m(x), atol=1e-4)
    units = active_units(m)
    rep = efficiency_report("vgg16", units, full=list(m.unit_widths))
    # the analytic FLOPs and FlopCounterMode agree up to the bias/activation/pool terms (< 2 %)
    assert measured_flops(net, (3, 32, 32)) == pytest.approx(rep["flops"], rel=0.02)


# ------------------------------------------------------------------------------------------- the protocol


def test_cifar10_full_protocol_trains_in_its_run_order_and_shows_the_paper_order(tmp_path: Path) -> None:
    proto = load_protocol(protocol_path("cifar10", "full"))
    jobs, shown, skipped = plan(proto, seeds=[0], out=tmp_path, device="cpu")
    assert not skipped and shown[:3] == ["standard", "bp", "at"]
    assert [j.name for j in jobs][:7] == ["pretrain.standard_source", "source", "standard/seed0", "at/seed0",
                                          "anp_vs_sum/seed0", "anp_vs/seed0", "trades/seed0"]
    by = {j.name: j.cfg for j in jobs}
    assert all(c.model.width == 0.25 and c.model.dropout_scale == 0 and c.data.name == "cifar10"
               and c.attack.eps == 0.03 for c in by.values())
    # every adversarial row starts from the Standard model of its seed, the source from its own Standard model
    assert by["at/seed0"].init == by["anp_vs/seed0"].init == str(tmp_path / "runs/standard/seed0/checkpoint.pt")
    assert by["source"].init == str(tmp_path / "runs/pretrain/standard_source/checkpoint.pt")
    assert by["anp_vs_sum/seed0"].method.vs_reduction == "sum" and by["anp_vs/seed0"].method.vs_reduction == "mean"
    assert proto["autoattack"]["extra"] == {"eps": pytest.approx(8 / 255), "rows": ["at", "anp_vs", "anp_vs_sum"]}


@pytest.mark.parametrize("text, match", [
    ("run_order: [nope]", "run_order: nope"),
    ("run_order: [at, at]", "listed twice"),
    ("autoattack: {test_limit: 10, extra: {eps: 2, rows: [at]}}", "extra.eps"),
    ("autoattack: {test_limit: 10, extra: {eps: 0.03, rows: [nope]}}", "nope not rows"),
])
def test_run_order_and_extra_autoattack_are_checked(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("table: cifar10\nsource: {seed: 1}\nrows: {standard: {}, at: {}}\n" + text + "\n")
    with pytest.raises(ProtocolError, match=match):
        load_protocol(p)
    p.write_text("table: cifar10\nsource: {seed: 1}\nrows: {standard: {}, at: {}}\nrun_order: [at]\n")
    jobs, _, _ = plan(load_protocol(p), seeds=[0], out=tmp_path, device="cpu")
    assert [j.name for j in jobs] == ["source", "at/seed0", "standard/seed0"]


def test_paper_scale_cifar10_trains_on_cpu_at_tiny_scale(tmp_path: Path, fake_git: str) -> None:
    """--scale paper runs the paper's protocol unchanged: its configs build, and one epoch of its ANP-VS row
    (the full-width VGG-16, PGD-10, its masks) runs on a CPU when the data is cut to a few images."""
    from anpvs.training.loop import fit
    from anpvs.training.run_config import build_config

    del fake_git
    write_archive(tmp_path / "d" / "cifar10_jpeg.tar.gz", _files(n_train=2, n_test=1))
    proto = load_protocol(protocol_path("cifar10", "paper"))
    jobs, shown, _ = plan(proto, seeds=[0], out=tmp_path / "r", device="cpu", data_dir=str(tmp_path / "d"))
    cfg = {j.name: j.cfg for j in jobs}["anp_vs/seed0"]
    assert cfg.train.epochs == 200 and cfg.model.width is None and cfg.attack.steps == 10
    tiny = build_config({**{k: v for k, v in proto["common"].items()}, **proto["rows"]["anp_vs"]["overrides"],
                         "method.name": "anp_vs", "data.dir": str(tmp_path / "d"), "train.epochs": 1,
                         "data.train_limit": 8, "data.test_limit": 4, "train.batch_size": 4, "attack.steps": 1,
                         "out": str(tmp_path / "tiny"), "device": "cpu", "eval.latency": False})
    summary = fit(tiny, progress=False)
    assert summary["epoch"] == 1 and Path(summary["checkpoint"]).is_file()


# ------------------------------------------------------------------------------------------- benchmarks


def test_vgg16_benchmark_and_the_gpu_script_run_on_cpu_at_tiny_scale(tmp_path: Path, fake_git: str) -> None:
    """The GPU script (and the step benchmark it runs) work end to end on a CPU at toy scale, on JPEG data;
    anpvs's AT step reaches the textbook loop's weights exactly."""
    import json
    import sys

    del fake_git
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_cifar10

    write_archive(tmp_path / "d" / "cifar10_jpeg.tar.gz", _files(n_train=2, n_test=1))
    out = tmp_path / "gpu.json"
    gpu_cifar10.main(["--quick", "--device", "cpu", "--data-dir", str(tmp_path / "d"), "--out", str(out)])
    result = json.loads(out.read_text())
    cases = result["step_benchmark"]["cases"]
    assert cases["at_b8"]["max_weight_diff_after_2_steps_vs_textbook"] == 0.0
    assert cases["anp_vs_pruned"]["frac_adv_pixels_within_1e-5"] >= 0.5
    assert {"textbook", "anpvs", "anpvs_channels_last"} <= set(cases["at_b8"]["img_per_s"])
    methods = [e["method"] for e in result["short_epochs"]]
    assert methods[:3] == ["standard", "at", "anp_vs"] and all(e["img_per_s"] > 0 for e in result["short_epochs"])


def test_the_source_may_start_from_a_pre_training_run(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("table: cifar10\npretrain: {std_src: {seed: 7, method: standard}}\n"
                 "source: {seed: 7, init: pretrain.std_src}\nrows: {standard: {}, at: {init: standard}}\n")
    jobs, _, _ = plan(load_protocol(p), seeds=[0], out=tmp_path, device="cpu")
    assert [j.name for j in jobs] == ["pretrain.std_src", "source", "standard/seed0", "at/seed0"]
    src = jobs[1]
    assert src.deps == ["pretrain.std_src"] and src.cfg.init == str(tmp_path / "runs/pretrain/std_src/checkpoint.pt")
    p.write_text("table: cifar10\nsource: {seed: 7, init: pretrain.nope}\nrows: {standard: {}}\n")
    with pytest.raises(ProtocolError, match="source.init: no pre-training run"):
        load_protocol(p)
    p.write_text("table: cifar10\nsource: {seed: 7, init: standard}\nrows: {standard: {}}\n")
    with pytest.raises(ProtocolError, match="source.init must be pretrain"):
        load_protocol(p)
