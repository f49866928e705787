"""Datasets as in-memory uint8 tensors, plus a fast, reproducible batch iterator.

Every dataset is loaded completely into memory as ``uint8`` images of shape ``(N, C, H, W)`` and ``int64``
labels; batches are converted to ``float32`` in ``[0, 1]`` when they are fetched. Nothing is normalized
here: the models normalize their inputs themselves, so adversarial perturbations live in pixel space.

Sources (``name`` -> where the data comes from), one module each in :mod:`anpvs.data.formats`:

- ``mnist_sample``: 4,000 + 1,000 real MNIST digits bundled with the package (``anpvs/_data``).
- ``mnist_test_sample``: the same 4,000 training digits with 2,000 real MNIST *test* digits (200 per class,
  bundled too): evaluates full-data MNIST models without the dataset on disk (``anpvs eval --dataset``).
- ``mnist`` / ``fashion_mnist``: the four IDX files (gzipped or not) directly inside ``data_dir`` or in
  torchvision's ``<data_dir>/MNIST/raw`` (``FashionMNIST/raw``), read by a small parser here; otherwise
  torchvision's ``MNIST`` / ``FashionMNIST`` classes (which can also download).
- ``cifar10`` / ``cifar100``: the python-pickle batches in ``<data_dir>/cifar-10-batches-py`` (or
  ``cifar-100-python``, fine labels), or ``data_dir`` pointing at that folder itself; read by a small
  reader here (torchvision is used only to download); ``cifar10`` also reads the JPEG layout (class folders,
  packed or extracted), decoded once and cached as ``.npy``.
- ``imagefolder``: ``<data_dir>/train/<class>/*.png`` and ``<data_dir>/test/<class>/*.png``.

When ``data_dir`` is ``None`` the default root is ``$ANPVS_DATA_DIR`` or ``~/.cache/anpvs/data``.
"""

from .base import (
    AUGMENT_PAD,
    ArrayDataset,
    DataNotFoundError,
    DataSplits,
    RawData,
    dataset_names,
    default_data_dir,
    register_format,
)
from .batches import BatchLoader, augment_batch
from .formats.cifar import safe_unpickle
from .formats.idx import read_idx
from .loading import canonical_name, load_dataset


def __getattr__(name: str):
    if name == "DATASETS":  # the registered names, in listing order (the format modules are imported on use)
        return dataset_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AUGMENT_PAD", "DATASETS", "ArrayDataset", "BatchLoader", "DataNotFoundError", "DataSplits", "RawData",
           "augment_batch", "canonical_name", "dataset_names", "default_data_dir", "load_dataset", "read_idx",
           "register_format", "safe_unpickle"]
