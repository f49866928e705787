"""``mnist`` / ``fashion_mnist``: the four IDX files (gzipped or not) directly inside ``data_dir`` or in
torchvision's ``<data_dir>/MNIST/raw`` (``FashionMNIST/raw``), read by a small parser here; otherwise
torchvision's ``MNIST`` / ``FashionMNIST`` classes (which can also download)."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import DataError
from ..base import DataNotFoundError, RawData, default_data_dir, register_format, via_torchvision

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_HINT = "train-images-idx3-ubyte[.gz] and the three other MNIST-format IDX files"
#: the paper's MNIST hyperparameters (docs/reference.md §5; eps and steps in pixel units), the dataset preset of
#: every 28x28 digit-like format (``mnist``, ``fashion_mnist``, ``mnist_sample``)
MNIST_PRESET = {
    "model.name": "lenet5_caffe",
    "attack.eps": 0.3, "attack.step_size": 0.01, "attack.steps": 20,
    "eval.eps": 0.3, "eval.step_size": 0.01, "eval.steps": 40,
    "method.beta": 4.0, "method.vs_weight": 1e-3,
    "train.lr_milestones": [0.5, 0.7],
}
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


def _load_mnist_like(name: str) -> Callable[[Path | None, bool], RawData]:
    tv_class, tv_folder, classes = _MNIST_LIKE[name]

    def load(data_dir: Path | None, download: bool) -> RawData:
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
                return RawData(arrays["x_train"], arrays["y_train"].astype(np.int64), arrays["x_test"],
                            arrays["y_test"].astype(np.int64), 10, f"{folder} (IDX files)", classes)

        def read_with_torchvision() -> RawData:
            from torchvision import datasets

            cls = getattr(datasets, tv_class)
            tr = cls(root=str(root), train=True, download=download)
            te = cls(root=str(root), train=False, download=download)
            return RawData(tr.data, tr.targets, te.data, te.targets, 10, f"{root} (torchvision {tv_class})",
                        classes)

        hint = f"--data-dir pointing at a folder holding {_IDX_HINT}"
        if not download and not (root / tv_folder).is_dir():  # nothing torchvision could read either
            raise DataNotFoundError(
                f"{name} not found under '{root}': pass --download to fetch it with torchvision, or {hint}")
        return via_torchvision(name, root, download, read_with_torchvision, hint)

    return load




register_format("mnist", position=1, preset=MNIST_PRESET)(_load_mnist_like("mnist"))
register_format("fashion_mnist", position=2, preset=MNIST_PRESET)(_load_mnist_like("fashion_mnist"))
