"""Self-describing checkpoints, written atomically and loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors and primitive containers::

    {"format": "anpvs-checkpoint", "format_version": 1, "anpvs_version": ..., "git_commit": ...,
     "model_name": ..., "model_kwargs": {...}, "state_dict": {...}, "config": {...}, "epoch": ...,
     "optimizers": {...}, "schedulers": {...}, "rng": {...}, "metrics": {...}}

Nothing in it needs unpickling of arbitrary objects, so ``torch.load(..., weights_only=True)``
reads it. ``load_model(path)`` rebuilds the model from the checkpoint alone.
"""

from __future__ import annotations

import inspect
import io
import math
import subprocess
import warnings
from collections.abc import Collection
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..core.config import Config, ConfigError, flatten, set_key
from ..core.errors import AnpvsError
from ..io import pretrained
from ..io.atomic import atomic_stream
from ..io.pretrained import sha256_file
from . import MODELS, create_model

FORMAT = "anpvs-checkpoint"


class CheckpointError(AnpvsError, RuntimeError):
    """A file that is not a readable anpvs checkpoint."""


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the anpvs source tree, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through the one atomic writer (:func:`anpvs.io.atomic_write`): a crash mid-write leaves
    the previous file intact."""
    atomic_stream(path, lambda f: torch.save(obj, f))  # a file object: a full disk stays an OSError


def make_checkpoint(model: nn.Module, *, config: dict[str, Any] | None = None, epoch: int = 0,
                    metrics: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": 1,
        "anpvs_version": __version__,
        "git_commit": git_commit(),
        "model_name": getattr(model, "model_name", type(model).__name__),
        "model_kwargs": dict(getattr(model, "model_kwargs", {})),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config or {},
        "epoch": epoch,
        "metrics": metrics or {},
        **extra,
    }


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True``; raise :class:`CheckpointError` if it is not one.

    ``path`` may name a pretrained model (``"pretrained:mnist/anp_vs"``, :mod:`anpvs.io.pretrained`): its bytes
    are checked against the manifest's SHA-256 first, and only those checked bytes are parsed."""
    source: Path | io.BytesIO
    if pretrained.is_spec(path):
        source = io.BytesIO(pretrained.read_verified(str(path)))
    else:
        source = path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} not found; pass the checkpoint.pt of a finished run")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupted, truncated or a pickle with arbitrary objects
        raise CheckpointError(f"{str(path)!r} is not a readable anpvs checkpoint ({type(e).__name__}); pass the "
                              f"checkpoint.pt of an anpvs run") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an anpvs checkpoint (no '{FORMAT}' header)")
    if "compact" in ckpt:  # a compacted network (anpvs compact): no registry model, checked on its own terms
        _validate_compact(ckpt, str(path))
    elif any(k in ckpt for k in ("model_name", "model_kwargs", "state_dict")):  # a model checkpoint
        validate_checkpoint(ckpt, str(path))
    return ckpt


#: bounds of the integer model arguments a checkpoint may ask for (a 10**7-class head would need ~20 GB)
KWARG_BOUNDS = {"num_classes": (1, 100_000), "in_channels": (1, 64)}


def _bad(where: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{where}: {problem}; it is damaged or was not written by anpvs (re-download it or "
                           f"retrain)")


def saved_config_error(where: str, error: Exception) -> CheckpointError:
    """The error of a checkpoint whose saved config does not rebuild into a run's config (raised by the code that
    rebuilds it: :func:`anpvs.training.run_config.checkpoint_config`); ``where`` names the checkpoint."""
    return _bad(where, f"its saved config is invalid ({error})")


def checkpoint_name(path: str | Path) -> str:
    """How messages name the checkpoint at ``path``: a file's path, or a pretrained model's ``pretrained:NAME``
    (as :func:`read_checkpoint` names it)."""
    return str(path) if pretrained.is_spec(path) else str(Path(path))


def validate_checkpoint(ckpt: dict[str, Any], where: str = "checkpoint") -> None:
    """Check a checkpoint dict against the model registry before anything is allocated for it.

    The model name must be registered, ``model_kwargs`` must be the factory's own arguments within
    :data:`KWARG_BOUNDS` (floats finite), the state dict must have exactly the keys and shapes of that
    model (compared on the ``meta`` device, which allocates no memory), every tensor must be finite,
    and the saved config must be a mapping that names the same architecture (the rest of it is checked where a
    run's config is rebuilt from it: :func:`anpvs.training.run_config.checkpoint_config`, which needs the
    plug-ins of the layers above). Raises :class:`CheckpointError` (one line)."""
    name, kwargs = ckpt.get("model_name"), ckpt.get("model_kwargs")
    _check_model_args(name, kwargs, where)
    sd = _state_dict(ckpt, where)
    try:
        with torch.device("meta"):
            expected = {k: tuple(t.shape) for k, t in create_model(name, **kwargs).state_dict().items()}
    except Exception as e:  # the factory refused the arguments
        raise _bad(where, f"{name}({kwargs}) cannot be built ({type(e).__name__}: {e})") from None
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shape = [k for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or shape:
        detail = "; ".join(f"{n}: {', '.join(map(str, v[:3]))}{' ...' if len(v) > 3 else ''}"
                           for n, v in (("missing", missing), ("unexpected", unexpected), ("shape", shape)) if v)
        raise _bad(where, f"its weights do not fit {name} ({detail})")
    _check_finite(sd, where, "the run diverged; use an earlier checkpoint or retrain with a lower train.lr")
    _check_config(ckpt, name, where)


def _check_model_args(name: Any, kwargs: Any, where: str, what: str = "") -> None:
    """``name`` is a registered model and ``kwargs`` are its factory's arguments within :data:`KWARG_BOUNDS`."""
    if not isinstance(name, str) or name not in MODELS:
        raise _bad(where, f"unknown {what}model {name!r} (known: {', '.join(MODELS.names())})")
    if not isinstance(kwargs, dict):
        raise _bad(where, f"{what}model_kwargs is not a mapping")
    params = inspect.signature(MODELS.get(name)).parameters
    unknown = sorted(str(k) for k in kwargs if k not in params)
    if unknown:
        raise _bad(where, f"{what}model_kwargs {unknown} are not arguments of {name}")
    for k, v in kwargs.items():
        if k in KWARG_BOUNDS:
            lo, hi = KWARG_BOUNDS[k]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise _bad(where, f"{what}model_kwargs {k}={v!r} is outside {lo}..{hi}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > 1e6:
            raise _bad(where, f"{what}model_kwargs {k}={v!r} is not a finite number")


def _state_dict(ckpt: dict[str, Any], where: str) -> dict[str, torch.Tensor]:
    sd = ckpt.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(t, torch.Tensor) for t in sd.values()):
        raise _bad(where, "state_dict is not a mapping of names to tensors")
    return sd


def _check_finite(sd: dict[str, torch.Tensor], where: str, fix: str) -> None:
    bad = [k for k, t in sd.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{where}: weights {', '.join(bad[:3])} hold NaN or inf; {fix}")


def _check_config(ckpt: dict[str, Any], name: str, where: str) -> None:
    """The saved config (if any) is a mapping whose ``model.name`` (a string; default: the config's) trains the
    architecture of model ``name``. Its other keys and values are checked by the callers that rebuild a config
    from it (:func:`anpvs.training.run_config.checkpoint_config`: the method section needs the methods' plug-ins,
    a layer above this one)."""
    config = ckpt.setdefault("config", {})
    if not isinstance(config, dict):
        raise _bad(where, "its saved config is not a mapping")
    if config:
        bare = Config()
        try:
            set_key(bare, "model.name", flatten(config).get("model.name", bare.model.name))
        except (ConfigError, AttributeError, TypeError) as e:
            raise saved_config_error(where, e) from None
        cfg_model = bare.model.name
        if name != cfg_model and not name.startswith(f"{cfg_model}_"):
            raise _bad(where, f"its saved config trains model {cfg_model!r} but its weights are {name!r}")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint; returns ``(model in eval mode, checkpoint dict)``.

    A compacted checkpoint (``anpvs compact``, a ``"compact"`` entry) rebuilds its compacted network (the
    architecture's ``compact_class``, recognized by its state dict) from the shapes of its state dict."""
    ckpt = read_checkpoint(path, map_location)
    if "compact" in ckpt:
        return _load_compact(path, ckpt).to(map_location).eval(), ckpt
    model = create_model(ckpt["model_name"], **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(map_location).eval(), ckpt


def load_pretrained(name: str, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A shipped pretrained model by name (``"mnist/anp_vs"``, its compacted twin ``"mnist/anp_vs.compact"``;
    ``anpvs pretrained`` lists them): :func:`load_model` of ``"pretrained:NAME"``, so its SHA-256 is checked
    against the manifest before it is parsed and it is validated like any checkpoint file."""
    return load_model(name if pretrained.is_spec(name) else pretrained.PREFIX + name, map_location)


def checkpoint_paths(checkpoint: str | Path) -> tuple[Path, Path]:
    """``(the file to read, the checkpoint path that default outputs are named after)``: both the path itself
    for a file; for ``"pretrained:NAME"`` the registry's file and ``runs/pretrained/NAME/checkpoint.pt``, so
    that ``eval.json``, ``check.json`` or ``checkpoint.compact.pt`` never go into the registry folder."""
    if pretrained.is_spec(checkpoint):
        return pretrained.model_file(str(checkpoint)), pretrained.output_home(str(checkpoint))
    return Path(checkpoint), Path(checkpoint)


def is_compact_checkpoint(path: str | Path) -> bool:
    """Whether the checkpoint at ``path`` holds a compacted network (``anpvs compact``).

    Only the metadata is read: the file is memory-mapped, so its tensors are not loaded (callers load the
    checkpoint properly afterwards, which reports any problem with it; here an unreadable file is False).
    A pretrained model is answered from its manifest, without reading the file before its SHA-256 check."""
    if pretrained.is_spec(path):
        return pretrained.is_compact_spec(str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # missing, not a zip checkpoint, or unsafe: load_model says which
        return False
    return isinstance(ckpt, dict) and "compact" in ckpt


#: the model_kwargs of a compacted checkpoint (``bn_eps``: a BN epsilon that is not part of a state dict, the
#: network's ``compact_kwargs``)
COMPACT_KWARGS = ("num_classes", "in_channels", "bn_eps")


def _validate_compact(ckpt: dict[str, Any], where: str) -> None:
    """A compacted checkpoint held to the standard of a plain one (:func:`validate_checkpoint`), before its
    network is rebuilt: the source model it names is registered with bounded arguments, the model it names is
    the one its tensors hold and was compacted from that source, its widths, latent maps and indices fit
    the source (:func:`anpvs.models.compact.check_compact_state`, on the ``meta`` device), its tensors are finite,
    its config trains the source's architecture, and its source, when that file is at hand, is the one it
    was compacted from (SHA-256)."""
    from ..metrics.efficiency import model_full_units
    from .compact import check_compact_state, compact_class, example_shape

    sd = _state_dict(ckpt, where)
    info, kwargs = ckpt.get("compact"), ckpt.get("model_kwargs")
    if not isinstance(info, dict) or not isinstance(kwargs, dict):
        raise _bad(where, "its compact / model_kwargs entries are not mappings")
    try:
        arch = compact_class(sd).arch
    except ValueError:
        arch = None
    name = ckpt.get("model_name")
    if not isinstance(name, str) or not name.endswith("_compact"):
        raise _bad(where, f"it names model {name!r} but has a 'compact' entry, which only checkpoints written by "
                          f"anpvs compact have")
    if name != f"{arch}_compact":
        held = f"a compacted {arch}" if arch else "not a compacted network"
        raise _bad(where, f"it names model {name!r} but its weights are {held}")
    src_name, src_kwargs = info.get("source_model_name"), info.get("source_model_kwargs")
    _check_model_args(src_name, src_kwargs, where, "source ")
    try:
        with torch.device("meta"):
            source = create_model(src_name, **src_kwargs)
    except Exception as e:  # the factory refused the arguments
        raise _bad(where, f"its source {src_name}({src_kwargs}) cannot be built ({type(e).__name__}: {e})") from None
    if getattr(source, "arch", None) != arch:
        raise _bad(where, f"its weights are a compacted {arch} but it names the source model {src_name!r}")
    own = {"num_classes": source.num_classes, "in_channels": example_shape(source)[0]}
    for k, v in kwargs.items():
        eps_ok = k == "bn_eps" and not isinstance(v, bool) and isinstance(v, (int, float)) and 0 < v <= 1
        if k not in COMPACT_KWARGS or (k in own and v != own[k]) or (k == "bn_eps" and not eps_ok):
            raise _bad(where, f"model_kwargs {k}={v!r} does not fit its source model {src_name}")
    units, full = info.get("source_active_units"), model_full_units(source)
    if (not isinstance(units, list) or len(units) != len(full)
            or not all(type(u) is int and 0 <= u <= f for u, f in zip(units, full, strict=True))):
        raise _bad(where, f"source_active_units {str(units)[:80]} are not {len(full)} unit counts of {src_name}")
    try:
        check_compact_state(sd, source)
    except ValueError as e:
        raise _bad(where, str(e)) from None
    _check_finite(sd, where, "recompact a good checkpoint")
    _check_config(ckpt, src_name, where)
    _check_source_hash(info, where)


def _check_source_hash(info: dict[str, Any], where: str) -> None:
    """The source checkpoint, when it is still at its recorded path, must be the file that was compacted."""
    source, digest = info.get("source"), info.get("source_sha256")
    if not isinstance(source, str) or not isinstance(digest, str) or len(digest) != 64:
        raise _bad(where, "its compact entry lacks the source's path or SHA-256")
    if Path(source).is_file() and sha256_file(source) != digest:
        raise CheckpointError(f"{where} was compacted from {source!r}, which has changed since (its SHA-256 is no "
                              f"longer {digest[:12]}...); compact it again: anpvs compact {source}")


def _load_compact(path: str | Path, ckpt: dict[str, Any]) -> nn.Module:
    from .compact import compact_from_state_dict

    info = ckpt["compact"]
    try:
        extra = {k: float(v) for k, v in ckpt["model_kwargs"].items() if k not in ("num_classes", "in_channels")}
        model = compact_from_state_dict(ckpt["state_dict"], **extra)
        model.source_units = [int(u) for u in info["source_active_units"]]
        model.source_model_name = str(info["source_model_name"])
        model.source_model_kwargs = dict(info["source_model_kwargs"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{str(path)!r} is not a readable compacted anpvs checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    model.model_name = ckpt["model_name"]
    model.model_kwargs = dict(ckpt["model_kwargs"])
    return model


def make_compact_checkpoint(net: nn.Module, source_ckpt: dict[str, Any], *, source: str | Path,
                            source_sha256: str) -> dict[str, Any]:
    """The checkpoint of a compacted network: its state dict, the source checkpoint's config, data
    description, epoch and metrics, and a ``"compact"`` entry (source and its SHA-256, source model, its
    active units, the compacted layer widths) that :func:`load_model` rebuilds it from. ``source`` is recorded
    absolute when it is a path, as it is when it is a name (e.g. ``"pretrained:mnist/anp_vs"``)."""
    from .compact import compact_widths

    kwargs: dict[str, Any] = {k: v for k, v in source_ckpt["model_kwargs"].items()
                              if k in ("num_classes", "in_channels")}
    kwargs.update(net.compact_kwargs())
    ckpt = make_checkpoint(net, config=source_ckpt.get("config"), epoch=source_ckpt.get("epoch", 0),
                           metrics=source_ckpt.get("metrics"))
    ckpt["model_name"] = f"{net.arch}_compact"
    ckpt["model_kwargs"] = kwargs
    if "data" in source_ckpt:
        ckpt["data"] = source_ckpt["data"]
    ckpt["compact"] = {
        # a path absolute, so that a later check finds the same file; a name as given
        "source": str(source.resolve()) if isinstance(source, Path) else source,
        "source_sha256": source_sha256,
        "source_model_name": source_ckpt["model_name"],
        "source_model_kwargs": dict(source_ckpt["model_kwargs"]),
        "source_active_units": list(net.source_units),
        "widths": compact_widths(net),
        "latent_maps": getattr(net, "latent_maps", None) is not None,
    }
    return ckpt


def head_parameter_names(model: nn.Module) -> list[str]:
    """State-dict names of the classifier head: the entries of the last ``nn.Linear`` (``dense4``, ``dense15``)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return []
    prefix = f"{linears[-1]}."
    return [k for k in model.state_dict() if k.startswith(prefix)]


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *,
                 reinit: Collection[str] = ()) -> list[str]:
    """Load weights from another variant of the same architecture (e.g. Standard into ``*_bbd``).

    Parameters missing from ``state_dict`` are allowed only when they are mask parameters
    (``a_uc``/``b_uc``), which keep their initial values. Entries named in ``reinit`` (e.g.
    :func:`head_parameter_names`, for a checkpoint trained with another number of classes) may have
    another shape: they are not loaded and keep their initial values. Any other mismatch raises.
    Returns the names of the parameters left at their initial values."""
    own = model.state_dict()
    unexpected = [k for k in state_dict if k not in own]
    missing = [k for k in own if k not in state_dict]
    bad_missing = [k for k in missing if not k.endswith(("a_uc", "b_uc"))]
    mismatched = [k for k in state_dict if k in own and own[k].shape != state_dict[k].shape]
    skipped = [k for k in mismatched if k in set(reinit)]
    shape = [k for k in mismatched if k not in skipped]
    if unexpected or bad_missing or shape:
        hint = ""
        if shape and not unexpected and not bad_missing and set(shape) <= set(head_parameter_names(model)):
            hint = " (a classifier head trained for another number of classes loads with method.reinit_head=true)"
        raise CheckpointError(
            "initial weights do not fit the model: "
            + "; ".join(f"{n}: {', '.join(v[:4])}{' ...' if len(v) > 4 else ''}"
                        for n, v in (("unexpected", unexpected), ("missing", bad_missing), ("shape", shape)) if v)
            + hint)
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in skipped}, strict=False)
    return missing + skipped
