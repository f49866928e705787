"""Where and how reproducibly a job runs: the device a ``--device`` name means, and seeding.

Training, evaluation, checks and figures all resolve ``--device`` here, so the same name means the same
device, with the same one-line errors, in every command."""

from __future__ import annotations

import torch

from .errors import TrainingError


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


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (numpy takes the seed modulo 2**32)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = ["resolve_device", "seed_everything"]
