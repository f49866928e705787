"""``mnist_test_sample``: 2,000 real MNIST *test* digits bundled with the package (``anpvs/_data``), so that any
MNIST checkpoint can be evaluated on official test digits offline (``anpvs eval CKPT --dataset
mnist_test_sample``; ``anpvs demo``'s pretrained comparison).

Test split: ``mnist_test_sample.npz``, 200 digits of every class drawn with a fixed seed from MNIST's
``t10k`` files by ``scripts/make_mnist_test_sample.py``, which records the positions it took (0-9999).
Training split: the 4,000 training digits of ``mnist_sample`` (MNIST *training* digits, none of them in the
test split), so that the name also works for ``anpvs train``; the 1,000 test digits of ``mnist_sample``
are not used."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..base import DataNotFoundError, RawData, register_format
from .idx import MNIST_PRESET

FILE = "mnist_test_sample.npz"
SOURCE = ("bundled sample: 2,000 real MNIST test digits (t10k files, 200 per class; "
          "training split: mnist_sample's 4,000 MNIST training digits)")


def _arrays(name: str, keys: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    ref = resources.files("anpvs").joinpath("_data", name)
    try:
        with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as z:
            return tuple(z[k] for k in keys)
    except FileNotFoundError:
        raise DataNotFoundError(f"the bundled {name} is missing from the anpvs installation: reinstall anpvs "
                                f"(src/anpvs/_data/README.md says how it is made)") from None


@register_format("mnist_test_sample", position=0, preset=MNIST_PRESET)
def _load_test_sample(data_dir: Path | None, download: bool) -> RawData:
    del data_dir, download  # bundled with the package
    x_test, y_test = _arrays(FILE, ("x_test", "y_test"))
    x_train, y_train = _arrays("mnist_sample.npz", ("x_train", "y_train"))
    return RawData(x_train, y_train, x_test, y_test.astype(np.int64), 10, SOURCE, tuple(str(i) for i in range(10)))
