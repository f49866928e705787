"""Throughput of anpvs's training step and PGD-40 evaluation against plain PyTorch doing the same work.

Everything is measured in one process, interleaved over rounds (so drifting machine load hits every
variant alike), and reported as images per second, ratios, and the percentage of this machine's fp32
sgemm bound (FLOPs of the step counted by FlopCounterMode / measured sgemm FLOP/s). Prints JSON.

Cases (LeNet5-Caffe, real digits from the bundled MNIST sample):

* ``at_b64`` / ``at_b256``: one AT step (PGD-10 of step 0.05, eps 0.3, mixed loss, Adam with L2 on the
  weights). ``anpvs`` is :class:`anpvs.training.step.TrainStep`, the callable ``fit()`` runs; ``textbook`` is a
  plain PyTorch model (``nn.Conv2d``, ``F.max_pool2d``) and a hand-written PGD loop with the same
  arithmetic; ``anpvs_bf16`` is the same TrainStep with ``train.precision=bf16``. After the timed
  rounds both fp32 variants are rerun from the same weights and seed and their weights compared.
* ``anp_vs_early`` / ``anp_vs_late``: one ANP-VS step with every unit active (``mask_init=-1``) and with
  the paper's MNIST widths [4, 23, 61, 129]. ``before`` is the step as it was before the engine work
  (attack on the masked network, plain kernels); ``anpvs`` attacks the compacted snapshot with the
  fast kernels.
* ``pgd40_late``: PGD-40 evaluation (B=500) of the late model: masked network with plain kernels vs
  the compacted network; the adversarial examples of both are compared (same seed).

Usage: ``python benchmarks/bench_engine.py [--rounds 5] [--quick]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode, flop_registry

import anpvs.methods.adversarial as adversarial_module
from anpvs.attacks import PGD
from anpvs.data import load_dataset
from anpvs.methods import build_method
from anpvs.models.compact import attack_network
from anpvs.nn.fast import fast_kernels
from anpvs.training.loop import build_model
from anpvs.training.run_config import build_config
from anpvs.training.step import TrainStep, build_optimizers

PAPER_WIDTHS = [4, 23, 61, 129]


def sgemm_gflops(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * n**3 / best / 1e9


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, reps: int) -> dict[str, float]:
    """Median over ``rounds`` of the mean seconds per call of each fn, the fns interleaved in every round."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[k].append((time.perf_counter() - t0) / reps)
    return {k: statistics.median(v) for k, v in times.items()}


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode FLOPs of one eval forward (convolutions and matrix products)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops()


def at_step_flops(fwd: int, pgd_steps: int) -> int:
    """FLOPs of an adversarial training step from those of one forward F: each PGD step is a forward and
    an input-gradient pass (2F), the two training forwards 2F and their backward (input and weight
    gradients) 4F; the conv1 input gradient, which no step needs outside the attack, is counted too."""
    return fwd * (2 * pgd_steps + 6)


# --------------------------------------------------------------------------- the textbook AT loop


class TextbookLeNet(nn.Module):
    """LeNet5-Caffe written the plain way (same parameter names as anpvs's, so weights load across)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.dense3, self.dense4 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2).flatten(1)
        return self.dense4(F.relu(self.dense3(h)))


def textbook_pgd(model: nn.Module, x, y, eps: float, alpha: float, steps: int) -> torch.Tensor:
    x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
    x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="none").sum()
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * g.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
    return x_adv.detach()


def textbook_at_step(model: nn.Module, opt: torch.optim.Optimizer, x, y, eps: float, alpha: float, steps: int):
    model.eval()
    x_adv = textbook_pgd(model, x, y, eps, alpha, steps)
    model.train()
    loss = (F.cross_entropy(model(x), y) + 2 * F.cross_entropy(model(x_adv), y)) / 3
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def textbook_optimizer(model: nn.Module, lr: float, wd: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    return torch.optim.Adam([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)


# --------------------------------------------------------------------------- cases


def digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("mnist_sample")
    return data.train.images[:n].float().div(255), data.train.labels[:n]


def anpvs_step(method_name: str, overrides: dict, x_shape, precision: str = "fp32"):
    cfg = build_config({"method.name": method_name, "attack.steps": 10, "attack.step_size": 0.05,
                        "train.precision": precision, **overrides})
    method = build_method(cfg, n_train=60000)
    model = build_model(cfg, method, x_shape, 10).train()
    return cfg, method, model, TrainStep(method, model, build_optimizers(cfg, model, 10**6), precision=precision)


def at_case(batch: int, rounds: int, reps: int, sgemm: float) -> dict:
    x, y = digits(batch)
    cfg, _, model, step = anpvs_step("at", {}, (1, 28, 28))
    _, _, model16, step16 = anpvs_step("at", {}, (1, 28, 28), precision="bf16")
    tb = TextbookLeNet()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    tb.load_state_dict(init)
    model16.load_state_dict(init)
    tb_opt = textbook_optimizer(tb, cfg.train.lr, cfg.train.weight_decay)
    a = cfg.attack

    def run_tb():
        textbook_at_step(tb, tb_opt, x, y, a.eps, a.step_size, a.steps)

    fns = {"textbook": run_tb, "anpvs": lambda: step(x, y), "anpvs_bf16": lambda: step16(x, y)}
    t = interleaved(fns, rounds, reps)
    flops = at_step_flops(forward_flops(tb, x), a.steps)
    tb.train()

    # same arithmetic: from the same weights and seed, 3 steps of each give the same weights
    _, _, model, step = anpvs_step("at", {}, (1, 28, 28))
    tb.load_state_dict(init)
    model.load_state_dict(init)
    tb_opt = textbook_optimizer(tb, cfg.train.lr, cfg.train.weight_decay)
    for fn in (lambda: step(x, y), run_tb):
        torch.manual_seed(0)
        for _ in range(3):
            fn()
    sd_tb = tb.state_dict()
    diff = max((v - sd_tb[k]).abs().max().item() for k, v in model.state_dict().items() if k in sd_tb)
    bound = flops / (sgemm * 1e9)
    return {
        "batch": batch, "flops_per_step": flops, "mflop_per_image": round(flops / batch / 1e6, 1),
        "img_per_s": {k: round(batch / v, 1) for k, v in t.items()},
        "ms_per_step": {k: round(1e3 * v, 2) for k, v in t.items()},
        "speedup_vs_textbook": {k: round(t["textbook"] / v, 2) for k, v in t.items()},
        "pct_of_sgemm_bound": {k: round(100 * bound / v, 1) for k, v in t.items()},
        "max_weight_diff_after_3_steps_vs_textbook": diff,
    }


def prune_to(model: nn.Module, widths: list[int]) -> None:
    with torch.no_grad():
        masks = [m for m in model.modules() if hasattr(m, "a_uc")]
        for m, w in zip(masks, widths, strict=True):
            m.a_uc.fill_(-10.0)
            m.a_uc[:w] = 5.0


@contextlib.contextmanager
def before_engine():
    """The step as it ran before: attack on the masked network itself, plain kernels."""
    saved = adversarial_module.attack_network
    adversarial_module.attack_network = lambda model: model
    try:
        with fast_kernels(False):
            yield
    finally:
        adversarial_module.attack_network = saved


def anp_vs_case(late: bool, rounds: int, reps: int, sgemm: float) -> dict:
    batch = 64
    x, y = digits(batch)
    _, _, model, step = anpvs_step("anp_vs", {}, (1, 28, 28))
    if late:
        prune_to(model, PAPER_WIDTHS)
    init = {k: v.clone() for k, v in model.state_dict().items()}

    def before():
        with before_engine():
            step(x, y)

    def reset_masks():  # keep the widths fixed while timing (the mask optimizer moves them)
        model.load_state_dict(init)

    def run_new():
        step(x, y)

    t = interleaved({"before": lambda: (reset_masks(), before()), "anpvs": lambda: (reset_masks(), run_new())},
                    rounds, reps)
    # identical attack: the adversarial examples of both paths from the same seed
    net = attack_network(model)
    atk = step.method.attack
    torch.manual_seed(1)
    with fast_kernels(False):
        adv_masked = atk(model, x, y)
    torch.manual_seed(1)
    adv_compact = atk(net, x, y)
    flops = at_step_flops(forward_flops(model, x), step.method.cfg.attack.steps)
    model.train()
    return {
        "widths": [m.n_active() for m in model.modules() if hasattr(m, "n_active")],
        "batch": batch, "img_per_s": {k: round(batch / v, 1) for k, v in t.items()},
        "ms_per_step": {k: round(1e3 * v, 2) for k, v in t.items()},
        "speedup_vs_before": round(t["before"] / t["anpvs"], 2),
        "pct_of_sgemm_bound_of_masked_flops": {k: round(100 * flops / (sgemm * 1e9) / v, 1) for k, v in t.items()},
        "max_adv_diff_masked_vs_compact": (adv_masked - adv_compact).abs().max().item(),
    }


def pgd40_case(rounds: int, reps: int, checkpoint: str | None = None) -> dict:
    batch = 500
    data = load_dataset("mnist_sample")
    x, y = data.test.images[:batch].float().div(255), data.test.labels[:batch]
    cfg = build_config({"method.name": "anp_vs"})
    model = build_model(cfg, build_method(cfg, 60000), (1, 28, 28), 10).eval()
    if checkpoint:  # a trained ANP-VS model (its own widths) instead of the paper's widths on random weights
        from anpvs.models.checkpoint import load_model

        model, _ = load_model(checkpoint)
    else:
        prune_to(model, PAPER_WIDTHS)
    atk = PGD(eps=0.3, step_size=0.01, steps=40)

    def masked():
        with fast_kernels(False):
            return atk(model, x, y)

    def compacted():
        return atk(attack_network(model), x, y)  # the snapshot is built inside, as evaluate() does

    t = interleaved({"masked": masked, "compact": compacted}, rounds, reps)
    torch.manual_seed(2)
    a = masked()
    torch.manual_seed(2)
    b = compacted()
    return {"batch": batch, "img_per_s": {k: round(batch / v, 1) for k, v in t.items()},
            "ms_per_batch": {k: round(1e3 * v, 1) for k, v in t.items()},
            "speedup_vs_masked": round(t["masked"] / t["compact"], 2),
            "max_adv_diff": (a - b).abs().max().item(),
            "frac_pixels_within_1e-5": round(((a - b).abs() <= 1e-5).float().mean().item(), 5),
            **_robust_agreement(model, a, b, y)}


@torch.no_grad()
def _robust_agreement(model: nn.Module, a: torch.Tensor, b: torch.Tensor, y: torch.Tensor) -> dict:
    pa, pb = model(a).argmax(1), model(b).argmax(1)
    return {"pgd40_acc_masked": round(100 * (pa == y).float().mean().item(), 2),
            "pgd40_acc_compact": round(100 * (pb == y).float().mean().item(), 2),
            "frac_predictions_equal": round((pa == pb).float().mean().item(), 4)}


class _OpFlops(TorchDispatchMode):
    """FLOPs per ATen operator (FlopCounterMode's formulas; no module hooks, so it works inside autograd.grad)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        shape = lambda t: t.shape if isinstance(t, torch.Tensor) else t  # noqa: E731
        if packet in flop_registry:
            self.flops[f"aten::{packet.__name__}"] += flop_registry[packet](
                *tree_map(shape, args), **tree_map(shape, kwargs), out_val=tree_map(shape, out))
        elif packet is torch.ops.aten.slow_conv_transpose2d:  # conv1's input gradient (anpvs.nn.fast)
            g, w = args[0], args[1]
            self.flops["aten::slow_conv_transpose2d"] += 2 * g.numel() * w.shape[1] * w.shape[2] * w.shape[3]
        return out


#: the profiler's operators that own the arithmetic, and the dispatcher operator whose FLOPs they do
_ARITH = {"aten::convolution": "aten::convolution", "aten::convolution_backward": "aten::convolution_backward",
          "aten::slow_conv_transpose2d": "aten::slow_conv_transpose2d", "aten::mm": "aten::mm",
          "aten::addmm": "aten::addmm"}


def profile_at_step(batch: int, steps: int = 5) -> dict:
    """Where anpvs's fp32 AT step spends its time: per operator, CPU time per step beside its FLOPs and
    GFLOP/s (arithmetic operators: total time including their kernels; the rest: self time)."""
    from torch.profiler import ProfilerActivity, profile

    x, y = digits(batch)
    _, _, _, step = anpvs_step("at", {}, (1, 28, 28))
    step(x, y)
    counter = _OpFlops()
    with counter:
        step(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(x, y)
    events = {e.key: e for e in prof.key_averages()}
    wall = sum(e.self_cpu_time_total for e in events.values()) / 1e3 / steps
    rows = []
    for key, fkey in _ARITH.items():
        if key in events:
            ms = events[key].cpu_time_total / 1e3 / steps
            gf = counter.flops.get(fkey, 0) / 1e9
            rows.append({"op": key, "ms_per_step": round(ms, 2), "gflop_per_step": round(gf, 3),
                         "gflop_per_s": round(gf / (ms / 1e3), 1) if ms else None})
    arith_ms = sum(r["ms_per_step"] for r in rows)
    wrappers = ("aten::_conv", "aten::mkldnn", "aten::thnn", "aten::conv2d", "aten::linear", "aten::matmul",
                "autograd::", "Optimizer")
    others = sorted((e for k, e in events.items() if k not in _ARITH and not k.startswith(wrappers)),
                    key=lambda e: -e.self_cpu_time_total)[:8]
    rows += [{"op": e.key, "ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 2), "gflop_per_step": 0.0}
             for e in others]
    return {"batch": batch, "profiled_ms_per_step": round(wall, 1), "arithmetic_ms_per_step": round(arith_ms, 1),
            "step_gflop": round(sum(counter.flops.values()) / 1e9, 3), "ops": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    p.add_argument("--quick", action="store_true", help="1 round of 1 call each (a smoke test)")
    p.add_argument("--checkpoint", help="a trained masked checkpoint for the PGD-40 case (default: paper widths)")
    p.add_argument("--profile", action="store_true", help="print only the per-operator profile of the AT step")
    args = p.parse_args()
    if args.profile:
        print(json.dumps({"benchmark": "at_step_profile", "b64": profile_at_step(64), "b256": profile_at_step(256)},
                         indent=1))
        return
    rounds, reps = (1, 1) if args.quick else (args.rounds, 3)
    torch.manual_seed(0)
    sgemm = sgemm_gflops()
    out = {
        "benchmark": "engine", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "sgemm_gflops": round(sgemm, 1),
        "at_b64": at_case(64, rounds, reps, sgemm),
        "at_b256": at_case(256, rounds, max(1, reps - 2), sgemm),
        "anp_vs_early": anp_vs_case(False, rounds, reps, sgemm),
        "anp_vs_late": anp_vs_case(True, rounds, reps, sgemm),
        "pgd40_late": pgd40_case(rounds, max(1, reps - 2), args.checkpoint),
    }
    out["sgemm_gflops_after"] = round(sgemm_gflops(), 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
