"""``imagefolder``: your own images, ``<data_dir>/train/<class>/*.png`` and ``<data_dir>/test/<class>/*.png``.

Pixel modes (docs/reliability.md): 8-bit gray (``L``, ``1``) and 16-bit gray (``I;16``, scaled to 8 bit by
65535 -> 255, not clipped) make a gray dataset; colour modes (``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``,
palette ``P``) are converted to RGB, and gray images in a dataset with colour ones too. An alpha channel
(``RGBA``, ``LA``, ``PA``, a palette or colour key with transparency) is dropped when it is opaque
everywhere; an image with any transparent pixel is refused, since its colour there depends on a background
anpvs would have to guess. Other modes (32-bit ``I`` and ``F``, ``LAB``, ``HSV``, ...) are refused naming the
file. Symbolic links to folders are followed, but a folder reached twice (a link loop, or one folder linked
into two classes or splits) is refused, and so is an image declaring more pixels than PIL's
``MAX_IMAGE_PIXELS`` (a decompression bomb).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...core.errors import DataError
from ..base import DataNotFoundError, RawData, register_format

_GRAY_MODES = ("1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N")
_COLOR_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "P", "PA")
_ALPHA_MODES = ("LA", "La", "RGBA", "RGBa", "PA")


def _open_image(path: Path):
    """``PIL.Image.open`` with a one-line :class:`DataError` for files that are not images or that declare more
    pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (call it under :func:`_quiet_pil`)."""
    from PIL import Image

    try:
        return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"imagefolder: '{path}' declares more than {Image.MAX_IMAGE_PIXELS} pixels (a "
                        f"decompression bomb, or an image far too large to train on); resize or remove it") from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"imagefolder: '{path}' is not a readable image ({type(exc).__name__}); remove or "
                        f"replace the file") from None


@contextlib.contextmanager
def _quiet_pil() -> Iterator[None]:
    """PIL's warnings (EXIF, palettes) stay off stderr; its decompression-bomb warning becomes an error."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _is_gray(im, path: Path) -> bool:
    """Whether an opened image is gray (else colour); refuses modes without a known 8-bit conversion."""
    if im.mode in _GRAY_MODES or (im.mode == "I" and im.format == "PNG"):  # older PIL: 16-bit PNG gray is "I"
        return True
    if im.mode in _COLOR_MODES:
        return False
    raise DataError(f"imagefolder: '{path}' has pixel mode {im.mode}, which anpvs does not convert (its value "
                    f"range is not known); save it as 8- or 16-bit gray or as RGB")


def _pixels(im, path: Path, gray: bool) -> np.ndarray:
    """``(C, H, W)`` uint8 pixels of an opened image (C = 1 for a gray dataset, else 3)."""
    mode, transparent = im.mode, False
    if mode.startswith("I"):  # 16-bit gray: 0..65535 -> 0..255, rounded (PIL's convert("L") clips at 255)
        a = np.asarray(im).astype(np.int64)
        key = im.info.get("transparency")
        transparent = isinstance(key, int) and bool((a == key).any())
        a = ((a * 255 + 32767) // 65535).astype(np.uint8)
    else:
        alpha = mode in _ALPHA_MODES or "transparency" in im.info
        target = ("LA" if gray else "RGBA") if alpha else ("L" if gray else "RGB")
        a = np.asarray(im if mode == target else im.convert(target), dtype=np.uint8)
        if alpha:
            transparent = bool((a[..., -1] != 255).any())
            a = a[..., 0] if gray else a[..., :3]
    if transparent:
        raise DataError(f"imagefolder: '{path}' (mode {mode}) has transparent pixels; flatten it onto the "
                        f"background you mean (or remove its alpha channel) and save it again")
    if a.ndim == 2:
        return a[None] if gray else np.repeat(a[None], 3, axis=0)
    return a.transpose(2, 0, 1)


def _scan_split(split_dir: Path, seen: dict[str, Path]) -> tuple[list[str], list[tuple[Path, str]]]:
    """Classes and ``(image, class)`` items of a split; ``seen`` maps the real path of every folder walked so
    far (both splits) to where it was reached, so a link loop or a folder linked twice is refused."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    def visit(folder: Path) -> None:
        real = os.path.realpath(folder)
        if real in seen:
            raise DataError(f"imagefolder: '{folder}' is the folder '{seen[real]}' again (a symbolic link loop, "
                            f"or one folder linked twice); remove the link")
        seen[real] = folder

    visit(split_dir)
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    items: list[tuple[Path, str]] = []
    for c in classes:
        visit(split_dir / c)
        for root, dirs, files in os.walk(split_dir / c, followlinks=True):
            dirs.sort()
            for d in dirs:  # before os.walk descends into them
                visit(Path(root) / d)
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

    seen: dict[str, Path] = {}
    classes, train_items = _scan_split(train_dir, seen)
    test_classes, test_items = _scan_split(test_dir, seen)
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
    with _quiet_pil():
        for path, _ in items:  # pass 1: headers only (size and mode), no pixel decoding
            with _open_image(path) as im:
                if size is None:
                    size, first = im.size, path
                elif im.size != size:
                    raise DataError(f"imagefolder: image '{path}' is {im.size[0]}x{im.size[1]} (WxH) but "
                                    f"'{first}' is {size[0]}x{size[1]}; all images must have the same size "
                                    f"(resize them beforehand)")
                gray = _is_gray(im, path) and gray
        assert size is not None
        arr = np.empty((len(items), 1 if gray else 3, size[1], size[0]), dtype=np.uint8)
        for i, (path, _) in enumerate(items):  # pass 2: decode straight into the array
            try:
                with _open_image(path) as im:
                    arr[i] = _pixels(im, path, gray)
            except DataError:
                raise
            except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
                raise DataError(f"imagefolder: cannot decode '{path}' ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:120]}); remove or replace the file") from None
    labels = np.array([class_to_idx[c] for _, c in items], dtype=np.int64)
    n = len(train_items)
    return RawData(arr[:n], labels[:n], arr[n:], labels[n:], len(classes), f"{data_dir} (image folders)",
                tuple(classes))
