"""``anpvs compact``: save the physically compacted network of a checkpoint, or export it.

* As a checkpoint (default): :func:`anpvs.models.checkpoint.make_compact_checkpoint`, a self-describing anpvs
  checkpoint (``torch.load(weights_only=True)``) that ``anpvs eval``, ``anpvs check``, ``load_model`` and
  ``--attack-source`` read like any other. It keeps the latent maps (:func:`anpvs.models.compact.compact` with
  ``latents=True``), so its evaluation gives the masked source's clean / adversarial accuracy and
  vulnerability.
* As TorchScript (``torch.jit.trace``) or ONNX (``anpvs[onnx]``): the deployable network only, which takes
  images in [0, 1] of shape (N, C, H, W), any N, and returns logits (normalization, where the model has
  one, is inside). Every export is loaded back and compared with the network on real MNIST digits from
  the bundled sample (seeded uniform images for other input shapes); a difference above
  :data:`EXPORT_ATOL` raises :class:`ExportError`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import OptionalDependencyError
from ..core.config import ConfigError
from ..core.errors import AnpvsError, OutputError, check_output_file
from ..io.atomic import atomic_stream, atomic_write
from ..models.checkpoint import (
    atomic_save,
    checkpoint_name,
    checkpoint_paths,
    load_model,
    make_compact_checkpoint,
    sha256_file,
)
from ..models.compact import compact, compact_stats, compact_widths, deployable, example_shape, is_compact
from ..training.run_config import checkpoint_config

__all__ = ["EXPORT_ATOL", "EXPORT_FORMATS", "ExportError", "compact_checkpoint", "export_onnx",
           "export_torchscript", "reference_images"]

EXPORT_FORMATS = ("torchscript", "onnx")
#: largest absolute logit difference an exported file may show against the network it came from
EXPORT_ATOL = 1e-5
_SUFFIX = {None: ".compact.pt", "torchscript": ".compact.ts", "onnx": ".compact.onnx"}


class ExportError(AnpvsError, RuntimeError):
    """An exported file that does not reproduce the network's logits (or logits that are not finite)."""


def reference_images(shape: tuple[int, ...], n: int = 64) -> Tensor:
    """``n`` images in [0, 1] to compare an export with its network: real MNIST test digits from the
    bundled sample for ``shape == (1, 28, 28)``, seeded uniform noise otherwise."""
    if tuple(shape) == (1, 28, 28):
        from ..data import load_dataset

        return load_dataset("mnist_sample", None).test.images[:n].float().div(255)
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))


def export_torchscript(net: nn.Module, example: Tensor, path: str | Path) -> float:
    """Trace ``net`` on ``example`` into a TorchScript file; returns the largest absolute logit difference
    of the loaded file against ``net`` on ``example``."""
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, and says so
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(net, example[:1])
        atomic_stream(path, lambda f: torch.jit.save(traced, f))  # a file object: a full disk stays an OSError
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return float((loaded(example) - net(example)).abs().max())


def export_onnx(net: nn.Module, example: Tensor, path: str | Path, *, opset: int = 17) -> float | None:
    """Export ``net`` to ONNX (input ``images`` [N, C, H, W] in [0, 1], output ``logits``, N dynamic); returns
    the largest absolute logit difference of onnxruntime's output against ``net`` on ``example``, or None
    when onnxruntime is not installed. Needs the ``onnx`` package (``pip install 'anpvs[onnx]'``)."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise OptionalDependencyError("ONNX export needs the onnx package: pip install 'anpvs[onnx]'") from None
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated, and says so
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)

        def write(tmp: str) -> None:
            torch.onnx.export(net, (example[:1],), tmp, dynamo=False, opset_version=opset, input_names=["images"],
                              output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})

        with torch.no_grad():
            _save(write, path)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(["logits"], {"images": example.numpy()})[0]
    with torch.no_grad():
        return float((torch.from_numpy(out) - net(example)).abs().max())


def _save(write, path: str | Path) -> None:
    """``write(tmp)`` through the one atomic writer (:func:`anpvs.io.atomic_write`)."""
    atomic_write(path, write)


def compact_checkpoint(checkpoint: str | Path, *, out: str | Path | None = None,
                       export: str | None = None, force: bool = False,
                       source_name: str | None = None) -> dict[str, Any]:
    """Compact the model of ``checkpoint`` and write it to ``out`` as an anpvs checkpoint (``export=None``,
    default ``<stem>.compact.pt`` beside the source) or as a ``"torchscript"`` / ``"onnx"`` file (default
    ``<stem>.compact.ts`` / ``.compact.onnx``). An already compacted checkpoint can be exported, not
    compacted again. Returns a summary: ``out``, ``format``, ``widths``, sizes, and for exports the largest
    absolute logit difference against the network (``max_abs_diff``, None if onnxruntime is missing).
    An existing ``out`` other than the default path is replaced only with ``force``. ``checkpoint`` may name a
    pretrained model (``"pretrained:mnist/anp_vs"``); the default output then goes to ``runs/pretrained/NAME/``.
    ``source_name``: how the compacted checkpoint names its source (default: the source file's absolute path)."""
    if export not in _SUFFIX:
        raise ConfigError(f"unknown export format {export!r}; valid: {', '.join(EXPORT_FORMATS)}")
    # a pretrained model (pretrained:NAME) is read from the registry, its outputs go to runs/pretrained/NAME/
    file, src = checkpoint_paths(checkpoint)
    model, ckpt = load_model(checkpoint)
    checkpoint_config(ckpt, checkpoint_name(checkpoint))  # the saved config it carries on must rebuild
    if is_compact(model):
        if export is None:
            raise ConfigError(f"{str(checkpoint)!r} is already a compacted checkpoint; export it with --export "
                              f"{'|'.join(EXPORT_FORMATS)}")
        net = model
    else:
        try:
            net = compact(model, latents=True)
        except TypeError:
            raise ConfigError(f"anpvs compact supports LeNet5-Caffe and VGG-16 models; {str(checkpoint)!r} holds "
                              f"{ckpt['model_name']}") from None
    stem = src.name[:-len(".compact.pt")] if src.name.endswith(".compact.pt") else src.stem
    default = src.with_name(stem + _SUFFIX[export])
    if out is not None and str(out).strip() and Path(out).resolve() == file.resolve():
        raise ConfigError(f"refusing to overwrite the input checkpoint {str(file)!r}; choose another --out")
    dest = check_output_file(default if out is None else out, inputs=[file], example=default.name)
    if out is not None and dest.exists() and not force and dest.resolve() != default.resolve():
        raise OutputError(f"--out {str(dest)!r} already exists; pass --force to replace it, or choose another --out")
    stats = compact_stats(net)
    summary: dict[str, Any] = {"source": str(checkpoint), "out": str(dest), "format": export or "checkpoint",
                               "model": ckpt["model_name"], "widths": compact_widths(net),
                               "source_active_units": list(net.source_units),
                               "compact_params": stats["compact_params"], "compact_bytes": stats["compact_bytes"],
                               "counted_flops_speedup": round(stats["counted_flops_speedup"], 3)}
    if export is None:
        digest = ckpt["compact"]["source_sha256"] if "compact" in ckpt else sha256_file(file)
        atomic_save(make_compact_checkpoint(net, ckpt, source=source_name or file, source_sha256=digest), dest)
        summary["source_sha256"] = digest
        return summary
    deploy = deployable(net).cpu().eval()
    example = reference_images(example_shape(deploy))
    diff = export_torchscript(deploy, example, dest) if export == "torchscript" else export_onnx(deploy, example,
                                                                                                 dest)
    summary["max_abs_diff"] = diff
    summary["checked_on"] = ("real MNIST digits (bundled sample)" if tuple(example.shape[1:]) == (1, 28, 28)
                             else "seeded uniform images")
    summary["checked_images"] = len(example)
    if diff is not None and not math.isfinite(diff):  # NaN > EXPORT_ATOL is False: test finiteness first
        raise ExportError(f"the network of {str(checkpoint)!r} or its {export} file {str(dest)!r} gives NaN or inf "
                          f"logits on the check images (its outputs overflow); do not use the file, check the "
                          f"checkpoint")
    if diff is not None and diff > EXPORT_ATOL:
        raise ExportError(f"the {export} file {str(dest)!r} differs from the network by {diff:.3g} "
                          f"(> {EXPORT_ATOL:g}) in its logits")
    return summary


def format_compact(summary: dict[str, Any]) -> str:
    """The text ``anpvs compact`` prints."""
    widths = " ".join(f"{k}={v}" for k, v in summary["widths"].items())
    lines = [f"compacted {summary['model']} ({summary['source']}) -> {summary['out']} [{summary['format']}]",
             f"  widths {widths}",
             f"  params {summary['compact_params']}  bytes {summary['compact_bytes']}  "
             f"FLOPs x{summary['counted_flops_speedup']:.2f} (FlopCounterMode)"]
    if "max_abs_diff" in summary:
        diff = summary["max_abs_diff"]
        lines.append(f"  checked on {summary['checked_images']} {summary['checked_on']}: "
                     + ("onnxruntime not installed, not checked" if diff is None
                        else f"max |logit difference| {diff:.2e} (<= {EXPORT_ATOL:g})"))
    return "\n".join(lines)
