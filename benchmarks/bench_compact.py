"""Inference speed of a physically compacted network vs the masked one it came from.

Prunes LeNet5-Caffe-BBD to the paper's MNIST ANP-VS widths [4, 23, 61, 129] (and VGG-16-BBD to
roughly a quarter of its channels) by setting mask parameters, then times the masked eval forward
and the compacted forward in the same process, interleaved, and prints JSON with the ratio.
Absolute times depend on the machine; compare ratios. Usage: ``python benchmarks/bench_compact.py``.
"""

from __future__ import annotations

import json
import time

import torch

from anpvs import compact, create_model
from anpvs.metrics.efficiency import analytic_flops, full_units
from anpvs.pruning import active_units, named_masks


def prune_to(model: torch.nn.Module, widths: list[int]) -> None:
    """Keep the first ``w`` units of each mask open (a_uc = 5) and close the rest (a_uc = -10)."""
    with torch.no_grad():
        for (_, m), w in zip(named_masks(model), widths, strict=True):
            m.a_uc.fill_(-10.0)
            m.a_uc[:w] = 5.0


def best_time(fn, x: torch.Tensor, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return min(times)


@torch.no_grad()
def bench(name: str, widths: list[int], shape: tuple[int, ...], batch: int, repeat: int) -> dict:
    model = create_model(name).eval()
    prune_to(model, widths)
    small = compact(model)
    x = torch.rand(batch, *shape)
    assert torch.allclose(model(x), small(x), atol=1e-4, rtol=1e-4)
    model(x), small(x)  # warm-up
    t_masked, t_compact = [], []
    for _ in range(3):  # interleave so drifting machine load hits both
        t_masked.append(best_time(model, x, repeat))
        t_compact.append(best_time(small, x, repeat))
    arch = model.arch
    return {
        "model": name, "batch": batch, "active_units": active_units(model),
        "masked_ms": round(1e3 * min(t_masked), 3), "compact_ms": round(1e3 * min(t_compact), 3),
        "measured_speedup": round(min(t_masked) / min(t_compact), 2),
        "analytic_flops_speedup": round(analytic_flops(arch, full_units(arch)) / analytic_flops(arch, widths), 2),
        "params_masked": sum(p.numel() for p in model.parameters()),
        "params_compact": sum(p.numel() for p in small.parameters()),
    }


def main() -> None:
    torch.manual_seed(0)
    vgg_widths = [max(1, w // 4) for w in full_units("vgg16")]
    results = [
        bench("lenet5_caffe_bbd", [4, 23, 61, 129], (1, 28, 28), batch=256, repeat=20),
        bench("vgg16_bbd", vgg_widths, (3, 32, 32), batch=32, repeat=3),
    ]
    print(json.dumps({"benchmark": "compact_vs_masked_inference", "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
