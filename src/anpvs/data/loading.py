"""``load_dataset``: a registered source format's arrays, checked, split and subsampled with seeded streams."""

from __future__ import annotations

import logging
import operator
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import DataError
from ..core.registry import DATA_FORMATS
from .base import (
    _STREAM_TEST_LIMIT,
    _STREAM_TRAIN_LIMIT,
    _STREAM_VAL,
    ArrayDataset,
    DataSplits,
    dataset_names,
)

log = logging.getLogger(__name__)


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
        name: a registered dataset, :func:`~anpvs.data.dataset_names` (case-insensitive; ``-`` is accepted for ``_``).
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
    key = canonical_name(name)
    val_size = _check_count("val_size", val_size, minimum=0)
    train_limit = None if train_limit is None else _check_count("train_limit", train_limit, minimum=1)
    test_limit = None if test_limit is None else _check_count("test_limit", test_limit, minimum=1)
    seed = operator.index(seed)

    raw = DATA_FORMATS.get(key)(None if data_dir is None else Path(data_dir).expanduser(), bool(download))
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


def canonical_name(name: str) -> str:
    """``name`` as the registry spells it (case-insensitive, ``-`` for ``_``); an unknown one is a
    :class:`DataError` listing the registered names."""
    key = str(name).strip().lower().replace("-", "_")
    names = dataset_names()
    if key not in names:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(names)}")
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
