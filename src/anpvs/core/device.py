"""Where and how reproducibly a job runs: the device a ``--device`` name means, and seeding.

Training, evaluation, checks and figures all resolve ``--device`` here, so the same name means the same
device, with the same one-line errors, in every command."""

from __future__ import annotations

import functools
import logging
import os

import torch

from .errors import TrainingError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainingError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise TrainingError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                            f"device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}, cpu or auto")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                     and torch.backends.mps.is_available()):
        raise TrainingError(f"device {name!r} requested but MPS (Apple GPU) is not available on this machine; "
                            f"use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise TrainingError(f"device {name!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


#: /proc/cpuinfo flags of CPUs that compute bf16 in hardware: x86 AVX512-BF16 and AMX, AArch64 FEAT_BF16
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (one of :data:`NATIVE_BF16_FLAGS` in ``/proc/cpuinfo``; without
    that file, whether oneDNN says it runs bf16). Without them PyTorch emulates bf16: a VGG-16 epoch under bf16
    autocast took 22x as long as in fp32 on an AVX2-only x86 CPU. oneDNN capped below its bf16 instruction sets
    (``ONEDNN_MAX_CPU_ISA=AVX2``, say) counts as no bf16: oneDNN then emulates it too."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap and cap != "ALL" and "BF16" not in cap and "AMX" not in cap and "AVX10" not in cap:
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = {w for line in f if line.startswith(("flags", "Features")) for w in line.partition(":")[2].split()}
    except OSError:  # not Linux
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return bool(flags & NATIVE_BF16_FLAGS)


def effective_precision(precision: str, device: torch.device, key: str = "train.precision") -> str:
    """``precision``, except ``"bf16"`` on a CPU without bf16 instructions (:func:`cpu_has_native_bf16`): there
    bf16 autocast is many times slower than fp32, so the job runs in fp32 and says so (a warning naming
    ``key``). bf16 is a speed option only, so a config or checkpoint moved to such a machine keeps working.
    Other devices (CUDA, MPS) get what they ask for."""
    if precision != "bf16" or device.type != "cpu" or cpu_has_native_bf16():
        return precision
    log.warning("%s=bf16 runs in fp32: this CPU has no bf16 instructions (AVX512-BF16, AMX or ARM BF16; PyTorch "
                "would emulate them, e.g. 22x slower than fp32 for VGG-16); see docs/performance.md", key)
    return "fp32"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (numpy takes the seed modulo 2**32)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = ["NATIVE_BF16_FLAGS", "cpu_has_native_bf16", "effective_precision", "resolve_device", "seed_everything"]
