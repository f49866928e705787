"""Wall-clock latency of forward passes: medians over interleaved repetitions.

The analytic FLOPs ratio of a pruned network says how much arithmetic it saves, not how much time: small
convolutions, memory traffic and per-call overhead do not shrink with the channel count. This module
measures the time itself. :func:`median_latency` times several models on the same input, one forward of
each in turn (so that a drifting machine load hits all of them alike), under ``torch.inference_mode``,
and reports the median of each (robust to the occasional preempted run). CUDA work is synchronized
before each clock read.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["latency_device", "median_latency"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def median_latency(models: Mapping[str, nn.Module], input_shape: Sequence[int], *,
                   batch_sizes: Sequence[int] = (1, 256), budget_s: float = 0.2, min_repeats: int = 3,
                   max_repeats: int = 50, warmup: int = 2, dtype: torch.dtype = torch.float32,
                   autocast: torch.dtype | None = None) -> dict[str, dict[str, float]]:
    """Median milliseconds per forward of each model at each batch size: ``{name: {"b1": ms, "b256": ms}}``.

    Every model is run on the same uniform [0, 1] input of shape ``(B, *input_shape)`` on the device of its
    first parameter (all models must share it). After ``warmup`` untimed forwards of each, one forward of
    each model is timed in turn, until every model has ``min_repeats`` timings and about ``budget_s``
    seconds per model were spent, or ``max_repeats`` timings. ``autocast`` (e.g. ``torch.bfloat16``) runs
    the forwards under ``torch.autocast`` on that device.
    """
    if not models:
        raise ValueError("median_latency() needs at least one model")
    if min_repeats < 1 or max_repeats < min_repeats or budget_s < 0:
        raise ValueError(f"need 1 <= min_repeats <= max_repeats and budget_s >= 0 "
                         f"(got {min_repeats}, {max_repeats}, {budget_s})")
    devices = {next(m.parameters()).device for m in models.values()}
    if len(devices) != 1:
        raise ValueError(f"the models are on different devices: {sorted(map(str, devices))}")
    device = devices.pop()
    gen = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, float]] = {name: {} for name in models}
    for batch in batch_sizes:
        x = torch.rand(batch, *input_shape, generator=gen).to(device=device, dtype=dtype)
        times: dict[str, list[float]] = {name: [] for name in models}
        ctx = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            for _ in range(warmup):
                for m in models.values():
                    m(x)
            _sync(device)
            start = time.perf_counter()
            while True:
                for name, m in models.items():
                    t0 = time.perf_counter()
                    m(x)
                    _sync(device)
                    times[name].append(time.perf_counter() - t0)
                n = len(next(iter(times.values())))
                spent = time.perf_counter() - start
                if n >= max_repeats or (n >= min_repeats and spent >= budget_s * len(models)):
                    break
        for name, ts in times.items():
            out[name][f"b{batch}"] = round(1e3 * statistics.median(ts), 4)
    return out


def latency_device(device: torch.device | str) -> str:
    """A short description of where latencies were measured: ``"cpu (2 threads)"``, ``"cuda:0 (NVIDIA ...)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n > 1 else ''})"
    return str(device)
