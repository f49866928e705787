"""``cifar10`` / ``cifar100``: the python-pickle batches in ``<data_dir>/cifar-10-batches-py`` (or
``cifar-100-python``, fine labels), or ``data_dir`` pointing at that folder itself; read by a small reader
that never runs code from the files (torchvision is used only to download)."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import DataError
from ..base import DataNotFoundError, RawData, default_data_dir, log, register_format, via_torchvision
from . import cifar_jpeg

_CIFAR = {  # name -> (folder, train files, test files, label key, meta file, names key, classes, tv class)
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                "labels", "batches.meta", "label_names", 10, "CIFAR10"),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "fine_labels", "meta", "fine_label_names", 100,
                 "CIFAR100"),
}


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch may name: numpy's array, dtype and scalar reconstructors.

    Found from numpy itself (``__reduce__``), so both ``numpy.core`` and ``numpy._core`` spellings load."""
    allowed: dict[tuple[str, str], Any] = {}
    for obj in (np.zeros(1).__reduce__()[0], np.zeros(1).__reduce_ex__(5)[0], np.float64(0).__reduce__()[0],
                np.ndarray, np.dtype):
        mod = obj.__module__
        for m in {mod, mod.replace("numpy._core", "numpy.core"), mod.replace("numpy.core", "numpy._core")}:
            allowed[(m, obj.__name__)] = obj
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _latin1_encode  # how Python 3 writes bytes in protocol-2 pickles
    return allowed


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to what pickle protocol 2 needs: a ``str`` to ``latin1`` bytes."""
    if not isinstance(obj, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise _Refused("refused _codecs.encode of something other than latin1 text")
    return obj.encode("latin1", errors="strict")


class _Refused(pickle.UnpicklingError):
    """A pickle that names a callable outside the allowed set (code, not data)."""


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, bytes, str, numbers and numpy arrays; refuses every other global.

    A pickle runs code only through the callables its GLOBAL/STACK_GLOBAL opcodes name; refusing all but
    numpy's array reconstructors means a crafted batch file cannot run anything."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refused persistent id")


def safe_unpickle(data: bytes, where: str = "pickle") -> Any:
    """Unpickle ``data`` with :class:`_SafeUnpickler` (``encoding="bytes"`` for Python 2 pickles).

    Raises :class:`DataError` for anything that is not plain data (code, objects, corrupt streams)."""
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"{where} is not a plain-data CIFAR batch ({exc}); it was not loaded, since unpickling "
                        f"it could run code: replace it with the official files") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError) as exc:
        raise DataError(f"{where} is not a readable CIFAR batch ({type(exc).__name__}); replace it with the "
                        f"official files") from None


def _unpickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle (written by Python 2, hence latin1/bytes keys) with str keys.

    Read with :func:`safe_unpickle`: only plain data and numpy arrays, never code."""
    obj = safe_unpickle(Path(path).read_bytes(), where=str(path))
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _read_cifar_batches(paths: Sequence[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for p in paths:
        d = _unpickle(p)
        if "data" not in d or label_key not in d:
            raise DataError(f"{p}: CIFAR batch without 'data' and '{label_key}' entries (keys: {sorted(d)})")
        data = d["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
            raise DataError(f"{p}: 'data' must be a uint8 numpy array (got {type(data).__name__}); replace it "
                            f"with the official files")
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{p}: 'data' has shape {data.shape}, expected (N, 3072)")
        try:
            labels = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{p}: '{label_key}' must be a list of integer labels") from None
        if len(labels) != len(data):
            raise DataError(f"{p}: {len(data)} images but {len(labels)} labels")
        xs.append(data.reshape(-1, 3, 32, 32))  # rows are 1024 R, 1024 G, 1024 B values: already CHW
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def _load_cifar(name: str) -> Callable[[Path | None, bool], RawData]:
    folder_name, train_files, test_files, label_key, meta_file, names_key, n_classes, tv_class = _CIFAR[name]

    def find(root: Path) -> Path | None:
        for folder in (root / folder_name, root):
            if all((folder / f).is_file() for f in train_files + test_files):
                return folder
        return None

    def read(folder: Path) -> RawData:
        x_train, y_train = _read_cifar_batches([folder / f for f in train_files], label_key)
        x_test, y_test = _read_cifar_batches([folder / f for f in test_files], label_key)
        classes = None
        if (folder / meta_file).is_file():
            try:
                names = _unpickle(folder / meta_file).get(names_key)
                if names is not None and len(names) == n_classes:
                    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
            except Exception:  # the class names are a nicety; never fail on them
                log.debug("could not read class names from %s", folder / meta_file, exc_info=True)
        return RawData(x_train, y_train, x_test, y_test, n_classes, f"{folder} (python batches)", classes)

    def load(data_dir: Path | None, download: bool) -> RawData:
        root = data_dir if data_dir is not None else default_data_dir()
        folder = find(root) if root.is_dir() else None
        if folder is not None:
            return read(folder)
        hint = f"--data-dir pointing at a folder holding {folder_name}/"
        if name == "cifar10":
            jpeg = cifar_jpeg.find(root)
            if jpeg is not None:
                x_train, y_train, x_test, y_test, source = cifar_jpeg.read(jpeg)
                return RawData(x_train, y_train, x_test, y_test, 10, source, cifar_jpeg.CLASSES)
            hint += (" or the CIFAR-10 JPEG layout (cifar10_jpeg.tar.gz, or its extracted train/<class>/ and "
                     "test/<class>/ folders)")
        if not download:
            raise DataNotFoundError(
                f"{name} not found under '{root}': pass --download to fetch it with torchvision, or {hint}")

        def fetch() -> RawData:
            from torchvision import datasets

            cls = getattr(datasets, tv_class)
            cls(root=str(root), train=True, download=True)
            cls(root=str(root), train=False, download=True)
            found = find(root)
            if found is None:
                raise FileNotFoundError(f"torchvision did not create {root / folder_name}")
            return read(found)

        return via_torchvision(name, root, download, fetch, hint)

    return load



#: the paper's CIFAR hyperparameters (docs/reference.md §5; eps and steps in pixel units)
_PRESET = {
    "model.name": "vgg16",
    "attack.eps": 0.03, "attack.step_size": 0.007, "attack.steps": 10,
    "eval.eps": 0.03, "eval.step_size": 0.007, "eval.steps": 40,
    "train.lr_milestones": [0.5, 0.8], "method.admm_sparsity": 0.75,
}
register_format("cifar10", position=3, preset={**_PRESET, "method.beta": 2.0, "method.vs_weight": 1e-4}
                )(_load_cifar("cifar10"))
register_format("cifar100", position=4, preset={**_PRESET, "method.beta": 1.0, "method.vs_weight": 0.1}
                )(_load_cifar("cifar100"))
