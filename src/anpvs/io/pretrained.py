"""The pretrained-model registry: ``pretrained:NAME`` wherever anpvs takes a checkpoint path.

The models live in one folder (:func:`registry_dir`): the package's own ``anpvs/pretrained/``, or the folder
named by ``$ANPVS_PRETRAINED_DIR``. Its ``manifest.yaml`` (read by the bounded YAML loader) lists each model::

    format: anpvs-pretrained
    format_version: 1
    models:
    - name: mnist/anp_vs                      # pretrained:mnist/anp_vs
      file: mnist/anp_vs.pt                   # relative to the folder
      sha256: ...                             # of the file's bytes, checked before torch.load
      size: 1723456
      compact: {file: mnist/anp_vs.compact.pt, sha256: ..., size: ...}   # pretrained:mnist/anp_vs.compact
      model: lenet5_caffe_bbd
      method: anp_vs
      dataset: mnist
      training: {command: anpvs train ..., protocol: ..., epochs: 20, ...}
      metrics: {n: 10000, clean_acc: ..., pgd_acc: ..., vulnerability: ..., flops_speedup: ..., ...}
      check: {dataset: mnist_test_sample, test_limit: 200, seed: 0, clean_acc: ..., pgd_acc: ..., command: ...}

``check`` (optional) is the model evaluated again by ``anpvs eval pretrained:NAME`` on a fixed subset
(``dataset``, ``test_limit`` images, attack seed ``seed``) that runs anywhere for MNIST models (the bundled
``mnist_test_sample``); ``tests/test_pretrained.py`` reproduces it for each shipped model whose data it finds.
``scripts/make_pretrained.py`` writes it from finished runs. A model is read by :func:`read_verified`: the
file's size and SHA-256 must be the manifest's before anything parses it
(:func:`anpvs.models.checkpoint.read_checkpoint` then validates it like any checkpoint file). Commands never write
into the folder: the default outputs of
``anpvs eval / check / compact pretrained:NAME`` go to ``runs/pretrained/NAME/`` under the current folder
(:func:`output_home`).

Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..core.errors import AnpvsError, ConfigError, short

PREFIX = "pretrained:"
#: a folder holding another registry (its manifest.yaml and files) instead of the package's own
ENV = "ANPVS_PRETRAINED_DIR"
MANIFEST = "manifest.yaml"
FORMAT = "anpvs-pretrained"
#: the suffix of a name that picks a model's compacted twin (``pretrained:mnist/anp_vs.compact``)
COMPACT = ".compact"
#: where the default outputs of a command on ``pretrained:NAME`` go, under the current folder
OUTPUT_ROOT = Path("runs") / "pretrained"
#: largest model file read (a checkpoint of the paper's VGG-16 is ~60 MB)
MAX_BYTES = 1 << 30
BUILD = "python scripts/make_pretrained.py NAME=RUN_DIR ... (README, Pretrained models)"

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}/[a-z0-9][a-z0-9_-]{0,59}")
_SHA = re.compile(r"[0-9a-f]{64}")
_DATASET = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class PretrainedError(AnpvsError):
    """A registry folder, manifest or model file that is not what it claims (exit status 1)."""


@dataclass(frozen=True)
class ModelFile:
    """One file of the registry: its path relative to the folder, SHA-256 and size in bytes."""

    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Pretrained:
    """One manifest entry (the model and, for a pruned one, its compacted twin)."""

    name: str
    weights: ModelFile
    compact: ModelFile | None
    info: dict[str, Any] = field(default_factory=dict)  # model, method, dataset, training, metrics, check


def registry_dir() -> Path:
    """The folder of the registry: ``$ANPVS_PRETRAINED_DIR`` when set, else the package's ``pretrained/``."""
    env = os.environ.get(ENV, "").strip()
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "pretrained"


def check_name(name: str) -> str:
    """``name`` if it is a valid model name (``dataset/model``: lowercase letters, digits, ``_`` and ``-``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"pretrained model name {short(name)} is not of the form dataset/model (lowercase letters, "
                          f"digits, _ and -), e.g. mnist/anp_vs")
    return name


def is_spec(checkpoint: Any) -> bool:
    """Whether ``checkpoint`` names a pretrained model (``"pretrained:NAME"``) rather than a file."""
    return isinstance(checkpoint, str) and checkpoint.startswith(PREFIX)


def _bad(where: Path, problem: str) -> PretrainedError:
    return PretrainedError(f"pretrained-model manifest {str(where)!r}: {problem}; reinstall anpvs, or rebuild the "
                           f"models with {BUILD}")


def _file(raw: Any, where: Path, what: str) -> ModelFile:
    if not isinstance(raw, dict):
        raise _bad(where, f"{what} is not a mapping of file, sha256 and size")
    path, digest, size = raw.get("file"), raw.get("sha256"), raw.get("size")
    parts = PurePosixPath(path).parts if isinstance(path, str) else ()
    if not parts or path.startswith("/") or "\\" in path or ".." in parts or not path.endswith(".pt"):
        raise _bad(where, f"{what} names the file {short(path)}, not a relative .pt path inside the folder")
    if not isinstance(digest, str) or not _SHA.fullmatch(digest):
        raise _bad(where, f"{what} has no SHA-256 (64 lowercase hex digits; got {short(digest)})")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_BYTES:
        raise _bad(where, f"{what} has no size in bytes (got {short(size)})")
    return ModelFile(path, digest, size)


def _count(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def _check(raw: Any, where: Path, name: str) -> None:
    """The optional ``check`` entry: a dataset name, a positive ``test_limit`` and accuracies in [0, 100]."""
    if raw is None:
        return
    what = f"{name} check"
    if not isinstance(raw, dict):
        raise _bad(where, f"{what} is not a mapping of dataset, test_limit, clean_acc and pgd_acc")
    if not isinstance(raw.get("dataset"), str) or not _DATASET.fullmatch(raw["dataset"]):
        raise _bad(where, f"{what} names no dataset such as mnist_test_sample (got {short(raw.get('dataset'))})")
    if not _count(raw.get("test_limit"), 1):
        raise _bad(where, f"{what} has no test_limit, a positive number of images (got {short(raw.get('test_limit'))})")
    for key, minimum in (("n", 1), ("seed", 0)):
        if raw.get(key) is not None and not _count(raw[key], minimum):
            raise _bad(where, f"{what} has a {key} that is not an integer >= {minimum} (got {short(raw[key])})")
    for key in ("clean_acc", "pgd_acc"):
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise _bad(where, f"{what} has no {key}, an accuracy in [0, 100] (got {short(value)})")
    if raw.get("command") is not None and not isinstance(raw["command"], str):
        raise _bad(where, f"{what} has a command that is not a string (got {short(raw['command'])})")


def read_manifest(folder: str | os.PathLike[str] | None = None) -> list[Pretrained]:
    """The models of the registry in ``folder`` (default :func:`registry_dir`), checked; [] for an empty one."""
    from .yamlfile import read_yaml

    folder = registry_dir() if folder is None else Path(folder)
    where = folder / MANIFEST
    fix = (f"set {ENV} to a folder written by scripts/make_pretrained.py, or unset it" if os.environ.get(ENV)
           else "reinstall anpvs")
    data = read_yaml(where, what="pretrained-model manifest", error=PretrainedError, fix=fix)
    version = data.get("format_version") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != FORMAT or type(version) is not int or version != 1:
        raise _bad(where, f"it is not a format_version 1 '{FORMAT}' manifest")
    entries = data.get("models") or []
    if not isinstance(entries, list):
        raise _bad(where, "its models entry is not a list")
    models: list[Pretrained] = []
    for i, raw in enumerate(entries):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not _NAME.fullmatch(raw["name"]):
            got = raw.get("name") if isinstance(raw, dict) else raw
            raise _bad(where, f"model {i + 1} has no valid name such as mnist/anp_vs (got {short(got)})")
        name = raw["name"]
        if any(m.name == name for m in models):
            raise _bad(where, f"it lists {name} twice")
        compact = None if raw.get("compact") is None else _file(raw["compact"], where, f"{name} compact")
        _check(raw.get("check"), where, name)
        info = {k: v for k, v in raw.items() if k not in ("name", "file", "sha256", "size", "compact")}
        models.append(Pretrained(name, _file(raw, where, name), compact, info))
    return models


def known(models: list[Pretrained]) -> str:
    """The names a spec may use, for error messages."""
    names = [n for m in models for n in (m.name, *([m.name + COMPACT] if m.compact else []))]
    return ", ".join(names)


def lookup(spec: str) -> tuple[Pretrained, ModelFile]:
    """The manifest entry and the file (the model's own or its compacted twin) that ``spec`` names."""
    name = spec[len(PREFIX):] if is_spec(spec) else spec
    models = read_manifest()
    if not models:
        where = (f"the registry {ENV}={os.environ[ENV]!r} holds none" if os.environ.get(ENV, "").strip()
                 else "none are shipped in this version of anpvs")
        raise ConfigError(f"{short(PREFIX + name, 70)} is not available: {where} (anpvs pretrained); build them from "
                          f"finished runs with {BUILD}")
    for m in models:
        if name == m.name:
            return m, m.weights
        if m.compact is not None and name == m.name + COMPACT:
            return m, m.compact
    raise ConfigError(f"unknown pretrained model {short(name, 60)}; known: {known(models)} (anpvs pretrained)")


def model_file(spec: str) -> Path:
    """The path of the file ``spec`` names (not verified: :func:`read_verified` reads it)."""
    _, f = lookup(spec)
    return registry_dir() / f.file


def is_compact_spec(spec: str) -> bool:
    """Whether ``spec`` names a compacted twin (known from the manifest, without reading the file)."""
    m, f = lookup(spec)
    return f is m.compact


def output_home(spec: str) -> Path:
    """Where the default outputs of a command on ``spec`` go: a notional checkpoint path in
    ``runs/pretrained/NAME/`` under the current folder (``checkpoint.pt``, or ``checkpoint.compact.pt`` for a
    compacted twin), so that ``eval.json``, ``eval_compact.json``, ``check.json``, ``checkpoint.compact.pt``
    are named as in a run folder and nothing is written into the registry."""
    m, f = lookup(spec)
    return OUTPUT_ROOT / m.name / ("checkpoint.compact.pt" if f is m.compact else "checkpoint.pt")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_verified(spec: str) -> bytes:
    """The bytes of the file ``spec`` names, after checking them against the manifest's size and SHA-256
    (:class:`PretrainedError`, one line, when they differ: nothing else has read the file then)."""
    from .rundir import check_inside

    folder = registry_dir()
    _, f = lookup(spec)
    path = check_inside(folder, folder / f.file, PretrainedError)
    fix = f"reinstall anpvs, or rebuild the models with {BUILD}"
    try:
        size = path.stat().st_size
        if size != f.size:
            raise PretrainedError(f"{spec}: {str(path)!r} has {size} bytes, the manifest says {f.size}; it is "
                                  f"damaged or was replaced: {fix}")
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise PretrainedError(f"{spec}: its file {str(path)!r} is missing; {fix}") from None
    except OSError as e:
        raise PretrainedError(f"{spec}: {str(path)!r} cannot be read ({e.strerror or type(e).__name__}); "
                              f"{fix}") from None
    digest = sha256_bytes(data)
    if digest != f.sha256:
        raise PretrainedError(f"{spec}: {str(path)!r} is not the file the manifest lists (SHA-256 {digest[:12]}..., "
                              f"expected {f.sha256[:12]}...); it is damaged or was tampered with and is not "
                              f"loaded: {fix}")
    return data


def _cell(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{digits}f}"


def format_table(models: list[Pretrained], folder: str | os.PathLike[str] | None = None) -> str:
    """What ``anpvs pretrained`` prints: one row per model of the registry in ``folder`` (default
    :func:`registry_dir`) with the metrics of its evaluation records."""
    folder = registry_dir() if folder is None else Path(folder)
    if not models:
        none = ("no pretrained models are shipped in this version of anpvs" if folder == registry_dir()
                and not os.environ.get(ENV, "").strip() else "the pretrained-model registry holds no models")
        return (f"{none} (registry: {folder}).\n"
                f"Build them from finished runs (e.g. of anpvs reproduce --table mnist --scale full) with\n"
                f"  {BUILD}\n"
                f"or point {ENV} at a folder built that way.")
    head = ["name", "method", "dataset", "n", "clean", "PGD", "AutoAttack (n)", "V", "FLOPs x", "measured x",
            "MB", "compacted"]
    rows = []
    for m in models:
        k = m.info.get("metrics") or {}
        aa = k.get("autoattack") or {}
        steps = (k.get("attack") or {}).get("steps")
        rows.append([m.name, str(m.info.get("method", "-")), str(m.info.get("dataset", "-")), str(k.get("n", "-")),
                     _cell(k.get("clean_acc")), _cell(k.get("pgd_acc")) + (f" ({steps})" if steps else ""),
                     f"{_cell(aa.get('autoattack_acc'))} ({aa['n']})" if aa.get("n") else "-",
                     _cell(k.get("vulnerability"), 3), _cell(k.get("flops_speedup")),
                     _cell(k.get("wallclock_speedup_b256")), f"{m.weights.size / 1e6:.2f}",
                     f"{m.name}{COMPACT} ({m.compact.size / 1e6:.2f} MB)" if m.compact else "-"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, "",
                      "clean / PGD (steps) / V: accuracy (%) and vulnerability on the n test images of the model's "
                      "evaluation record; measured x: wall-clock speed-up of the compacted network at batch 256.",
                      f"Use them as pretrained:NAME in anpvs eval / check / compact / --attack-source, or "
                      f"anpvs.load_pretrained('NAME') (registry: {folder})."])


__all__ = ["COMPACT", "ENV", "MANIFEST", "OUTPUT_ROOT", "PREFIX", "ModelFile", "Pretrained", "PretrainedError",
           "check_name", "format_table", "is_compact_spec", "is_spec", "lookup", "model_file", "output_home",
           "read_manifest", "read_verified", "registry_dir", "sha256_bytes", "sha256_file"]
