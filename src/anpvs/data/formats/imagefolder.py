"""``imagefolder``: your own images, ``<data_dir>/train/<class>/*.png`` and ``<data_dir>/test/<class>/*.png``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..base import DataNotFoundError, RawData, register_format

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


@register_format("imagefolder", position=5)
def _load_imagefolder(data_dir: Path | None, download: bool) -> RawData:
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
    return RawData(arr[:n], labels[:n], arr[n:], labels[n:], len(classes), f"{data_dir} (image folders)",
                tuple(classes))
