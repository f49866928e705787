"""Tests of anpvs.data on tiny files written on the fly (no network, no shared data folder)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from anpvs.data import (
    DATASETS,
    ArrayDataset,
    BatchLoader,
    DataNotFoundError,
    DataSplits,
    augment_batch,
    load_dataset,
    read_idx,
)
from anpvs.data import loading as D  # the seeded-subset helpers

torch.set_num_threads(1)

# ------------------------------------------------------------------------------------------------------
# helpers that write tiny datasets
# ------------------------------------------------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    """Write a uint8 array in IDX format (optionally gzipped)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def unique_images(n: int, h: int = 28, w: int = 28, seed: int = 0) -> np.ndarray:
    """Random uint8 images whose first two pixels encode the image's index (so each is unique)."""
    x = np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)
    x[:, 0, 0] = np.arange(n) % 256
    x[:, 0, 1] = np.arange(n) // 256
    return x


def write_mnist(folder: Path, n_train: int = 200, n_test: int = 50, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", unique_images(n_train), gz)
    write_idx(folder / "train-labels-idx1-ubyte", (np.arange(n_train) % 10).astype(np.uint8), gz)
    write_idx(folder / "t10k-images-idx3-ubyte", unique_images(n_test, seed=1), gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", (np.arange(n_test) * 7 % 10).astype(np.uint8), gz)


def cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        rows = cifar_rows(4, seed=i)
        if i == 1:  # first image: red plane 255, green 0, blue 128
            rows[0, :1024], rows[0, 1024:2048], rows[0, 2048:] = 255, 0, 128
        dump(folder / f"data_batch_{i}", {b"batch_label": b"x", b"data": rows, b"labels": [i, 0, 9, 3],
                                          b"filenames": [b"f"] * 4})
    dump(folder / "test_batch", {b"data": cifar_rows(6, seed=9), b"labels": [0, 1, 2, 3, 4, 5]})
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship",
             b"truck"]
    dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 4, b"num_vis": 3072})
    return folder


def write_imagefolder(root: Path, mode: str = "L", size: tuple[int, int] = (8, 6)) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("test", 2)):
        for c in ("cat", "dog", "emu"):
            d = root / split / c
            d.mkdir(parents=True)
            for k in range(per_class):
                shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
                Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(d / f"{k}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def check_split(ds: ArrayDataset, shape: tuple[int, int, int]) -> None:
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert tuple(ds.images.shape[1:]) == shape
    x, y = ds[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == shape and y.dtype == torch.int64
    xb, yb = ds[:5]
    assert tuple(xb.shape) == (min(5, len(ds)), *shape) and yb.shape == (min(5, len(ds)),)
    assert 0.0 <= float(xb.min()) and float(xb.max()) <= 1.0


def rows_as_set(ds: ArrayDataset) -> set[bytes]:
    return {r.tobytes() for r in ds.images.reshape(len(ds), -1).numpy()}


# ------------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------------


def test_bundled_sample():
    s = load_dataset("mnist_sample", "/does/not/matter")
    assert isinstance(s, DataSplits)
    assert (len(s.train), len(s.test), s.val) == (4000, 1000, None)
    assert s.num_classes == 10 and s.input_shape == (1, 28, 28) and s.name == "mnist_sample"
    assert "bundled sample" in s.source
    check_split(s.train, (1, 28, 28))
    assert s.train.class_counts(10).tolist() == [400] * 10
    assert s.test.class_counts(10).tolist() == [100] * 10
    assert 0.12 < float(s.train.images.float().mean()) / 255 < 0.14  # MNIST's mean pixel is 0.1307
    assert not rows_as_set(s.train) & rows_as_set(s.test)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_folder(tmp_path, name, gz):
    write_mnist(tmp_path, gz=gz)
    s = load_dataset(name, tmp_path)
    assert (len(s.train), len(s.test), s.num_classes, s.input_shape) == (200, 50, 10, (1, 28, 28))
    check_split(s.train, (1, 28, 28))
    check_split(s.test, (1, 28, 28))
    assert s.train.labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert torch.equal(s.train.images[:, 0], torch.from_numpy(unique_images(200)))
    assert str(tmp_path) in s.source and s.classes is not None and len(s.classes) == 10


def test_idx_in_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    s = load_dataset("fashion-mnist", tmp_path)  # '-' accepted for '_'
    assert s.name == "fashion_mnist" and len(s.train) == 200 and s.classes[0] == "T-shirt/top"


def test_read_idx_rejects_garbage(tmp_path):
    bad = tmp_path / "x"
    bad.write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "y"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 10) + b"abc")
    with pytest.raises(ValueError, match="10 bytes"):
        read_idx(short)


@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cifar10_batches(tmp_path, point_at_folder):
    folder = write_cifar10(tmp_path)
    s = load_dataset("cifar10", folder if point_at_folder else tmp_path)
    assert (len(s.train), len(s.test), s.num_classes, s.input_shape) == (20, 6, 10, (3, 32, 32))
    check_split(s.train, (3, 32, 32))
    assert s.train.labels[:4].tolist() == [1, 0, 9, 3] and s.test.labels.tolist() == [0, 1, 2, 3, 4, 5]
    x0, _ = s.train[0]  # channels are planes of the 3072-value row (R, G, B)
    assert torch.all(x0[0] == 1.0) and torch.all(x0[1] == 0.0)
    assert torch.allclose(x0[2], torch.tensor(128 / 255))
    assert s.classes is not None and s.classes[0] == "airplane"


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    dump(folder / "train", {b"data": cifar_rows(8, 0), b"fine_labels": [99, 0, 5, 7, 1, 2, 3, 4],
                            b"coarse_labels": [19] * 8})
    dump(folder / "test", {b"data": cifar_rows(3, 1), b"fine_labels": [42, 43, 44],
                           b"coarse_labels": [0] * 3})
    s = load_dataset("cifar100", tmp_path)
    assert s.num_classes == 100 and s.train.labels[0].item() == 99 and s.test.labels.tolist() == [42, 43, 44]
    assert s.classes is None  # no meta file written


def test_imagefolder_gray(tmp_path):
    write_imagefolder(tmp_path, "L")
    s = load_dataset("imagefolder", tmp_path)
    assert (len(s.train), len(s.test), s.num_classes, s.input_shape) == (9, 6, 3, (1, 6, 8))
    assert s.classes == ("cat", "dog", "emu")
    assert s.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    check_split(s.train, (1, 6, 8))


def test_imagefolder_rgb_and_size_mismatch(tmp_path):
    from PIL import Image

    write_imagefolder(tmp_path, "RGB")
    s = load_dataset("imagefolder", tmp_path)
    assert s.input_shape == (3, 6, 8)
    Image.new("L", (5, 5)).save(tmp_path / "test" / "dog" / "odd.png")
    with pytest.raises(ValueError, match=r"odd\.png.*5x5.*same size"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_needs_train_and_test(tmp_path):
    with pytest.raises(DataNotFoundError, match="train/ and test/"):
        load_dataset("imagefolder", tmp_path)
    with pytest.raises(DataNotFoundError, match="--data-dir"):
        load_dataset("imagefolder", None)


@pytest.mark.parametrize("name, hint", [("mnist", "IDX"), ("fashion_mnist", "IDX"),
                                        ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_data_error(tmp_path, name, hint):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset(name, tmp_path / "nowhere")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in msg and "--download" in msg and "--data-dir" in msg and hint in msg and name in msg


def test_download_failure_is_converted(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x, got: no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", tmp_path, download=True)
    msg = str(info.value)
    assert "\n" not in msg and "download failed" in msg and "--data-dir" in msg
    assert isinstance(info.value.__cause__, RuntimeError)


def test_argument_validation(tmp_path):
    with pytest.raises(ValueError, match="valid names: mnist_sample"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("mnist_sample", val_size=-1)
    with pytest.raises(ValueError, match="val_size=4000 must be smaller"):
        load_dataset("mnist_sample", val_size=4000)
    with pytest.raises(ValueError, match="train_limit"):
        load_dataset("mnist_sample", train_limit=0)
    with pytest.raises(ValueError, match="test_limit"):
        load_dataset("mnist_sample", test_limit=-3)
    # the built-in formats are registered (a new format is one file in data/formats/ and its own test: this
    # line does not list every format)
    assert set(DATASETS) >= {"mnist_sample", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder"}


# ------------------------------------------------------------------------------------------------------
# splits and subsets
# ------------------------------------------------------------------------------------------------------


def test_val_split_deterministic_and_disjoint(tmp_path):
    write_mnist(tmp_path)
    a = load_dataset("mnist", tmp_path, val_size=40, seed=3)
    b = load_dataset("mnist", tmp_path, val_size=40, seed=3)
    c = load_dataset("mnist", tmp_path, val_size=40, seed=4)
    assert a.val is not None and (len(a.train), len(a.val)) == (160, 40)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)
    tr, va = rows_as_set(a.train), rows_as_set(a.val)
    assert not tr & va and len(tr | va) == 200
    assert a.val.class_counts(10).tolist() == [4] * 10  # stratified
    assert len(a.test) == 50  # the test set is untouched


def test_limits(tmp_path):
    write_mnist(tmp_path)
    s = load_dataset("mnist", tmp_path, val_size=20, train_limit=50, test_limit=10, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (50, 20, 10)
    assert s.train.class_counts(10).tolist() == [5] * 10
    assert s.test.class_counts(10).tolist() == [1] * 10
    assert not rows_as_set(s.train) & rows_as_set(s.val)
    # the validation split does not move when train_limit changes
    t = load_dataset("mnist", tmp_path, val_size=20, train_limit=80, seed=0)
    assert torch.equal(s.val.images, t.val.images)
    # kept examples stay in their original order (image index is encoded in pixel (0, 0) and (0, 1))
    ids = s.train.images[:, 0, 0, 0].long() + 256 * s.train.images[:, 0, 0, 1].long()
    assert torch.all(ids[1:] > ids[:-1])
    big = load_dataset("mnist", tmp_path, train_limit=10_000)
    assert len(big.train) == 200


def test_stratified_subset_odd_sizes():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    idx = D._stratified_subset(labels, 7, np.random.default_rng(0))
    assert len(idx) == 7 and len(set(idx.tolist())) == 7 and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.sum() == 7 and counts[0] >= 3 and counts[1] >= 2 and counts[2] >= 1


# ------------------------------------------------------------------------------------------------------
# batches
# ------------------------------------------------------------------------------------------------------


def small_dataset(n: int = 37, shape: tuple[int, int, int] = (3, 8, 8)) -> ArrayDataset:
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return ArrayDataset(x, torch.arange(n) % 5)


def epoch_batches(loader: BatchLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_batchloader_lengths_and_coverage():
    ds = small_dataset()
    loader = BatchLoader(ds, 10, shuffle=True, seed=1)
    assert len(loader) == 4 and len(BatchLoader(ds, 10, shuffle=True, drop_last=True)) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [10, 10, 10, 7]
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (10, 3, 8, 8)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    ids = torch.cat([(xb[:, 0, 0, 0] * 255).round().long() for xb, _ in batches])
    assert sorted(ids.tolist()) == list(range(37))  # every example exactly once
    plain = torch.cat([y for _, y in BatchLoader(ds, 8, shuffle=False)])
    assert torch.equal(plain, ds.labels)
    assert sum(len(y) for _, y in BatchLoader(ds, 10, shuffle=True, drop_last=True)) == 30


@pytest.mark.parametrize("augment", [False, True])
def test_batchloader_reproducible_per_epoch(augment):
    ds = small_dataset()
    a = BatchLoader(ds, 8, shuffle=True, augment=augment, seed=5)
    b = BatchLoader(ds, 8, shuffle=True, augment=augment, seed=5)
    e2_first = epoch_batches(a, 2)
    epoch_batches(a, 0)
    e2_again = epoch_batches(a, 2)
    e2_fresh = epoch_batches(b, 2)  # a new loader resumed at epoch 2 sees the same batches
    for (x1, y1), (x2, y2), (x3, y3) in zip(e2_first, e2_again, e2_fresh, strict=True):
        assert torch.equal(x1, x2) and torch.equal(x1, x3) and torch.equal(y1, y2) and torch.equal(y1, y3)
    e3 = epoch_batches(a, 3)
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(e2_first, e3, strict=True))
    other_seed = epoch_batches(BatchLoader(ds, 8, shuffle=True, augment=augment, seed=6), 2)
    assert not torch.equal(other_seed[0][0], e2_first[0][0])


def test_batchloader_epoch_advances_without_set_epoch():
    loader = BatchLoader(small_dataset(), 8, shuffle=True, seed=0)
    first = torch.cat([y for _, y in loader])
    assert loader.epoch == 1
    second = torch.cat([y for _, y in loader])
    assert not torch.equal(first, second)
    assert torch.equal(second, torch.cat([y for _, y in epoch_batches(loader, 1)]))
    with pytest.raises(ValueError):
        loader.set_epoch(-1)


def test_augmentation_keeps_shape_and_range_and_changes_images():
    ds = small_dataset(64, (3, 32, 32))
    x_aug = torch.cat([x for x, _ in BatchLoader(ds, 16, shuffle=False, augment=True, seed=0)])
    x_raw = torch.cat([x for x, _ in BatchLoader(ds, 16, shuffle=False, augment=False)])
    assert x_aug.shape == x_raw.shape == (64, 3, 32, 32) and x_aug.dtype == torch.float32
    assert 0.0 <= float(x_aug.min()) and float(x_aug.max()) <= 1.0
    changed = (x_aug != x_raw).flatten(1).any(1)
    assert changed.float().mean() > 0.8  # only the (offset 0, no flip) draws leave an image unchanged


def test_augment_batch_is_pad_crop_flip():
    x = torch.randint(1, 256, (20, 2, 5, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(len(x)):
        matches = []
        for dy in range(5):
            for dx in range(5):
                crop = padded[i, :, dy:dy + 5, dx:dx + 6]
                for f in (False, True):
                    if torch.equal(out[i], crop.flip(-1) if f else crop):
                        matches.append((dy, dx, f))
        assert matches, f"image {i} is not a padded crop (optionally flipped) of its input"
        flips += any(f for _, _, f in matches) and not any(not f for _, _, f in matches)
    assert 0 < flips < len(x)
