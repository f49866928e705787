"""The bad-input corpus: hostile or careless input to every command, each answered with one line.

Every case of :data:`CASES` runs ``anpvs.cli.main`` in-process and asserts: the exit status, exactly one
line on stderr (progress bars aside) starting ``anpvs: error:`` and holding a fragment that names the
problem, no traceback, and that every file that existed before the command is byte-identical after it.
The payload cases (a CIFAR batch, a checkpoint whose config points at such a batch, a pickled
checkpoint) also assert that their marker file was never written. docs/reliability.md lists the cases.

The signal and kill tests at the end run the command line in subprocesses: SIGTERM / kill -9 / resume
reach the weights of an uninterrupted run, and two runs never share one folder.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from _toys import run_cli
from conftest import write_tiny_mnist

pytestmark = pytest.mark.usefixtures("fake_git")

SRC = str(Path(__file__).resolve().parents[1] / "src")
#: the smallest real training run: 64 bundled digits, one epoch of PGD-1 adversarial training
TINY = ["--dataset", "mnist_sample", "--train-limit", "64", "--test-limit", "32", "--epochs", "1",
        "--pgd-steps", "1", "--batch-size", "32", "--device", "cpu", "--quiet"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def error_lines(err: str) -> list[str]:
    """stderr without progress bars (tqdm redraws with carriage returns)."""
    return [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "it/s]" not in ln
            and "s/it]" not in ln]


# --------------------------------------------------------------------------------------------------------
# Fixtures: one tiny trained checkpoint, copied into each case's folder
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    assert run_cli(["train", *TINY, "--method", "at", "--out", str(out)]) == 0
    return out / "checkpoint.pt"


def _ckpt(tmp: Path, trained: Path, name: str = "ck.pt", edit: Callable[[dict], None] | None = None) -> Path:
    """A copy of the trained checkpoint in ``tmp``, optionally edited (saved as a plain torch dict)."""
    path = tmp / name
    if edit is None:
        shutil.copy(trained, path)
    else:
        ckpt = torch.load(trained, weights_only=True)
        edit(ckpt)
        torch.save(ckpt, path)
    return path


class Payload:
    """Unpickling this writes ``marker``: what a crafted data or checkpoint file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def _hostile_cifar(folder: Path, marker: Path) -> Path:
    """A cifar-10-batches-py folder whose first batch carries the payload (the others are plain data)."""
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True)
    plain = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = {b"data": Payload(marker), b"labels": [0]} if name == "data_batch_1" else plain
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))
    return folder


def _idx_dir(tmp: Path, **replace: bytes) -> Path:
    """Tiny MNIST IDX files in ``tmp/mnist``, with some files replaced by the given bytes."""
    d = write_tiny_mnist(tmp / "mnist", n_train=64, n_test=16)
    for name, data in replace.items():
        (d / name.replace("_", "-")).write_bytes(data)
    return d


def _idx(arr: np.ndarray, code: int = 0x08) -> bytes:
    import struct

    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()


def _png(path: Path, size: tuple[int, int] = (28, 28), mode: str = "L", noise: bool = False) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if noise:  # incompressible, so a cut file really lacks pixel data
        Image.fromarray(np.random.default_rng(0).integers(0, 256, size[::-1], dtype=np.uint8)).save(path)
    else:
        Image.new(mode, size, color=128).save(path)


def _imagefolder(tmp: Path, classes: tuple[str, ...] = ("a", "b"), odd: Callable[[Path], None] | None = None
                 ) -> Path:
    root = tmp / "images"
    for split in ("train", "test"):
        for c in classes:
            for i in range(3):
                _png(root / split / c / f"{i}.png")
    if odd is not None:
        odd(root)
    return root


def _mnist_args(d: Path) -> list[str]:
    return ["train", "--dataset", "mnist", "--data-dir", str(d), "--epochs", "1", "--pgd-steps", "1",
            "--device", "cpu", "--quiet"]


def _folder_args(d: Path) -> list[str]:
    return ["train", "--dataset", "imagefolder", "--data-dir", str(d), "--eps", "0.1", "--epochs", "1",
            "--pgd-steps", "1", "--device", "cpu", "--quiet"]


# --------------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    argv: Callable[[Path, Path], list[str]]  # (case folder, trained checkpoint) -> arguments
    status: int
    fragment: str
    absent: str = ""  # a text the message must not contain (e.g. blaming a good checkpoint)
    not_created: str = ""  # a path (in the case folder, outside the run) that must not exist after the command


def _gz_truncated(t: Path) -> list[str]:
    d = _idx_dir(t)
    raw = (d / "train-images-idx3-ubyte").read_bytes()
    (d / "train-images-idx3-ubyte").unlink()
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw)[:200])
    return _mnist_args(d)


def _gz_bad_crc(t: Path) -> list[str]:
    d = _idx_dir(t)
    raw = (d / "train-labels-idx1-ubyte").read_bytes()
    (d / "train-labels-idx1-ubyte").unlink()
    gz = bytearray(gzip.compress(raw))
    gz[-8] ^= 0xFF  # the CRC32 of the trailer
    (d / "train-labels-idx1-ubyte.gz").write_bytes(bytes(gz))
    return _mnist_args(d)


def _edit_config(**flat):
    def edit(ckpt: dict) -> None:
        for key, value in flat.items():
            section, name = key.split("__")
            ckpt["config"][section][name] = value
    return edit


def _set(key: str, value):
    def edit(ckpt: dict) -> None:
        ckpt[key] = value(ckpt) if callable(value) else value
    return edit


def _nan_weights(ckpt: dict) -> None:
    first = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][first] = torch.full_like(ckpt["state_dict"][first], float("nan"))


def _overflowing_weights(ckpt: dict) -> None:
    """Finite weights whose activations overflow to inf (and NaN) in float32."""
    for k, v in ckpt["state_dict"].items():
        if k.endswith("weight"):
            ckpt["state_dict"][k] = v * 1e30


def _wrong_shape(ckpt: dict) -> None:
    first = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][first] = torch.zeros(3, 3)


def _hostile_config_ckpt(t: Path, k: Path) -> list[str]:
    data = _hostile_cifar(t / "hostile", t / "MARKER")
    ck = _ckpt(t, k, edit=_edit_config(data__name="cifar10", data__dir=str(data)))
    return ["eval", str(ck), "--device", "cpu", "--quiet"]


def _pickled_run(t: Path, k: Path) -> list[str]:
    run = t / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(pickle.dumps({"format": "anpvs-checkpoint", "x": Payload(t / "MARKER")}))
    return ["train", *TINY, "--out", str(run), "--resume"]


def _read_only(t: Path, k: Path) -> list[str]:
    ro = t / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ["train", *TINY, "--out", str(ro / "run")]


def _foreign(t: Path, k: Path) -> list[str]:
    d = t / "someone"
    d.mkdir()
    (d / "config.yaml").write_text("my: settings\n")
    (d / "log.jsonl").write_text('{"mine": 1}\n')
    return ["train", *TINY, "--out", str(d)]


def _existing_run(t: Path, k: Path) -> list[str]:
    run = t / "run"
    run.mkdir()
    shutil.copy(k, run / "checkpoint.pt")
    return ["train", *TINY, "--out", str(run)]


def _manifest(text: str):
    def make(t: Path, k: Path) -> list[str]:
        (t / "repro").mkdir()
        (t / "repro" / "reproduce.json").write_text(text)
        return ["figures", str(t / "repro")]
    return make


def _audit_manifest(text: str):
    def make(t: Path, k: Path) -> list[str]:
        (t / "repro").mkdir()
        (t / "repro" / "reproduce.json").write_text(text)
        return ["audit", str(t / "repro"), "--no-autoattack"]
    return make


def _eval(*extra: str):
    return lambda t, k: ["eval", str(_ckpt(t, k)), "--device", "cpu", "--quiet", *extra]


def _eval_edited(edit):
    return lambda t, k: ["eval", str(_ckpt(t, k, edit=edit)), "--device", "cpu", "--quiet"]


def _train(*extra: str):
    return lambda t, k: ["train", *TINY, "--out", str(t / "run"), *extra]


def _text_file(name: str, data: bytes):
    def make(t: Path, k: Path) -> Path:
        (t / name).write_bytes(data)
        return t / name
    return make


CASES: list[Case] = [
    # configuration and numbers (exit 2)
    Case("unknown-key", _train("--set", "foo.bar=1"), 2, "'foo.bar'"),
    Case("not-a-number", _train("--set", "train.epochs=many"), 2, "train.epochs"),
    Case("eps-nan", _train("--eps", "nan"), 2, "finite"),
    Case("eps-inf", _train("--eps", "inf"), 2, "finite"),
    Case("set-eps-inf", _train("--set", "attack.eps=.inf"), 2, "attack.eps"),
    Case("set-lr-nan", _train("--set", "train.lr=nan"), 2, "train.lr"),
    Case("step-size-nan", _train("--step-size", "nan"), 2, "finite"),
    Case("negative-eps", _train("--eps", "-1"), 2, "attack.eps"),
    Case("zero-epochs", _train("--epochs", "0"), 2, "train.epochs"),
    Case("seed-expression", _train("--seed", "2**70"), 2, "seed"),
    Case("seed-too-big", _train("--seed", str(2**70)), 2, "64 bits"),
    Case("unknown-model", _train("--model", "vgg61"), 2, "vgg61"),
    Case("unknown-method", _train("--method", "madry"), 2, "madry"),
    Case("binary-config", lambda t, k: ["train", "--config", str(_text_file("c.yaml", b"\xff\xfe\x00\x81")(t, k)),
                                         "--out", str(t / "run")], 2, "not a text"),
    Case("list-config", lambda t, k: ["train", "--config", str(_text_file("c.yaml", b"- 1\n- 2\n")(t, k)),
                                       "--out", str(t / "run")], 2, "mapping"),
    Case("imagefolder-without-eps", lambda t, k: ["train", "--dataset", "imagefolder", "--data-dir",
                                                   str(_imagefolder(t)), "--out", str(t / "run")], 2, "--eps"),
    Case("demo-epochs-scale-nan", lambda t, k: ["demo", "--epochs-scale", "nan", "--out", str(t / "d")], 2, "finite"),
    Case("check-eps-sweep-nan", lambda t, k: ["check", str(_ckpt(t, k)), "--eps-sweep", "0,nan"], 2, "finite"),
    Case("reproduce-without-table", lambda t, k: ["reproduce", "--out", str(t / "r")], 2, "--table"),
    # devices
    Case("train-mps", _train("--device", "mps"), 1, "MPS"),
    Case("train-unknown-device", _train("--device", "tpu"), 1, "device"),
    Case("eval-mps", _eval("--device", "mps"), 1, "MPS", absent="checkpoint"),
    # outputs (refused before any work)
    Case("out-empty", lambda t, k: ["train", *TINY, "--out", ""], 2, "--out is empty"),
    Case("out-is-a-file", lambda t, k: ["train", *TINY, "--out", str(_text_file("f", b"x")(t, k))], 2, "is a file"),
    Case("out-under-a-file", lambda t, k: ["train", *TINY, "--out", str(_text_file("f", b"x")(t, k) / "run")], 2,
         "which is a file"),
    Case("out-read-only", _read_only, 2, "not writable"),
    Case("out-foreign-folder", _foreign, 2, "not an anpvs run"),
    Case("out-holds-a-run", _existing_run, 1, "--resume"),
    Case("eval-out-is-the-checkpoint", lambda t, k: ["eval", str(_ckpt(t, k)), "--out", str(t / "ck.pt"),
                                                      "--device", "cpu"], 2, "input of this command"),
    Case("eval-out-empty", _eval("--out", ""), 2, "empty"),
    Case("eval-out-is-a-folder", lambda t, k: ["eval", str(_ckpt(t, k)), "--out", str(t), "--device", "cpu"], 2,
         "is a folder"),
    Case("check-out-is-the-checkpoint", lambda t, k: ["check", str(_ckpt(t, k)), "--out", str(t / "ck.pt"),
                                                       "--device", "cpu"], 2, "input of this command"),
    # evaluation options
    Case("eval-eps-nan", _eval("--eps", "nan"), 2, "finite"),
    Case("eval-eps-inf", _eval("--eps", "inf"), 2, "finite"),
    Case("eval-batch-size-0", _eval("--batch-size", "0"), 2, "--batch-size"),
    Case("eval-batch-size-negative", _eval("--batch-size", "-5"), 2, "--batch-size"),
    Case("eval-seed-too-big", _eval("--seed", str(2**70)), 2, "64 bits"),
    Case("eval-steps-0", _eval("--steps", "0"), 2, "steps"),
    # checkpoints
    Case("eval-missing-checkpoint", lambda t, k: ["eval", str(t / "nope.pt")], 1, "not found"),
    Case("eval-not-a-checkpoint", lambda t, k: ["eval", str(_text_file("x.pt", b"hello")(t, k))], 1, "not a readable"),
    Case("eval-huge-num-classes", _eval_edited(_set("model_kwargs", lambda c: {**c["model_kwargs"],
                                                                             "num_classes": 10**7})), 1, "100000"),
    Case("eval-unknown-kwarg", _eval_edited(_set("model_kwargs", lambda c: {**c["model_kwargs"], "width": 4})), 1,
         "not arguments"),
    Case("eval-unknown-model", _eval_edited(_set("model_name", "resnet9000")), 1, "unknown model"),
    Case("eval-config-names-another-model", _eval_edited(_edit_config(model__name="vgg16")), 1,
         "its saved config trains model 'vgg16'"),
    Case("eval-wrong-shapes", _eval_edited(_wrong_shape), 1, "do not fit"),
    Case("eval-missing-state-dict", _eval_edited(lambda c: c.pop("state_dict")), 1, "state_dict is not"),
    Case("eval-nan-weights", _eval_edited(_nan_weights), 1, "NaN"),
    Case("eval-overflowing-weights", lambda t, k: ["eval", str(_ckpt(t, k, edit=_overflowing_weights)), "--steps",
                                                    "1", "--device", "cpu", "--quiet"], 1, "non-finite"),
    Case("eval-bad-saved-config", _eval_edited(_edit_config(train__epochs="many")), 1, "saved config is invalid"),
    Case("eval-source-not-a-checkpoint", lambda t, k: ["eval", str(_ckpt(t, k)), "--attack-source",
                                                        str(_text_file("s.pt", b"junk")(t, k)), "--device", "cpu"],
         1, "not a readable"),
    Case("init-nan-weights", lambda t, k: ["train", *TINY, "--out", str(t / "run"), "--init",
                                           str(_ckpt(t, k, edit=_nan_weights))], 1, "NaN"),
    Case("resume-pickled-checkpoint", _pickled_run, 1, "not a readable anpvs checkpoint"),
    # code in data (the marker must never be written)
    Case("cifar-payload", lambda t, k: ["train", "--dataset", "cifar10", "--data-dir",
                                        str(_hostile_cifar(t / "hostile", t / "MARKER")), "--epochs", "1",
                                        "--device", "cpu", "--out", str(t / "run")], 1, "could run code"),
    Case("eval-config-points-at-hostile-data", _hostile_config_ckpt, 1, "could run code"),
    Case("cifar-garbage", lambda t, k: ["train", "--dataset", "cifar10", "--data-dir",
                                        str(_garbage_cifar(t)), "--epochs", "1", "--device", "cpu",
                                        "--out", str(t / "run")], 1, "not a readable CIFAR batch"),
    # IDX files
    Case("idx-truncated-gz", lambda t, k: _gz_truncated(t) + ["--out", str(t / "run")], 1, "cannot read IDX"),
    Case("idx-bad-crc-gz", lambda t, k: _gz_bad_crc(t) + ["--out", str(t / "run")], 1, "cannot read IDX"),
    Case("idx-short-header", lambda t, k: _mnist_args(_idx_dir(t, train_images_idx3_ubyte=b"\x00\x00\x08\x03\x00"))
         + ["--out", str(t / "run")], 1, "IDX header"),
    Case("idx-bad-magic", lambda t, k: _mnist_args(_idx_dir(t, train_labels_idx1_ubyte=b"PK\x03\x04" + bytes(64)))
         + ["--out", str(t / "run")], 1, "not an IDX file"),
    Case("idx-truncated-payload", lambda t, k: _mnist_args(_idx_dir(
        t, t10k_images_idx3_ubyte=_idx(np.zeros((16, 28, 28), np.uint8))[:-10])) + ["--out", str(t / "run")], 1,
        "header announces"),
    Case("idx-count-mismatch", lambda t, k: _mnist_args(_idx_dir(
        t, train_labels_idx1_ubyte=_idx(np.zeros(63, np.uint8)))) + ["--out", str(t / "run")], 1,
        "unexpected IDX contents"),
    Case("idx-float-images", lambda t, k: _mnist_args(_idx_dir(
        t, train_images_idx3_ubyte=_idx(np.zeros((64, 28, 28), ">f4"), 0x0D))) + ["--out", str(t / "run")], 1,
        "unexpected IDX contents"),
    Case("idx-nan-labels", lambda t, k: _mnist_args(_idx_dir(
        t, train_labels_idx1_ubyte=_idx(np.full(64, np.nan, ">f4"), 0x0D))) + ["--out", str(t / "run")], 1,
        "unexpected IDX contents"),
    Case("idx-label-out-of-range", lambda t, k: _mnist_args(_idx_dir(
        t, t10k_labels_idx1_ubyte=_idx(np.full(16, 12, np.uint8)))) + ["--out", str(t / "run")], 1,
        "out of range"),
    Case("val-size-too-large", _train("--val-size", "4000"), 1, "val_size=4000"),
    # image folders
    Case("png-not-an-image", lambda t, k: _folder_args(_imagefolder(
        t, odd=lambda r: (r / "train" / "a" / "bad.png").write_text("not a png"))) + ["--out", str(t / "run")], 1,
        "not a readable image"),
    Case("png-truncated", lambda t, k: _folder_args(_imagefolder(t, odd=_truncate_png)) + ["--out", str(t / "run")],
         1, "cannot decode"),
    Case("png-mixed-sizes", lambda t, k: _folder_args(_imagefolder(
        t, odd=lambda r: _png(r / "test" / "b" / "big.png", (30, 30)))) + ["--out", str(t / "run")], 1, "same size"),
    Case("imagefolder-one-class", lambda t, k: _folder_args(_imagefolder(t, classes=("only",)))
         + ["--out", str(t / "run")], 1, "at least two"),
    Case("imagefolder-unknown-test-class", lambda t, k: _folder_args(_imagefolder(
        t, odd=lambda r: _png(r / "test" / "zebra" / "0.png"))) + ["--out", str(t / "run")], 1, "zebra"),
    Case("imagefolder-missing", lambda t, k: _folder_args(t / "nowhere") + ["--out", str(t / "run")], 1, "not found"),
    # reproduction folders
    Case("figures-malformed-manifest", _manifest("{not json"), 1, "not valid JSON"),
    Case("figures-manifest-without-runs", _manifest('{"seeds": [0]}'), 1, "lacks the runs"),
    Case("audit-manifest-without-runs", _audit_manifest('{"seeds": [0]}'), 1, "lacks the runs"),
    Case("audit-manifest-run-outside-its-folder", _audit_manifest(
        '{"seeds": [0], "rows": [], "runs": {"at/seed0": "../../elsewhere/at"}}'), 1, "outside its folder"),
    # divergence
    Case("lr-1e6-diverges", _train("--lr", "1e6"), 1, "no checkpoint was written"),
]


def _garbage_cifar(t: Path) -> Path:
    d = t / "cifar" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(b"\x80\x02not really a pickle")
    return t / "cifar"


def _truncate_png(root: Path) -> None:
    p = root / "train" / "b" / "cut.png"
    _png(p, noise=True)
    p.write_bytes(p.read_bytes()[:300])


# --------------------------------------------------------------------------------------------------------
# Run folders from others, hostile YAML, outputs (round 3): nothing may lead anpvs outside a folder
# --------------------------------------------------------------------------------------------------------

CANARY = b"the user's own file: anpvs must never write it\n"


def _finished_run(t: Path, k: Path) -> Path:
    """A finished tiny run in ``t/run`` (checkpoint, config, marker) beside the canary file ``t/canary``."""
    (t / "canary").write_bytes(CANARY)
    run = t / "run"
    run.mkdir()
    shutil.copy(k, run / "checkpoint.pt")
    shutil.copy(k.parent / "config.yaml", run / "config.yaml")
    (run / ".anpvs-run").touch()
    return run


def _linked_run_file(name: str, target: str = "../canary"):
    """``train --resume`` of a finished run whose file ``name`` is a symbolic link (to the canary, or to nothing):
    without the guard, the resume would exit 0 after locking (writing its pid) through the link."""
    def make(t: Path, k: Path) -> list[str]:
        run = _finished_run(t, k)
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(target)
        return ["train", *TINY, "--out", str(run), "--resume"]
    return make


def _lock_folder(t: Path, k: Path) -> list[str]:
    (_finished_run(t, k) / ".lock").mkdir()
    return ["train", *TINY, "--out", str(t / "run"), "--resume"]


def _dangling_marker(t: Path, k: Path) -> list[str]:
    run = t / "run"
    run.mkdir()
    (run / ".anpvs-run").symlink_to("../made-by-anpvs")
    return ["train", *TINY, "--out", str(run)]


def _linked_repro(command: str, link: str):
    """A reproduction folder whose run folder (``link="run"``) or whose ``runs/`` (``"runs"``) is a symbolic link
    to an evaluated run elsewhere: audit / figures / reproduce must not read or write there."""
    def make(t: Path, k: Path) -> list[str]:
        elsewhere = t / "elsewhere"
        run = elsewhere / "at" / "seed0"
        run.mkdir(parents=True)
        shutil.copy(k, run / "checkpoint.pt")
        (run / "eval.json").write_text(json.dumps({"metrics": {"clean_acc": 90.0, "pgd_acc": 50.0}}))
        repro = t / "repro"
        if link == "runs":
            repro.mkdir()
            (repro / "runs").symlink_to("../elsewhere")
        else:
            (repro / "runs" / "at").mkdir(parents=True)
            (repro / "runs" / "at" / "seed0").symlink_to("../../../elsewhere/at/seed0")
        (repro / "reproduce.json").write_text(json.dumps({"seeds": [0], "rows": [{"key": "at", "label": "AT"}],
                                                          "runs": {"at/seed0": "runs/at/seed0"}}))
        extra = {"audit": ["--no-autoattack"], "figures": [], "reproduce": ["--table", "mnist", "--quiet", "--out"]}
        return [command, *extra[command], str(repro)] if command == "reproduce" else [command, str(repro),
                                                                                       *extra[command]]
    return make


def _linked_output(name: str, command: str):
    """``eval`` / ``compact`` whose default output beside the checkpoint is a symbolic link to the canary."""
    def make(t: Path, k: Path) -> list[str]:
        ck = _ckpt(t, k)
        (t / "canary").write_bytes(CANARY)
        (t / name).symlink_to("canary")
        return [command, str(ck), *(["--device", "cpu", "--quiet"] if command == "eval" else [])]
    return make


def _alias_bomb() -> bytes:
    """"Billion laughs": 10 levels of 10 aliases (10**10 values) in about 500 bytes, under a known key whose
    error message used to format the expanded value (and hung)."""
    levels = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return f"train:\n  epochs: [{', '.join(levels)}]\n".encode()


DEEP = b"[" * 20_000 + b"]" * 20_000  # nesting that ended in RecursionError
PROTOCOL = b"table: mnist\nsource: {seed: 1000}\nrows:\n  at: {method: at}\n"


def _config(data: bytes):
    return lambda t, k: ["train", "--config", str(_text_file("c.yaml", data)(t, k)), *TINY, "--out", str(t / "run")]


def _protocol(data: bytes):
    return lambda t, k: ["reproduce", "--protocol", str(_text_file("p.yaml", data)(t, k)), "--out", str(t / "r")]


def _fifo(t: Path) -> Path:
    os.mkfifo(t / "fifo.yaml")
    return t / "fifo.yaml"


CASES += [
    # symbolic links in a run folder (the canary outside it stays as it was, nothing is created beside it)
    Case("run-lock-links-to-a-file", _linked_run_file(".lock"), 1, "symbolic link"),
    Case("run-lock-links-to-nothing", _linked_run_file(".lock", "../made-by-anpvs"), 1, "symbolic link",
         not_created="made-by-anpvs"),
    Case("run-lock-is-a-folder", _lock_folder, 1, "not a plain file"),
    Case("run-marker-links-to-nothing", _dangling_marker, 1, "symbolic link", not_created="made-by-anpvs"),
    Case("run-log-links-to-a-file", _linked_run_file("log.jsonl"), 1, "symbolic link"),
    Case("run-config-links-to-a-file", _linked_run_file("config.yaml"), 1, "symbolic link"),
    Case("run-checkpoint-links-to-a-file", _linked_run_file("checkpoint.pt"), 1, "symbolic link"),
    Case("eval-record-links-to-a-file", _linked_output("eval.json", "eval"), 1, "symbolic link"),
    Case("compact-output-links-to-a-file", _linked_output("ck.compact.pt", "compact"), 1, "symbolic link"),
    # symbolic links in a reproduction folder
    Case("audit-run-folder-links-outside", _linked_repro("audit", "run"), 1, "leads outside",
         not_created="elsewhere/at/seed0/check.json"),
    Case("audit-runs-folder-links-outside", _linked_repro("audit", "runs"), 1, "leads outside",
         not_created="elsewhere/at/seed0/check.json"),
    Case("figures-run-folder-links-outside", _linked_repro("figures", "run"), 1, "leads outside"),
    Case("reproduce-runs-folder-links-outside", _linked_repro("reproduce", "runs"), 1, "leads outside",
         not_created="elsewhere/source"),
    Case("figures-manifest-nested-20000-deep", _manifest("[" * 20_000 + "]" * 20_000), 1, "not valid JSON"),
    # hostile YAML: configs, --set values, protocols (refused while parsing, in well under a second)
    Case("yaml-alias-bomb", _config(_alias_bomb()), 2, "alias"),
    Case("yaml-nested-20000-deep", _config(b"train: {epochs: " + DEEP + b"}\n"), 2, "nests deeper"),
    Case("yaml-larger-than-1-mib", _config(b"# " + b"x" * (1 << 20) + b"\n"), 2, "larger than"),
    Case("yaml-duplicate-section", _config(b"train:\n  epochs: 1\ntrain:\n  lr: 0.1\n"), 2, "'train' twice"),
    Case("yaml-duplicate-key", _config(b"train: {epochs: 1, epochs: 2}\n"), 2, "'epochs' twice"),
    Case("yaml-dotted-key-and-section", _config(b"train.epochs: 1\ntrain:\n  epochs: 2\n"), 2, "set twice"),
    Case("yaml-long-value-is-cut", _config(b"train:\n  lr_gamma: " + b"x" * 100_000 + b"\n"), 2, "train.lr_gamma",
         absent="x" * 100),
    Case("yaml-long-key-is-cut", _config(b"train:\n  ? " + b"x" * 100_000 + b"\n  : 1\n"), 2, "unknown config key",
         absent="x" * 100),
    Case("config-is-dev-zero", lambda t, k: ["train", "--config", "/dev/zero", "--out", str(t / "run")], 2,
         "not a regular file"),
    Case("config-is-a-fifo", lambda t, k: ["train", "--config", str(_fifo(t)), "--out", str(t / "run")], 2,
         "not a regular file"),
    Case("config-is-a-folder", lambda t, k: ["train", "--config", str(t), "--out", str(t / "run")], 2,
         "not a regular file"),
    Case("set-alias", _train("--set", "train.lr_milestones=[&a 0.5, *a]"), 2, "alias"),
    Case("set-nested-20000-deep", _train("--set", "train.lr_milestones=" + DEEP.decode()), 2, "nests deeper"),
    Case("protocol-alias-bomb", _protocol(PROTOCOL + b"notes: " + _alias_bomb().split(b"epochs: ")[1]), 2, "alias"),
    Case("protocol-duplicate-row", _protocol(PROTOCOL + b"  at: {method: anp_vs}\n"), 2, "'at' twice"),
    Case("protocol-nested-20000-deep", _protocol(PROTOCOL + b"notes: " + DEEP + b"\n"), 2, "nests deeper"),
    Case("protocol-is-a-fifo", lambda t, k: ["reproduce", "--protocol", str(_fifo(t)), "--out", str(t / "r")], 2,
         "not a regular file"),
    # outputs
    Case("compact-out-empty", lambda t, k: ["compact", str(_ckpt(t, k)), "--out", ""], 2, "--out is empty"),
    Case("compact-export-onto-a-file", lambda t, k: ["compact", str(_ckpt(t, k)), "--export", "torchscript", "--out",
                                                      str(_text_file("model.ts", CANARY)(t, k))], 2, "--force"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line(case: Case, tmp_path: Path, trained: Path, capsys: pytest.CaptureFixture[str]
                                  ) -> None:
    if case.name == "out-read-only" and os.geteuid() == 0:
        pytest.skip("root may write into read-only folders")
    work = tmp_path / "case"
    work.mkdir()
    argv = case.argv(work, trained)
    before = snapshot(work)
    capsys.readouterr()
    status = run_cli(argv)
    out, err = capsys.readouterr()
    lines = error_lines(err)
    assert status == case.status, f"exit {status}, expected {case.status}; stderr:\n{err}"
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("anpvs: error: ")
    assert case.fragment in lines[0], lines[0]
    assert not case.absent or case.absent not in lines[0], lines[0]
    assert "Traceback" not in err + out
    after = snapshot(work)
    changed = [p for p, data in before.items() if after.get(p) != data]
    assert not changed, f"files changed or removed: {changed}"
    assert not (work / "MARKER").exists(), "code from a data or checkpoint file ran"
    assert not case.not_created or not os.path.lexists(work / case.not_created), f"{case.not_created} was created"


def test_the_corpus_has_at_least_40_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


def test_the_payload_is_real(tmp_path: Path) -> None:
    """The marker payload does run under a plain ``pickle.loads``; the corpus refuses it, so it never does."""
    marker = tmp_path / "sanity-marker"
    pickle.loads(pickle.dumps(Payload(marker), protocol=2))
    assert marker.read_text() == "code ran"


def test_safe_unpickler_reads_plain_batches_written_by_python2_and_3(tmp_path: Path) -> None:
    from anpvs.data import safe_unpickle

    obj = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2], b"batch_label": "x",
           b"names": (b"cat", 1.5, None, True)}
    for protocol in (2, 4, 5):
        back = safe_unpickle(pickle.dumps(obj, protocol=protocol))
        assert np.array_equal(back[b"data"], obj[b"data"]) and back[b"names"] == obj[b"names"]


# --------------------------------------------------------------------------------------------------------
# Numbers that used to be refused or silently replaced
# --------------------------------------------------------------------------------------------------------


def test_set_lr_in_exponent_notation_is_a_float(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_cli(["train", "--set", "train.lr=1e6", "--set", "attack.eps=3e-1", "--out", str(tmp_path / "r"),
                    "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "lr: 1000000.0" in text and "eps: 0.3" in text


def test_imagefolder_eval_follows_the_training_threat_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """A dataset without a preset: training at --eps 0.05 means evaluation at 0.05, and the record says why."""
    import json

    root = _imagefolder(tmp_path, classes=("a", "b"))
    run = tmp_path / "run"
    assert run_cli(["train", "--dataset", "imagefolder", "--data-dir", str(root), "--eps", "0.05", "--epochs", "1",
                    "--pgd-steps", "1", "--method", "at", "--device", "cpu", "--quiet", "--out", str(run)]) == 0
    assert run_cli(["eval", str(run / "checkpoint.pt"), "--steps", "2", "--device", "cpu", "--quiet"]) == 0
    attack = json.loads((run / "eval.json").read_text())["attack"]
    assert attack["eps"] == 0.05 and attack["norm"] == "linf"
    assert attack["eps_source"].startswith("training attack")
    assert run_cli(["eval", str(run / "checkpoint.pt"), "--eps", "0.1", "--steps", "2", "--device", "cpu",
                    "--quiet"]) == 0
    attack = json.loads((run / "eval.json").read_text())["attack"]
    assert attack["eps"] == 0.1 and attack["eps_source"] == "command line"


def test_force_trains_into_a_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "someone"
    d.mkdir()
    (d / "notes.txt").write_text("keep me\n")
    assert run_cli(["train", *TINY, "--out", str(d), "--force"]) == 0
    assert (d / "notes.txt").read_text() == "keep me\n" and (d / "checkpoint.pt").is_file()


def test_leftovers_of_a_killed_write_are_removed_on_the_next_start(tmp_path: Path, trained: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained.parent / "config.yaml", run / "config.yaml")
    (run / ".anpvs-run").touch()
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    assert run_cli(["train", *TINY, "--out", str(run)]) == 0
    assert not list(run.glob(".checkpoint.pt.*.tmp"))
    assert not (run / ".lock").exists(), "the lock file goes with the run"


def test_the_log_is_rebuilt_from_the_checkpoint(tmp_path: Path) -> None:
    """A kill between the checkpoint write and the log append used to lose that epoch's line for good."""
    import json

    run = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "2", "--out", str(run)]  # the last --epochs wins
    assert run_cli(args) == 0
    lines = (run / "log.jsonl").read_text().splitlines()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert [json.dumps(e) for e in ckpt["log"]] == lines
    (run / "log.jsonl").write_text(lines[0] + "\n" + lines[0] + "\n")  # epoch 2 lost, epoch 1 twice
    assert run_cli([*args, "--resume"]) == 0
    assert (run / "log.jsonl").read_text().splitlines() == lines


# --------------------------------------------------------------------------------------------------------
# Full disks, quotas, read-only file systems; stale temporary files; file modes; --force; the YAML bomb's time
# --------------------------------------------------------------------------------------------------------


class _FullDisk(io.RawIOBase):
    """A file whose every write fails as the kernel's does on a full disk (or with another ``errno``)."""

    def __init__(self, err: int) -> None:
        self.err = err

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        raise OSError(self.err, os.strerror(self.err))


def _fill_disk(monkeypatch: pytest.MonkeyPatch, err: int = errno.ENOSPC, after: int = 0) -> None:
    """Every file anpvs opens for writing after the first ``after`` (the output check's and the atomic writer's)
    fails in its writes, ``torch.save`` included: it writes through the open file, as on a real full disk."""
    import anpvs.core.errors
    import anpvs.io.atomic

    opened = {"n": 0}

    def fake_open(path, mode="r", *args, **kwargs):
        opened["n"] += 1
        return _FullDisk(err) if "w" in mode and opened["n"] > after else open(path, mode, *args, **kwargs)

    for module in (anpvs.core.errors, anpvs.io.atomic):
        monkeypatch.setattr(module, "open", fake_open, raising=False)


def _one_error_line(err: str) -> str:
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("anpvs: error: ") and "Traceback" not in err, err
    return lines[0]


def test_a_full_disk_at_a_checkpoint_says_so_and_the_run_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Used to be ``internal error RuntimeError: [enforce fail at inline_container.cc:672]``."""
    run = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "2", "--out", str(run)]
    _fill_disk(monkeypatch, after=2)  # config.yaml and the checkpoint of epoch 1 are written, epoch 2's is not
    capsys.readouterr()
    assert run_cli(args) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"no space left on device writing {str(run / 'checkpoint.pt')!r}" in line, line
    assert "the checkpoint of epoch 1 is kept" in line and "free space and resume with anpvs train --resume" in line
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(run.glob(".*.tmp")) and not (run / ".lock").exists()
    monkeypatch.undo()
    assert run_cli([*args, "--resume"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("err, words", [(errno.ENOSPC, "no space left on device"),
                                        (errno.EDQUOT, "disk quota exceeded"), (errno.EROFS, "read-only file system")])
def test_eval_checks_that_its_record_can_be_written_before_it_attacks(
        err: int, words: str, tmp_path: Path, trained: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import anpvs.jobs.evaluate as job

    ck = _ckpt(tmp_path, trained)
    before = snapshot(tmp_path)
    _fill_disk(monkeypatch, err)
    monkeypatch.setattr(job, "evaluate", lambda *a, **k: pytest.fail("the attack ran before the output was checked"))
    capsys.readouterr()
    assert run_cli(["eval", str(ck), "--device", "cpu", "--quiet"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"{words} writing {str(tmp_path / 'eval.json')!r}" in line, line
    assert snapshot(tmp_path) == before


def test_eval_keeps_its_result_when_the_disk_fills_up_during_it(tmp_path: Path, trained: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    ck = _ckpt(tmp_path, trained)
    _fill_disk(monkeypatch, after=1)  # the check before the attack passes, the record's write fails
    capsys.readouterr()
    assert run_cli(["eval", str(ck), "--steps", "1", "--no-latency", "--device", "cpu", "--quiet"]) == 1
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert "no space left on device" in line and "printed on standard output" in line, line
    record = json.loads(out)  # the record, complete, on stdout
    assert record["metrics"]["n"] == 32 and "pgd_acc" in record["metrics"]
    assert not (tmp_path / "eval.json").exists() and not list(tmp_path.glob(".*.tmp"))


def test_an_interrupted_evals_temporary_file_is_removed_by_the_next_write(tmp_path: Path, trained: Path) -> None:
    """A killed ``anpvs eval`` used to leave ``.eval.json.*.tmp`` for good; one of a live process stays."""
    ck = _ckpt(tmp_path, trained)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f".eval.json.{gone.pid}-k1ll3d.tmp"
    live = tmp_path / f".eval.json.{os.getpid()}-wr1t1ng.tmp"
    for p in (stale, live):
        p.write_text('{"half": ')
    assert run_cli(["eval", str(ck), "--steps", "1", "--no-latency", "--device", "cpu", "--quiet"]) == 0
    assert not stale.exists() and live.exists() and (tmp_path / "eval.json").is_file()


def test_written_files_get_the_mode_open_gives_them(tmp_path: Path) -> None:
    """``mkstemp`` makes 0600 files: a group could not read a shared run."""
    from anpvs.io.atomic import write_text

    old = os.umask(0o002)
    try:
        write_text(tmp_path / "new.json", "{}")
        kept = tmp_path / "kept.json"
        kept.write_text("{}")
        kept.chmod(0o640)
        write_text(kept, "{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o664
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "{}\n"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_replaces_an_existing_file_only_with_force(tmp_path: Path, trained: Path) -> None:
    ck = _ckpt(tmp_path, trained)
    other = tmp_path / "model.ts"
    other.write_bytes(CANARY)
    assert run_cli(["compact", str(ck), "--export", "torchscript", "--out", str(other)]) == 2
    assert other.read_bytes() == CANARY
    assert run_cli(["compact", str(ck), "--export", "torchscript", "--out", str(other), "--force"]) == 0
    assert other.read_bytes()[:2] == b"PK"  # a TorchScript archive now
    for _ in range(2):  # the default output beside the checkpoint is the command's own: replaced without --force
        assert run_cli(["compact", str(ck), "--export", "torchscript"]) == 0


def test_the_yaml_bomb_is_refused_in_under_a_second(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_bytes(_alias_bomb())
    assert len(config.read_bytes()) < 600
    t0 = time.perf_counter()
    assert run_cli(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert time.perf_counter() - t0 < 1.0
    assert "alias" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("command", ["train --config", "reproduce --protocol"])
def test_a_fresh_process_refuses_the_yaml_bomb_before_importing_torch(tmp_path: Path, command: str) -> None:
    """In a new process (the user's case: torch not yet imported, about a second to import on 2 cores) the bomb
    is refused by the bounded reader before anything imports torch."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_bytes(_alias_bomb() if command.startswith("train") else PROTOCOL + b"notes: "
                     + _alias_bomb().split(b"epochs: ")[1])
    argv = [*command.split(), str(bomb), "--out", str(tmp_path / "run")]
    code = (f"import sys\nfrom anpvs.cli import main\ntry:\n    rc = main({argv!r})\nexcept SystemExit as e:\n"
            f"    rc = e.code\nprint(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "False"], out
    assert "alias" in _one_error_line(out.stderr)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------------
# Signals, kill -9 and concurrent runs (subprocesses)
# --------------------------------------------------------------------------------------------------------

#: a run long enough to be interrupted: 4 epochs of 4 batches of PGD-1 adversarial training
SIGNAL_RUN = ["train", "--dataset", "mnist_sample", "--train-limit", "128", "--test-limit", "32", "--epochs", "4",
              "--batch-size", "32", "--pgd-steps", "1", "--method", "at", "--device", "cpu", "--quiet"]

#: a child that runs the CLI and kills itself with SIGKILL at a chosen point of the checkpoint write
KILLER = r"""
import os, signal, sys
import torch
where, nth = sys.argv[1], int(sys.argv[2])
calls = {"n": 0}
if where == "during-write":  # the temporary file is written, the rename has not happened
    real_save = torch.save
    def save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    torch.save = save
elif where == "after-write":  # the checkpoint is in place, its log line is not
    real_replace = os.replace
    def replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith("checkpoint.pt"):
            calls["n"] += 1
            if calls["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
from anpvs.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _spawn(argv: list[str], killer: tuple[str, int] | None = None, tmp: Path | None = None) -> subprocess.Popen:
    if killer is None:
        cmd = [sys.executable, "-m", "anpvs", *argv]
    else:
        script = tmp / "killer.py"
        script.write_text(KILLER)
        cmd = [sys.executable, str(script), killer[0], str(killer[1]), *argv]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("timed out")


def _epochs_logged(run: Path) -> int:
    p = run / "log.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must reproduce."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert run_cli([*SIGNAL_RUN, "--out", str(run)]) == 0
    return run


def _assert_same_as_reference(run: Path, reference: Path) -> None:
    import json

    got = torch.load(run / "checkpoint.pt", weights_only=True)
    ref = torch.load(reference / "checkpoint.pt", weights_only=True)
    assert got["epoch"] == ref["epoch"]
    for k, v in ref["state_dict"].items():
        assert torch.equal(got["state_dict"][k], v), f"{k} differs from the uninterrupted run"
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    ref_log = [json.loads(ln) for ln in (reference / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [e["epoch"] for e in ref_log], "log incomplete or duplicated"
    drop = ("epoch_time_s",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in log] == \
        [{k: v for k, v in e.items() if k not in drop} for e in ref_log]
    assert not list(run.glob(".checkpoint.pt.*.tmp")) and not (run / ".lock").exists()


def _holds_lock(run: Path, proc: subprocess.Popen) -> bool:
    """``proc`` runs the command: the lock file names its pid (a stale one from a kill -9 names another)."""
    try:
        return (run / ".lock").read_text().strip() == str(proc.pid)
    except FileNotFoundError:
        return False


def _sigterm(run: Path, after_epochs: int, delay: float) -> subprocess.Popen:
    proc = _spawn([*SIGNAL_RUN, "--out", str(run), "--resume"])
    # the lock is taken inside the command, once SIGTERM is handled (a signal during Python's start-up ends
    # the process the default way, before anything is written)
    if _wait_for(lambda: _holds_lock(run, proc) and _epochs_logged(run) >= after_epochs, proc):
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    return proc


def test_sigterm_then_resume_reaches_the_same_weights(tmp_path: Path, reference: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    proc = _sigterm(run, after_epochs=1, delay=0.05)
    err = proc.stderr.read()
    assert proc.returncode == 143, err  # 128 + SIGTERM, with a message, the checkpoint of a finished epoch kept
    lines = [ln for ln in error_lines(err) if ln.startswith("anpvs: ")]
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and "--resume" in lines[0], err
    assert "Traceback" not in err
    assert 1 <= torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] < 4
    assert run_cli([*SIGNAL_RUN, "--out", str(run), "--resume"]) == 0
    _assert_same_as_reference(run, reference)


@pytest.mark.parametrize("where", ["during-write", "after-write"])
def test_kill_9_at_the_checkpoint_write_then_resume(where: str, tmp_path: Path, reference: Path) -> None:
    run = tmp_path / "run"
    proc = _spawn([*SIGNAL_RUN, "--out", str(run)], killer=(where, 2), tmp=tmp_path)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    if where == "during-write":
        assert list(run.glob(".checkpoint.pt.*.tmp")), "the kill should leave a partial write behind"
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == (1 if where == "during-write" else 2)
    assert run_cli([*SIGNAL_RUN, "--out", str(run), "--resume"]) == 0
    _assert_same_as_reference(run, reference)


def test_two_runs_never_share_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    first = _spawn([*SIGNAL_RUN, "--out", str(run)])
    try:
        assert _wait_for(lambda: _holds_lock(run, first), first)
        for extra in ([], ["--resume"]):  # a second run, and a --resume started during the live run
            capsys.readouterr()
            assert run_cli([*SIGNAL_RUN, "--out", str(run), *extra]) == 1
            lines = error_lines(capsys.readouterr().err)
            assert len(lines) == 1 and "in use by another anpvs run" in lines[0] and str(first.pid) in lines[0]
    finally:
        first.wait(timeout=180)
    assert first.returncode == 0, first.stderr.read()
    import json

    epochs = [json.loads(ln)["epoch"] for ln in (run / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


@pytest.mark.slow
def test_kill_9_at_5_random_points_and_sigterm_at_2(tmp_path: Path) -> None:
    """Interrupt one run 7 times (5 kill -9, two of them inside the checkpoint write, one between it and the
    log append; 2 SIGTERM), resuming each time; the end is the uninterrupted run's weights and a complete,
    duplicate-free log. Every interrupt must land in a live run (exit -9 or 143)."""
    long_run = [*SIGNAL_RUN, "--train-limit", "256", "--epochs", "8"]  # the later flags win
    reference = tmp_path / "reference"
    assert run_cli([*long_run, "--out", str(reference)]) == 0
    rng = np.random.default_rng(12)
    run = tmp_path / "run"
    plan = [("kill", 0.3), ("during-write", 1), ("sigterm", 0.2), ("kill", 0.8), ("after-write", 1),
            ("sigterm", 0.6), ("during-write", 2)]
    for step, arg in plan:
        args = [*long_run, "--out", str(run), "--resume"]
        if step in ("during-write", "after-write"):
            proc = _spawn(args, killer=(step, int(arg)), tmp=tmp_path)
        else:
            proc = _spawn(args)
            assert _wait_for(lambda p=proc: _holds_lock(run, p), proc), proc.stderr.read()
            time.sleep(float(arg) * float(rng.uniform(0.5, 1.5)))
            proc.send_signal(signal.SIGTERM if step == "sigterm" else signal.SIGKILL)
        proc.wait(timeout=120)
        expected = 143 if step == "sigterm" else -signal.SIGKILL
        assert proc.returncode == expected, (step, proc.returncode, proc.stderr.read())
        assert _epochs_logged(run) < 8, "the run finished before all interrupts landed"
    assert run_cli([*long_run, "--out", str(run), "--resume"]) == 0
    _assert_same_as_reference(run, reference)
