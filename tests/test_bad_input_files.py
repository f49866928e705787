"""The bad-input corpus, part 2: hostile files (compacted checkpoints, exports, images), absurd numbers and
broken peers, each answered with one line; and the guards that are not errors (bf16 without bf16
instructions falls back to fp32, AutoAttack reports its stages, 16-bit images are scaled).

Every case of :data:`CASES` runs ``anpvs.cli.main`` in-process and asserts what ``tests/test_bad_input.py``
asserts of its cases: the exit status, exactly one line on stderr (progress bars aside) starting
``anpvs: error:`` and holding a fragment that names the problem, no traceback, no ``internal error``, every
file that existed before byte-identical after; and here also that PIL let no warning through.
docs/reliability.md lists the cases.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from _toys import run_cli
from test_bad_input import TINY, error_lines, snapshot, trained  # noqa: F401  (trained: a fixture)

from anpvs.models import create_model
from anpvs.models.checkpoint import make_checkpoint, make_compact_checkpoint, sha256_file
from anpvs.models.compact import compact

pytestmark = pytest.mark.usefixtures("fake_git")


# --------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compacted(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """``anpvs compact`` of the trained LeNet5-Caffe checkpoint (with latent maps); its source stays in place."""
    d = tmp_path_factory.mktemp("compacted")
    shutil.copy(trained, d / "checkpoint.pt")
    assert run_cli(["compact", str(d / "checkpoint.pt")]) == 0
    return d / "checkpoint.compact.pt"


def _edited(src: Path, dest: Path, edit: Callable[[dict], None]) -> Path:
    ckpt = torch.load(src, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dest)
    return dest


def _sd(**tensors: Callable[[dict], torch.Tensor | None]) -> Callable[[dict], None]:
    """An edit of the state dict: each value computes the new tensor from the state dict (None: remove it)."""
    def edit(ckpt: dict) -> None:
        sd = ckpt["state_dict"]
        for key, make in tensors.items():
            value = make(sd)
            if value is None:
                sd.pop(key.replace("__", "."))
            else:
                sd[key.replace("__", ".")] = value
    return edit


def _info(**entries) -> Callable[[dict], None]:
    return lambda ckpt: ckpt["compact"].update(entries)


def _eval_compact(edit: Callable[[dict], None], *extra: str):
    def make(t: Path, k: Path, c: Path) -> list[str]:
        return ["eval", str(_edited(c, t / "small.pt", edit)), "--device", "cpu", "--quiet", *extra]
    return make


def _wider_conv1(ckpt: dict) -> None:
    """conv1 with 40 channels where its source has 20 (conv2 made to fit, so only the bound can tell)."""
    sd = ckpt["state_dict"]
    sd["conv1.weight"], sd["conv1.bias"] = torch.zeros(40, 1, 5, 5), torch.zeros(40)
    sd["conv2.weight"] = torch.zeros(sd["conv2.weight"].shape[0], 40, 5, 5)


def _source_changed(t: Path, k: Path, c: Path) -> list[str]:
    """A compacted checkpoint whose source was retrained (here: rewritten) after compaction."""
    shutil.copy(k, t / "src.pt")
    assert run_cli(["compact", str(t / "src.pt")]) == 0
    _edited(t / "src.pt", t / "src.pt", lambda ckpt: ckpt.update(epoch=ckpt["epoch"] + 1))
    return ["eval", str(t / "src.compact.pt"), "--device", "cpu", "--quiet"]


def _vgg_huge_latent_map(t: Path, k: Path, c: Path) -> list[str]:
    """A compacted (tiny) VGG-16 whose first latent map claims a million units: eval would expand it to
    batch x 10**6 x 32 x 32 floats."""
    model = create_model("vgg16_bbd", width=1 / 64).eval()
    torch.save(make_checkpoint(model), t / "vgg.pt")
    ckpt = make_compact_checkpoint(compact(model, latents=True), make_checkpoint(model), source=t / "vgg.pt",
                                   source_sha256=sha256_file(t / "vgg.pt"))
    ckpt["state_dict"]["latent_maps.fill0"] = torch.zeros(10**6)
    torch.save(ckpt, t / "vgg.compact.pt")
    return ["eval", str(t / "vgg.compact.pt"), "--device", "cpu", "--quiet"]


def _vgg_source(t: Path, data: bool) -> Path:
    """A (tiny) VGG-16 checkpoint saved with default arguments (no num_classes in its model_kwargs)."""
    extra = {"data": {"name": "cifar10", "num_classes": 10, "input_shape": [3, 32, 32]}} if data else {}
    path = t / "vgg_source.pt"
    torch.save(make_checkpoint(create_model("vgg16", width=1 / 64), **extra), path)
    return path


def _overflowing(ckpt: dict) -> None:
    """Finite weights whose logits overflow to inf and NaN in float32."""
    for key, value in ckpt["state_dict"].items():
        if key.endswith("weight"):
            ckpt["state_dict"][key] = value * 1e30


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path, side: int) -> None:
    """A 60-byte PNG declaring a ``side`` x ``side`` 8-bit gray image (PIL warns above 89M pixels and refuses
    above 179M)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _chunk(b"IEND", b""))


def _images(t: Path, odd: Callable[[Path], None]) -> Path:
    """An ImageFolder of 8-bit gray 8x8 PNGs (2 classes, 2 images each per split), then ``odd(root)``."""
    from PIL import Image

    root = t / "images"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("L", (8, 8), 100 + i).save(root / split / c / f"{i}.png")
    odd(root)
    return root


def _save(rel: str, mode: str, color, info: dict | None = None) -> Callable[[Path], None]:
    def odd(root: Path) -> None:
        from PIL import Image

        im = Image.new(mode, (8, 8), color)
        im.info.update(info or {})
        im.save(root / rel)
    return odd


def _array(rel: str, a: np.ndarray) -> Callable[[Path], None]:
    def odd(root: Path) -> None:
        from PIL import Image

        Image.fromarray(a).save(root / rel)
    return odd


def _link(rel: str, target: str) -> Callable[[Path], None]:
    return lambda root: os.symlink(target, root / rel)


def _train_images(odd: Callable[[Path], None]):
    return lambda t, k, c: ["train", "--dataset", "imagefolder", "--data-dir", str(_images(t, odd)), "--eps", "0.1",
                            "--epochs", "1", "--pgd-steps", "1", "--device", "cpu", "--quiet", "--out", str(t / "run")]


def _train(*extra: str):
    return lambda t, k, c: ["train", *TINY, "--out", str(t / "run"), *extra]


# --------------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    argv: Callable[[Path, Path, Path], list[str]]  # (case folder, trained checkpoint, compacted one) -> arguments
    status: int
    fragment: str
    absent: str = ""  # a text the message must not contain


CASES: list[Case] = [
    # compacted checkpoints: the bounds and checks of plain ones, before anything is allocated
    Case("compact-huge-source-num-classes", _eval_compact(lambda c: c["compact"]["source_model_kwargs"].update(
        num_classes=10**7)), 1, "source model_kwargs num_classes=10000000 is outside 1..100000"),
    Case("compact-unknown-source-model", _eval_compact(_info(source_model_name="resnet9000")), 1,
         "unknown source model 'resnet9000'"),
    Case("compact-source-of-another-architecture", _eval_compact(_info(source_model_name="vgg16_bbd")), 1,
         "compacted lenet5_caffe but it names the source model 'vgg16_bbd'"),
    Case("compact-names-another-architecture", _eval_compact(lambda c: c.update(model_name="vgg16_compact")), 1,
         "names model 'vgg16_compact' but its weights are a compacted lenet5_caffe"),
    Case("plain-checkpoint-with-a-compact-entry", lambda t, k, c: [
        "eval", str(_edited(k, t / "ck.pt", lambda ck: ck.update(compact={}))), "--device", "cpu"], 1,
        "has a 'compact' entry"),
    Case("compact-huge-latent-map", _eval_compact(_sd(latent_maps__fill2=lambda sd: torch.zeros(10**6))), 1,
         "latent map 2 places 500 units in 1000000"),
    Case("compact-vgg-huge-latent-map", _vgg_huge_latent_map, 1, "latent map 0"),
    Case("compact-latent-index-out-of-range", _eval_compact(_sd(
        latent_maps__index2=lambda sd: sd["latent_maps.index2"] + 10_000)), 1, "latent_maps.index2 holds indices"),
    Case("compact-repeated-latent-index", _eval_compact(_sd(
        latent_maps__index0=lambda sd: torch.zeros(20, dtype=torch.long))), 1, "or repeated ones"),
    Case("compact-float-latent-index", _eval_compact(_sd(
        latent_maps__index0=lambda sd: sd["latent_maps.index0"].float())), 1, "int64 indices"),
    Case("compact-gather-index-out-of-range", _eval_compact(_sd(dense3_index=lambda sd: torch.arange(800) * 7)), 1,
         "dense3_index holds indices outside 0..799"),
    Case("compact-widths-that-do-not-chain", _eval_compact(_sd(dense3__weight=lambda sd: torch.zeros(500, 900))),
         1, "dense3 takes 900 inputs but conv2 gives 800"),
    Case("compact-wider-than-its-source", _eval_compact(_wider_conv1), 1, "conv1=40 (source 20)"),
    Case("compact-other-number-of-classes", _eval_compact(_sd(dense4__weight=lambda sd: torch.zeros(11, 500),
                                                               dense4__bias=lambda sd: torch.zeros(11))), 1,
         "predicts 11 classes, its source model 1 and 10"),
    Case("compact-missing-tensor", _eval_compact(_sd(latent_maps__fill1=lambda sd: None)), 1,
         "latent_maps.fill1 is missing"),
    Case("compact-unexpected-tensor", _eval_compact(_sd(extra__weight=lambda sd: torch.zeros(3))), 1,
         "do not fit a compacted lenet5_caffe"),
    Case("compact-bad-active-units", _eval_compact(_info(source_active_units=[10**9, 1, 1, 1])), 1,
         "source_active_units"),
    Case("compact-nan-bn-eps", _eval_compact(lambda c: c["model_kwargs"].update(bn_eps=float("nan"))), 1,
         "bn_eps=nan"),
    Case("compact-config-of-another-model", _eval_compact(lambda c: c["config"]["model"].update(name="vgg16")), 1,
         "its saved config trains model 'vgg16'"),
    Case("compact-source-changed-since", _source_changed, 1, "which has changed since"),
    Case("compact-tampered-as-attack-source", lambda t, k, c: [
        "eval", str(k), "--device", "cpu", "--quiet", "--attack-source",
        str(_edited(c, t / "small.pt", _sd(latent_maps__index2=lambda sd: sd["latent_maps.index2"] - 1000)))], 1,
        "latent_maps.index2 holds indices"),
    Case("compact-export-of-a-tampered-one", lambda t, k, c: [
        "compact", str(_edited(c, t / "small.compact.pt", _info(source_model_name="vgg16"))), "--export",
        "torchscript"], 1, "names the source model 'vgg16'"),
    # exports: the logit check fails on NaN and inf
    Case("export-nan-logits", lambda t, k, c: ["compact", str(_edited(k, t / "ck.pt", _overflowing)), "--export",
                                               "torchscript"], 1, "NaN or inf logits"),
    # images: modes, alpha, links, decompression bombs
    Case("png-rgba-transparent", _train_images(_save("train/a/x.png", "RGBA", (9, 9, 9, 100))), 1,
         "(mode RGBA) has transparent pixels"),
    Case("png-gray-alpha-transparent", _train_images(_save("test/b/x.png", "LA", (9, 0))), 1,
         "(mode LA) has transparent pixels"),
    Case("png-palette-transparent", _train_images(_save("train/b/x.png", "P", 0, {"transparency": 0})), 1,
         "(mode P) has transparent pixels"),
    Case("tiff-float-pixels", _train_images(_array("train/a/x.tif", np.zeros((8, 8), np.float32))), 1,
         "pixel mode F"),
    Case("tiff-32-bit-integer-pixels", _train_images(_array("train/a/x.tif", np.zeros((8, 8), np.int32))), 1,
         "pixel mode I"),
    Case("imagefolder-symlink-loop", _train_images(_link("train/a/loop", "..")), 1, "symbolic link loop"),
    Case("imagefolder-class-linked-into-test", _train_images(
        lambda r: os.symlink(r / "train" / "a", r / "test" / "a" / "more")), 1, "is the folder"),
    Case("png-decompression-bomb", _train_images(lambda r: _bomb_png(r / "train" / "a" / "bomb.png", 30_000)), 1,
         "bomb.png' declares more than"),
    Case("png-decompression-bomb-warning-size", _train_images(
        lambda r: _bomb_png(r / "test" / "a" / "bomb.png", 10_000)), 1, "decompression bomb"),
    # numbers that overflow later: bounded where they are read
    Case("set-lr-1e300", _train("--set", "train.lr=1e300"), 2, "train.lr: 1e+300 is out of range"),
    Case("lr-flag-1e300", _train("--lr", "1e300"), 2, "train.lr"),
    Case("set-weight-decay-huge", _train("--set", "train.weight_decay=1e40"), 2, "train.weight_decay"),
    Case("eval-step-size-1e300", lambda t, k, c: ["eval", str(k), "--step-size", "1e300", "--device", "cpu"], 2,
         "step_size=1e+300"),
    # a black-box source for other images: the input shape is named, not the classes
    Case("attack-source-vgg-on-mnist", lambda t, k, c: ["eval", str(k), "--attack-source", str(_vgg_source(t, True)),
                                                         "--device", "cpu", "--quiet"], 2,
         "shape (3, 32, 32), the target on (1, 28, 28)", absent="classes"),
    Case("attack-source-vgg-on-mnist-without-data-entry", lambda t, k, c: [
        "eval", str(k), "--attack-source", str(_vgg_source(t, False)), "--device", "cpu", "--quiet"], 2,
        "does not accept the target's test images of shape (1, 28, 28)", absent="classes"),
]


def _assert_one_line(argv: list[str], work: Path, status: int, fragment: str, absent: str,
                     capsys: pytest.CaptureFixture[str]) -> str:
    before = snapshot(work)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = run_cli(argv)
    out, err = capsys.readouterr()
    lines = error_lines(err)
    assert got == status, f"exit {got}, expected {status}; stderr:\n{err}"
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("anpvs: error: ") and "internal error" not in lines[0], lines[0]
    assert fragment in lines[0], lines[0]
    assert not absent or absent not in lines[0], lines[0]
    assert "Traceback" not in err + out
    pil = [str(w.message) for w in caught if "PIL" in w.filename or w.category.__module__.startswith("PIL")]
    assert not pil, f"PIL warnings leaked: {pil}"
    after = snapshot(work)
    changed = [p for p, data in before.items() if after.get(p) != data]
    assert not changed, f"files changed or removed: {changed}"
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_file_gives_one_line(case: Case, tmp_path: Path, trained: Path, compacted: Path,  # noqa: F811
                                 capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "case"
    work.mkdir()
    argv = case.argv(work, trained, compacted)
    _assert_one_line(argv, work, case.status, case.fragment, case.absent, capsys)


def test_the_corpus_has_a_case_of_every_kind() -> None:
    assert len({c.name for c in CASES}) == len(CASES) >= 35
    for kind in ("compact-", "export-", "png-", "imagefolder-", "tiff-", "lr-", "attack-source-"):
        assert any(kind in c.name for c in CASES), kind


def test_a_surviving_rank_names_the_dead_one_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Rank 0 of 2 whose peer died: gloo's own error (the text a real 2-process run gives) becomes one line."""
    import torch.distributed as dist

    from anpvs.core import distributed

    two = distributed.World(0, 2, 0)
    monkeypatch.setattr(distributed, "setup", lambda device: two)
    monkeypatch.setattr(distributed, "current", lambda: two)

    def all_reduce(t, *a, **k):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                           "[127.0.0.1]:20098. This is typically caused by a remote worker crashing.")

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    work = tmp_path / "case"
    work.mkdir()
    line = _assert_one_line(["train", *TINY, "--out", str(work / "run")], work, 1, "rank 0 of 2: another rank",
                            "", capsys)
    assert "Connection closed by peer" in line and "--resume" in line


def test_a_rank_lost_line_says_how_to_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    from anpvs.core import distributed

    monkeypatch.setattr(distributed, "current", lambda: distributed.World(1, 4, 1))

    def reset(*a, **k):
        raise RuntimeError("Connection reset by peer")

    monkeypatch.setattr(dist, "all_reduce", reset)
    with pytest.raises(distributed.RankLostError, match=r"rank 1 of 4: .*Connection reset by peer.*--resume"):
        distributed.all_reduce_sum(torch.zeros(1))

    def bug(*a, **k):
        raise RuntimeError("Tensors must be contiguous")

    monkeypatch.setattr(dist, "all_reduce", bug)  # not a peer's death: the error stays what it is
    with pytest.raises(RuntimeError, match="contiguous"):
        distributed.all_reduce_sum(torch.zeros(1))


# --------------------------------------------------------------------------------------------------------
# What is converted rather than refused
# --------------------------------------------------------------------------------------------------------


def _load(root: Path):
    from anpvs.data.formats.imagefolder import _load_imagefolder

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = _load_imagefolder(root, False)
    assert not caught, [str(w.message) for w in caught]
    return data


def test_16_bit_gray_is_scaled_not_clipped(tmp_path: Path) -> None:
    """40000 of 65535 is 155.6 of 255: the image used to come out all 255 (convert("L") clips)."""
    data = _load(_images(tmp_path, _array("train/a/x16.png", np.full((8, 8), 40000, np.uint16))))
    assert data.x_train.shape[1] == 1  # still a gray dataset
    assert sorted({int(img.max()) for img in data.x_train}) == [100, 101, 156]


def test_opaque_alpha_is_dropped_and_linked_class_folders_are_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"

    def odd(root: Path) -> None:
        from PIL import Image

        Image.new("RGBA", (8, 8), (10, 20, 30, 255)).save(root / "train" / "a" / "rgba.png")
        shutil.move(root / "test" / "b", elsewhere)
        os.symlink(elsewhere, root / "test" / "b")

    data = _load(_images(tmp_path, odd))
    assert data.x_train.shape[1] == 3 and len(data.x_test) == 4  # RGB (one colour image), the linked class read
    colour = [img for img in data.x_train if img[0, 0, 0] != img[2, 0, 0]]
    assert len(colour) == 1 and colour[0][:, 0, 0].tolist() == [10, 20, 30]


# --------------------------------------------------------------------------------------------------------
# bf16 on a CPU without bf16 instructions
# --------------------------------------------------------------------------------------------------------


def test_bf16_detection_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from anpvs.core import device as runtime

    def cpu(text: str):
        monkeypatch.setattr(runtime, "open", lambda *a, **k: io.StringIO(text), raising=False)
        return runtime.cpu_has_native_bf16.__wrapped__()

    assert not cpu("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    assert not cpu("flags\t\t: avx2 avx512f avx512bw avx512_vnni\n")  # AVX-512 without its bf16 extension
    assert cpu("flags\t\t: avx2 avx512f avx512_bf16\n")
    assert cpu("flags\t\t: avx2 amx_tile amx_bf16\n")
    assert cpu("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # AArch64 FEAT_BF16
    # oneDNN capped below its bf16 instruction sets emulates bf16 whatever the CPU has
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not cpu("flags\t\t: avx2 amx_tile amx_bf16\n")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu("flags\t\t: avx2 amx_tile amx_bf16\n")


def test_bf16_falls_back_to_fp32_on_a_cpu_without_it(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from anpvs.core import device as runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="anpvs.core.device"):
        assert runtime.effective_precision("bf16", torch.device("cpu")) == "fp32"
        assert runtime.effective_precision("fp32", torch.device("cpu")) == "fp32"
        assert runtime.effective_precision("bf16", torch.device("cuda")) == "bf16"  # GPUs are unaffected
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["train.precision=bf16 runs in fp32"]
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.effective_precision("bf16", torch.device("cpu")) == "bf16"


def test_train_and_eval_say_so_before_they_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The warning comes before the first epoch; the step runs in fp32; the record says fp32."""
    from anpvs.core import device as runtime
    from anpvs.training import loop as train

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    used = []
    real_step = train.TrainStep
    monkeypatch.setattr(train, "TrainStep", lambda *a, **k: used.append(k["precision"]) or real_step(*a, **k))
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert run_cli(["train", *TINY, "--out", str(run), "--set", "train.precision=bf16"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    fallback = next(i for i, m in enumerate(messages) if m.startswith("train.precision=bf16 runs in fp32"))
    first_epoch = next(i for i, m in enumerate(messages) if m.startswith("epoch 1/1"))
    assert fallback < first_epoch and used == ["fp32"]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_cli(["eval", str(run / "checkpoint.pt"), "--precision", "bf16", "--steps", "1", "--device", "cpu",
                        "--quiet", "--no-latency"]) == 0
    assert any(r.getMessage().startswith("eval precision=bf16 runs in fp32") for r in caplog.records)
    assert json.loads((run / "eval.json").read_text())["attack"]["precision"] == "fp32"


# --------------------------------------------------------------------------------------------------------
# The Python API refuses images that are not in [0, 1]; AutoAttack reports its stages
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["nan", "0-255"])
def test_pgd_and_evaluate_refuse_images_outside_0_1(bad: str) -> None:
    from anpvs import PGD, evaluate

    model = create_model("lenet5_caffe").eval()
    x = torch.rand(4, 1, 28, 28)
    x = x.masked_fill(x > 0.9, float("nan")) if bad == "nan" else x * 255
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"finite and in \[0, 1\]"):
        PGD(eps=0.3, step_size=0.1, steps=1)(model, x, y)
    with pytest.raises(ValueError, match=r"finite and in \[0, 1\]"):
        evaluate(model, x, y)
    assert evaluate(model, (x.nan_to_num(0) % 256).to(torch.uint8), y)["n"] == 4  # uint8 pixels are fine


def test_autoattack_logs_a_line_per_stage(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("pyautoattack")
    from anpvs.attacks.autoattack import AutoAttack, autoattack_attack
    from anpvs.attacks.base import ThreatSpec

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    x = torch.rand(6, 1, 4, 4)
    y = model(x).argmax(1)
    with caplog.at_level(logging.INFO, logger="anpvs.attacks.autoattack"):
        AutoAttack(eps=0.3)(model, x, y)
        assert not [r for r in caplog.records if r.name == "anpvs.attacks.autoattack"]
        AutoAttack(eps=0.3, progress=True)(model, x, y)
    lines = [r.getMessage() for r in caplog.records if r.name == "anpvs.attacks.autoattack"]
    assert lines and lines[0].startswith("AutoAttack on 6 images: apgd-ce (1/4), accuracy so far 100.00%")
    assert autoattack_attack(ThreatSpec(eps=0.3, step_size=0.1, steps=1, progress=True)).progress
