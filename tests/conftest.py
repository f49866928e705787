"""Shared fixtures of the default (CPU, seconds) test suite.

Nothing here is autouse: each test module asks for what it needs, so other modules pay nothing.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

# One intra-op thread: the suite shares 2 CPU cores with long training runs, and the tiny tensors used
# here gain nothing from more threads (thread start-up and contention cost more than they save). It also
# keeps CPU results reproducible run to run, which the resume-equivalence tests rely on.
torch.set_num_threads(1)

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"

TINY_TRAIN = 256
TINY_TEST = 64


def _write_idx(path: Path, arr: np.ndarray) -> None:
    """Write a uint8 array as an (uncompressed) IDX file, the MNIST file format."""
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape)
    path.write_bytes(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def tiny_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images whose class (0-9) is a bright 5x5 block at a class-specific place.

    The block sits in one of a 4x3 grid of cells (the first 10 are used), jittered by a pixel, over
    faint noise, so LeNet learns the classes within a few dozen Adam steps while each image differs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    x = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 3)
        top, left = 1 + 7 * r + rng.integers(0, 2), 2 + 9 * q + rng.integers(0, 2)
        x[i, top:top + 5, left:left + 5] = rng.integers(180, 256, size=(5, 5), dtype=np.uint8)
    return x, labels.astype(np.uint8)


def write_tiny_mnist(folder: Path, n_train: int = TINY_TRAIN, n_test: int = TINY_TEST) -> Path:
    """The four MNIST IDX files of a tiny class-patterned dataset, read by ``load_dataset("mnist", folder)``."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = tiny_digits(n_train, seed=0)
    x_test, y_test = tiny_digits(n_test, seed=1)
    _write_idx(folder / "train-images-idx3-ubyte", x_train)
    _write_idx(folder / "train-labels-idx1-ubyte", y_train)
    _write_idx(folder / "t10k-images-idx3-ubyte", x_test)
    _write_idx(folder / "t10k-labels-idx1-ubyte", y_test)
    return folder


@pytest.fixture(scope="session")
def tiny_mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny MNIST-format dataset (256 train / 64 test), written once per session."""
    return write_tiny_mnist(tmp_path_factory.mktemp("tiny_mnist"))


@pytest.fixture
def fake_git(monkeypatch: pytest.MonkeyPatch) -> str:
    """Record a fixed commit instead of running ``git rev-parse`` on the developer's checkout.

    Checkpoints and evaluation records store the git commit; a fixed value keeps the tests
    independent of the working tree's state and lets them check that the value is carried."""
    import importlib

    # the modules that stamp the commit into checkpoints and evaluation records
    monkeypatch.setattr(importlib.import_module("anpvs.models.checkpoint"), "git_commit", lambda: FAKE_COMMIT)
    monkeypatch.setattr(importlib.import_module("anpvs.evaluation.evaluate"), "git_commit", lambda: FAKE_COMMIT)
    return FAKE_COMMIT


@pytest.fixture
def tiny_config(tiny_mnist_dir: Path, tmp_path: Path):
    """Factory of configs that train on 128 tiny images, 4 batches of 32 per epoch (a fraction of a second).

    ``tiny_config(**overrides)`` takes dotted keys with ``__`` for the dot, e.g. ``train__epochs=3``."""
    from anpvs.training.run_config import build_config

    def make(**overrides: Any):
        ov: dict[str, Any] = {
            "data.name": "mnist", "data.dir": str(tiny_mnist_dir), "data.train_limit": 128, "device": "cpu",
            "train.epochs": 2, "train.batch_size": 32, "attack.steps": 2, "attack.step_size": 0.1,
            "out": str(tmp_path / "run"),
        }
        ov.update({k.replace("__", "."): v for k, v in overrides.items()})
        return build_config(ov)

    return make
