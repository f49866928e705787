#!/usr/bin/env python
"""Build the bundled MNIST test digits ``src/anpvs/_data/mnist_test_sample.npz``.

A seeded subset of the official MNIST *test* file (``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte``,
gzipped or not): exactly ``--per-class`` digits of every class (default 200, so 2,000 digits), drawn with
``numpy.random.default_rng(seed)`` (one generator, classes visited in order 0-9, each class's positions
chosen without replacement) and kept in their original file order. The npz records the positions it took
(``indices``, 0-9999) and the SHA-256 of the two decompressed IDX files, so anyone can check the digits
against their own copy of MNIST.

Usage::

    python scripts/make_mnist_test_sample.py DATA_DIR [--out PATH] [--seed 0] [--per-class 200]

``DATA_DIR`` holds the two test files (e.g. the four files of the official download). The output is
byte-for-byte reproducible for the same input, seed and numpy version.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

IMAGES = "t10k-images-idx3-ubyte"
LABELS = "t10k-labels-idx1-ubyte"
N_TEST = 10_000
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "anpvs" / "_data" / "mnist_test_sample.npz"


def read_idx_bytes(folder: Path, base: str) -> bytes:
    """The decompressed bytes of ``folder/base`` or ``folder/base.gz``."""
    for name, opener in ((base, open), (base + ".gz", gzip.open)):
        if (folder / name).is_file():
            with opener(folder / name, "rb") as f:
                return f.read()
    raise SystemExit(f"{base}[.gz] not found in {folder}")


def parse_idx(buf: bytes, ndim: int) -> np.ndarray:
    """A uint8 IDX array of ``ndim`` dimensions (the header: two zero bytes, type 0x08, ndim, big-endian sizes)."""
    if buf[:4] != bytes([0, 0, 0x08, ndim]):
        raise SystemExit(f"not a uint8 IDX file of {ndim} dimensions (header {buf[:4].hex()})")
    shape = tuple(int(s) for s in np.frombuffer(buf, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise SystemExit(f"IDX header announces {shape} but {data.size} bytes follow")
    return data.reshape(shape)


def select(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted positions of ``per_class`` digits of every class 0-9, drawn with ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(10):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class:
            raise SystemExit(f"class {c} has only {len(pool)} digits, fewer than --per-class {per_class}")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def build(data_dir: Path, out: Path, *, seed: int = 0, per_class: int = 200) -> dict[str, np.ndarray]:
    """Write the npz from the IDX files in ``data_dir``; returns its arrays."""
    raw_x, raw_y = read_idx_bytes(data_dir, IMAGES), read_idx_bytes(data_dir, LABELS)
    images, labels = parse_idx(raw_x, 3), parse_idx(raw_y, 1)
    if images.shape != (N_TEST, 28, 28) or labels.shape != (N_TEST,):
        raise SystemExit(f"expected the MNIST test file (10,000 28x28 digits), got images {images.shape}, "
                         f"labels {labels.shape}")
    if labels.max() > 9:
        raise SystemExit(f"labels outside 0..9 (max {labels.max()})")
    idx = select(labels, per_class, seed)
    arrays = {
        "x_test": images[idx],
        "y_test": labels[idx],
        "indices": idx.astype(np.int64),
        "source": np.array(f"MNIST test files {IMAGES}, {LABELS}: {per_class} digits per class, "
                           f"numpy default_rng({seed})"),
        "images_sha256": np.array(hashlib.sha256(raw_x).hexdigest()),
        "labels_sha256": np.array(hashlib.sha256(raw_y).hexdigest()),
        "seed": np.array(seed, dtype=np.int64),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help=f"folder holding {IMAGES}[.gz] and {LABELS}[.gz]")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output .npz path")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    parser.add_argument("--per-class", type=int, default=200, help="digits of every class")
    args = parser.parse_args(argv)
    out = Path(args.out)
    arrays = build(Path(args.data_dir).expanduser(), out, seed=args.seed, per_class=args.per_class)
    print(f"wrote {out} ({out.stat().st_size} bytes): {len(arrays['indices'])} test digits, images sha256 "
          f"{arrays['images_sha256']}, labels sha256 {arrays['labels_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
