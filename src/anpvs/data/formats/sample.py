"""``mnist_sample``: 4,000 + 1,000 real MNIST digits bundled with the package (``anpvs/_data``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..base import SAMPLE_SOURCE, DataNotFoundError, RawData, register_format
from .idx import MNIST_PRESET


@register_format("mnist_sample", position=0, preset=MNIST_PRESET)
def _load_sample(data_dir: Path | None, download: bool) -> RawData:
    del data_dir, download  # the sample ships with the package
    ref = resources.files("anpvs").joinpath("_data", "mnist_sample.npz")
    try:
        with resources.as_file(ref) as path, np.load(path) as z:
            x_train, y_train, x_test, y_test = (z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except FileNotFoundError:
        raise DataNotFoundError("the bundled mnist_sample.npz is missing from the anpvs installation: "
                                "reinstall anpvs, or regenerate it with scripts/make_mnist_sample.py"
                                ) from None
    return RawData(x_train, y_train, x_test, y_test, 10, SAMPLE_SOURCE, tuple(str(i) for i in range(10)))
