"""Throughput of the VGG-16 (CIFAR) training steps against plain PyTorch doing the same work; prints JSON.

Everything is measured in one process, interleaved over rounds (drifting machine load hits every variant
alike), as images per second, ratios and the percentage of the fp32 sgemm bound (the step's FLOPs counted by
FlopCounterMode over this machine's measured sgemm rate). Cases:

* ``at_b64`` / ``at_b128``: one AT step (PGD-10 of step 0.007, eps 0.03, the mixed loss, Adam with L2 on the
  weights) on real CIFAR-10 images (``--data-dir``) or random ones. ``textbook`` is VGG-16 written the plain way
  with a hand-written PGD loop and the same arithmetic; ``anpvs`` is
  :class:`anpvs.training.step.TrainStep`, the callable ``fit()`` runs;
  ``anpvs_channels_last`` the same step with the model and images in channels_last layout;
  ``anpvs_bf16`` the step under ``train.precision=bf16`` (only where the device computes bf16 natively: CUDA, or
  a CPU with AVX512-BF16 / AMX; elsewhere it is reported as skipped, since emulated bf16 is many times slower).
  Both fp32 variants are then rerun from the same weights and seed for 2 steps and their weights compared.
* ``anp_vs_pruned``: one ANP-VS step with half of every layer's units pruned; ``before`` attacks the masked
  network itself (the arithmetic of every unit, pruned or not), ``anpvs`` attacks its compacted snapshot (what
  ``fit()`` does); their adversarial examples from the same seed are compared.

Usage: ``python benchmarks/bench_vgg16.py [--width 1.0] [--rounds 3] [--batches 64,128] [--data-dir DIR]
[--quick] [--device cpu|cuda]``. ``--quick`` (1 round of 1 call, batch 8, width 1/8) is a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
from bench_engine import textbook_at_step, textbook_optimizer  # the same textbook loop as the LeNet benchmark
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import anpvs.methods.adversarial as adversarial_module
from anpvs.methods import build_method
from anpvs.models.compact import attack_network
from anpvs.models.vgg16 import AFTER_BLOCK, CIFAR_MEAN, CIFAR_STD
from anpvs.training.loop import build_model
from anpvs.training.run_config import build_config
from anpvs.training.step import TrainStep, build_optimizers


def sgemm_gflops(device: torch.device, n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * n**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 matrix products natively, and why (bf16 emulated in fp32 is slow)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(), torch.cuda.get_device_name(device)
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    ok = any(f in flags for f in (" avx512_bf16", " amx_bf16"))
    return ok, ("AVX512-BF16/AMX" if ok else "no AVX512-BF16 or AMX in /proc/cpuinfo") + \
        f" (torch CPU capability {torch.backends.cpu.get_cpu_capability()})"


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, reps: int, device: torch.device) -> dict:
    """Median over ``rounds`` of the mean seconds per call of each fn, the fns interleaved in every round."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(device)
            times[k].append((time.perf_counter() - t0) / reps)
    return {k: statistics.median(v) for k, v in times.items()}


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops()


def at_step_flops(fwd: int, pgd_steps: int) -> int:
    """Each PGD step is a forward and an input-gradient pass (2F); the two training forwards 2F, their backward 4F."""
    return fwd * (2 * pgd_steps + 6)


# --------------------------------------------------------------------------- the textbook AT loop


class TextbookVGG16(nn.Module):
    """VGG-16 (CIFAR) written the plain way, with anpvs's parameter names so that weights load across."""

    def __init__(self, widths: tuple[int, ...], num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))
        chans = (3, *widths[:13])
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(13))
        self.bns = nn.ModuleList(nn.BatchNorm2d(c, eps=1e-3, momentum=0.01) for c in widths[:13])
        self.dense14 = nn.Linear(widths[12], widths[14])
        self.bn14 = nn.BatchNorm1d(widths[14], eps=1e-3, momentum=0.01)
        self.dense15 = nn.Linear(widths[14], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = (x - self.mean) / self.std
        for conv, bn, after in zip(self.convs, self.bns, AFTER_BLOCK, strict=True):
            h = F.relu(bn(conv(h)))
            h = F.max_pool2d(h, 2) if after == "M" else F.dropout(h, after, self.training)
        h = F.dropout(h.flatten(1), 0.5, self.training)
        h = F.dropout(F.relu(self.bn14(self.dense14(h))), 0.5, self.training)
        return self.dense15(h)

    def load_from(self, state: dict[str, torch.Tensor]) -> None:
        state = {("mean" if k == "normalize.mean" else "std" if k == "normalize.std" else k): v
                 for k, v in state.items()}
        self.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------- cases


def images(n: int, data_dir: str | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if data_dir:
        from anpvs.data import load_dataset

        d = load_dataset("cifar10", data_dir, train_limit=max(n, 10), seed=0)
        x, y = d.train.images[:n].float().div(255), d.train.labels[:n]
    else:
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    return x.to(device), y.to(device)


def anpvs_step(method: str, width: float, device: torch.device, precision: str = "fp32", **overrides):
    cfg = build_config({"data.name": "cifar10", "method.name": method, "model.width": width,
                        "train.precision": precision, "device": str(device), **overrides})
    m = build_method(cfg, n_train=50000)
    model = build_model(cfg, m, (3, 32, 32), 10).to(device).train()
    return cfg, model, TrainStep(m, model, build_optimizers(cfg, model, 10**6), precision=precision)


def at_case(batch: int, width: float, rounds: int, reps: int, sgemm: float, device: torch.device,
            data_dir: str | None) -> dict:
    x, y = images(batch, data_dir, device)
    cfg, model, step = anpvs_step("at", width, device)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    _, model_cl, step_cl = anpvs_step("at", width, device)
    model_cl.load_state_dict(init)
    model_cl.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    tb = TextbookVGG16(model.unit_widths).to(device)
    tb.load_from(init)
    tb_opt = textbook_optimizer(tb, cfg.train.lr, cfg.train.weight_decay)
    a = cfg.attack
    fns: dict[str, Callable[[], object]] = {
        "textbook": lambda: textbook_at_step(tb, tb_opt, x, y, a.eps, a.step_size, a.steps),
        "anpvs": lambda: step(x, y),
        "anpvs_channels_last": lambda: step_cl(x_cl, y),
    }
    bf16_ok, bf16_why = native_bf16(device)
    if bf16_ok:
        _, model16, step16 = anpvs_step("at", width, device, precision="bf16")
        model16.load_state_dict(init)
        fns["anpvs_bf16"] = lambda: step16(x, y)
    t = interleaved(fns, rounds, reps, device)
    flops = at_step_flops(forward_flops(tb, x), a.steps)

    # same arithmetic: from the same weights and seed, 2 steps of each reach the same weights
    _, model, step = anpvs_step("at", width, device)
    model.load_state_dict(init)
    tb.load_from(init)
    tb_opt = textbook_optimizer(tb, cfg.train.lr, cfg.train.weight_decay)
    for fn in (lambda: step(x, y), lambda: textbook_at_step(tb, tb_opt, x, y, a.eps, a.step_size, a.steps)):
        torch.manual_seed(0)
        for _ in range(2):
            fn()
    sd_tb = tb.state_dict()
    diff = max((v - sd_tb[k]).abs().max().item() for k, v in model.state_dict().items()
               if k in sd_tb and v.is_floating_point())
    bound = flops / (sgemm * 1e9)
    return {
        "batch": batch, "width": width, "gflop_per_step": round(flops / 1e9, 2),
        "img_per_s": {k: round(batch / v, 1) for k, v in t.items()},
        "ms_per_step": {k: round(1e3 * v, 1) for k, v in t.items()},
        "speedup_vs_textbook": {k: round(t["textbook"] / v, 2) for k, v in t.items()},
        "pct_of_sgemm_bound": {k: round(100 * bound / v, 1) for k, v in t.items()},
        "max_weight_diff_after_2_steps_vs_textbook": diff,
        "bf16": "measured" if bf16_ok else f"skipped: {bf16_why}",
    }


def prune_half(model: nn.Module) -> list[int]:
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "a_uc"):
                n = m.a_uc.numel()
                m.a_uc.fill_(-10.0)
                m.a_uc[: max(1, n // 2)] = 5.0
    return [m.n_active() for m in model.modules() if hasattr(m, "n_active")]


@contextlib.contextmanager
def attack_the_masked_network():
    saved = adversarial_module.attack_network
    adversarial_module.attack_network = lambda model: model
    try:
        yield
    finally:
        adversarial_module.attack_network = saved


def anp_vs_case(batch: int, width: float, rounds: int, reps: int, sgemm: float, device: torch.device,
                data_dir: str | None) -> dict:
    x, y = images(batch, data_dir, device)
    _, model, step = anpvs_step("anp_vs", width, device)
    widths = prune_half(model)
    init = {k: v.clone() for k, v in model.state_dict().items()}

    def reset():  # keep the widths fixed while timing (the mask optimizer moves them)
        model.load_state_dict(init)

    def before():
        reset()
        with attack_the_masked_network():
            step(x, y)

    def new():
        reset()
        step(x, y)

    t = interleaved({"before": before, "anpvs": new}, rounds, reps, device)
    reset()
    atk = step.method.attack
    model.eval()
    torch.manual_seed(1)
    adv_masked = atk(model, x, y)
    torch.manual_seed(1)
    adv_compact = atk(attack_network(model), x, y)
    with torch.no_grad():
        same_pred = (model(adv_masked).argmax(1) == model(adv_compact).argmax(1)).float().mean().item()
    flops = at_step_flops(forward_flops(model, x), step.method.cfg.attack.steps)
    model.train()
    return {
        "batch": batch, "width": width, "active_units": widths,
        "img_per_s": {k: round(batch / v, 1) for k, v in t.items()},
        "ms_per_step": {k: round(1e3 * v, 1) for k, v in t.items()},
        "speedup_vs_before": round(t["before"] / t["anpvs"], 2),
        "pct_of_sgemm_bound_of_masked_flops": {k: round(100 * flops / (sgemm * 1e9) / v, 1) for k, v in t.items()},
        # the two networks compute the same function up to float rounding; PGD's sign steps amplify rounding
        # where a gradient is near 0, so compare how many pixels and predictions agree, not only the worst pixel
        "max_adv_diff_masked_vs_compact": (adv_masked - adv_compact).abs().max().item(),
        "frac_adv_pixels_within_1e-5": round(((adv_masked - adv_compact).abs() <= 1e-5).float().mean().item(), 4),
        "frac_adv_predictions_equal": round(same_pred, 4),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=1.0, help="VGG-16 width multiplier (1: the paper's network)")
    p.add_argument("--batches", default="64,128")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    p.add_argument("--reps", type=int, default=1, help="calls per round")
    p.add_argument("--data-dir", help="real CIFAR-10 images (python batches or the JPEG layout); default random")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="a smoke test: 1 round of 1 call, batch 8, width 1/8")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.reps, args.batches, args.width = 1, 1, "8", 0.125
    device = torch.device(args.device)
    torch.manual_seed(0)
    sgemm = sgemm_gflops(device)
    batches = [int(b) for b in args.batches.split(",")]
    result = {
        "benchmark": "vgg16_train_step", "device": str(device), "platform": platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "sgemm_gflops": round(sgemm, 1),
        "native_bf16": native_bf16(device)[1],
        "cases": {**{f"at_b{b}": at_case(b, args.width, args.rounds, args.reps, sgemm, device, args.data_dir)
                     for b in batches},
                  "anp_vs_pruned": anp_vs_case(batches[0], args.width, args.rounds, args.reps, sgemm, device,
                                               args.data_dir)},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
