"""Inference cost of a physically compacted network vs the masked one it came from: analytic FLOPs,
FlopCounterMode FLOPs and measured wall-clock speed-ups at batch 1 and 256, and where the time goes.

Networks measured:

* LeNet5-Caffe-BBD pruned by hand to the paper's MNIST ANP-VS widths [4, 23, 61, 129] (4 conv1 channels,
  23 conv2 channels, 61 flattened dense3 inputs spread over those 23 channels, 129 dense3 units), the
  setting of the paper's analytic 10.6x;
* a real ANP-VS checkpoint: ``--checkpoint PATH``, or else one trained here on the bundled MNIST sample
  (a Standard run, then ANP-VS from it; a few minutes on a CPU, ``--train-epochs`` scales it);
* with ``--vgg``, VGG-16-BBD at a quarter of its channels (batch 32 instead of 256: a masked VGG forward
  at batch 256 takes seconds on a CPU).

For each: ``analytic_flops_speedup`` (the paper's formula on the active units), ``counted_flops_speedup``
(FlopCounterMode on the masked and the compacted network), and ``measured`` wall-clock speed-ups, masked
/ compacted, each the median of interleaved repetitions (:func:`anpvs.metrics.latency.median_latency`),
in fp32 and under bf16 autocast (skip with ``--no-bf16``). ``vs_same_kernels`` compares the compacted
network with the *unpruned* network compacted the same way (same kernels, full widths): the part of the
speed-up that pruning alone buys. ``profile`` lists the top operators of one compacted forward.

Absolute times depend on the machine and its load; compare ratios. Usage::

    python benchmarks/bench_compact.py [--checkpoint runs/anp_vs/checkpoint.pt] [--threads 2] [--vgg]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from anpvs import compact, create_model
from anpvs.metrics.efficiency import analytic_flops, full_units
from anpvs.metrics.latency import median_latency
from anpvs.models.checkpoint import load_model
from anpvs.models.compact import compact_stats, example_shape
from anpvs.models.masks import active_units, named_masks

PAPER_MNIST_WIDTHS = [4, 23, 61, 129]


def _close_all_but(mask: torch.nn.Module, keep: torch.Tensor) -> None:
    mask.a_uc.fill_(-10.0)  # E[pi] ~ 5e-5: pruned
    mask.a_uc[keep] = 5.0  # E[pi] ~ 0.8: kept


@torch.no_grad()
def lenet_at_widths(widths: list[int]) -> torch.nn.Module:
    """LeNet5-Caffe-BBD whose compacted network has exactly ``widths`` = [conv1, conv2, dense3 inputs, dense3]:
    the dense3 inputs are spread over the kept conv2 channels so that none of them is dead."""
    c1, c2, f3, h4 = widths
    if not c2 <= f3 <= 16 * c2:
        raise ValueError(f"need conv2 <= dense3 inputs <= 16 * conv2, got {widths}")
    model = create_model("lenet5_caffe_bbd").eval()
    _close_all_but(model.mask1, torch.arange(c1))
    _close_all_but(model.mask2, torch.arange(c2))
    pos = (torch.arange(f3) % c2) * 16 + torch.arange(f3) // c2  # round-robin over the kept channels
    _close_all_but(model.mask3, pos)
    _close_all_but(model.mask4, torch.arange(h4))
    return model


@torch.no_grad()
def vgg_at_quarter() -> torch.nn.Module:
    model = create_model("vgg16_bbd").eval()
    for (_, m), w in zip(named_masks(model), full_units("vgg16"), strict=True):
        _close_all_but(m, torch.arange(max(1, w // 4)))
    return model


def trained_anp_vs(out: Path, epochs_scale: float) -> Path:
    """A small ANP-VS LeNet5-Caffe on the bundled MNIST sample (the demo's settings, shorter)."""
    from anpvs.training.loop import fit
    from anpvs.training.run_config import build_config

    common = {"data.name": "mnist_sample", "train.lr_milestones": [], "attack.steps": 5, "attack.step_size": 0.1,
              "device": "cpu"}
    std = fit(build_config({**common, "method.name": "standard", "out": str(out / "standard"),
                            "train.epochs": max(1, round(2 * epochs_scale))}), progress=False)
    anp = fit(build_config({**common, "method.name": "anp_vs", "out": str(out / "anp_vs"), "init": std["checkpoint"],
                            "train.epochs": max(1, round(4 * epochs_scale)), "model.mask_init": 2.0,
                            "train.mask_lr": 0.05, "method.kl_n": 60000}), progress=False)
    return Path(anp["checkpoint"])


def _speedups(models: dict, shape: tuple[int, ...], batches: tuple[int, ...], budget_s: float,
              autocast: torch.dtype | None = None) -> dict:
    ms = median_latency(models, shape, batch_sizes=batches, budget_s=budget_s, min_repeats=5, max_repeats=200,
                        warmup=3, autocast=autocast)
    out = {"latency_ms": ms}
    for b in ms["masked"]:
        out[f"measured_speedup_{b}"] = round(ms["masked"][b] / ms["compact"][b], 2)
        out[f"vs_same_kernels_{b}"] = round(ms["full_compact"][b] / ms["compact"][b], 2)
    return out


def _profile(net: torch.nn.Module, shape: tuple[int, ...], batch: int) -> list[dict]:
    x = torch.rand(batch, *shape)
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                net(x)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return [{"op": e.key, "share_pct": round(100 * e.self_cpu_time_total / total, 1)} for e in rows]


def bench(label: str, model: torch.nn.Module, batches: tuple[int, ...], budget_s: float, bf16: bool) -> dict:
    model = model.eval()
    small = compact(model)
    shape = example_shape(model)
    plain = create_model(model.arch, num_classes=model.num_classes).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    full_compact = compact(plain)  # the unpruned network through the same kernels
    x = torch.rand(8, *shape)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-4)
    arch, units = model.arch, active_units(model)
    stats = compact_stats(model)
    models = {"masked": model, "compact": small, "full_compact": full_compact}
    result = {
        "model": label, "active_units": units,
        "analytic_flops_speedup": round(analytic_flops(arch, full_units(arch)) / analytic_flops(arch, units), 2),
        "counted_flops_speedup": round(stats["counted_flops_speedup"], 2),
        "params_masked": sum(p.numel() for p in model.parameters()), "params_compact": stats["compact_params"],
        "fp32": _speedups(models, shape, batches, budget_s),
    }
    if bf16:
        result["bf16_autocast"] = _speedups(models, shape, batches, budget_s, autocast=torch.bfloat16)
    result["profile_compact_b256" if 256 in batches else f"profile_compact_b{batches[-1]}"] = _profile(
        small, shape, batches[-1])
    result["profile_masked_b256" if 256 in batches else f"profile_masked_b{batches[-1]}"] = _profile(
        model, shape, batches[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="an ANP-VS LeNet5-Caffe / VGG-16 checkpoint (default: train a small one)")
    p.add_argument("--train-epochs", type=float, default=1.0, help="scale of the training when no checkpoint")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--budget-s", type=float, default=1.5, help="seconds of timing per model and batch size")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast timings")
    p.add_argument("--vgg", action="store_true", help="also VGG-16 at a quarter of its channels (batch 1 and 32)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = [bench(f"lenet5_caffe_bbd at {PAPER_MNIST_WIDTHS}", lenet_at_widths(PAPER_MNIST_WIDTHS), (1, 256),
                     args.budget_s, not args.no_bf16)]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else trained_anp_vs(Path(tmp), args.train_epochs)
        model, meta = load_model(ckpt)
        label = f"{meta['model_name']} ({'given' if args.checkpoint else 'trained here'}: {ckpt.name})"
        batches = (1, 256) if model.arch == "lenet5_caffe" else (1, 32)
        results.append(bench(label, model, batches, args.budget_s, not args.no_bf16))
    if args.vgg:
        results.append(bench("vgg16_bbd at 1/4 of its channels", vgg_at_quarter(), (1, 32), args.budget_s,
                             not args.no_bf16))
    print(json.dumps({"benchmark": "compact_vs_masked_inference", "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
