"""Cost of one training step per method, relative to Standard, on LeNet5-Caffe (batch 64).

Each method's step is :class:`anpvs.training.step.TrainStep`, the callable ``fit()`` runs (method loss, one or two
backward passes, both optimizers and schedulers, the method's hook), timed in the same process,
interleaved over rounds; the JSON gives ms/step and the ratio to Standard. Usage:
``python benchmarks/bench_train_step.py [--methods standard,at,anp_vs] [--steps 10]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from anpvs.methods import METHODS, build_method
from anpvs.training.loop import build_model
from anpvs.training.run_config import build_config
from anpvs.training.step import TrainStep, build_optimizers


def make_step(method_name: str, pgd_steps: int):
    cfg = build_config({"method.name": method_name, "attack.steps": pgd_steps})
    method = build_method(cfg, n_train=60000)
    model = build_model(cfg, method, (1, 28, 28), 10).train()
    step = TrainStep(method, model, build_optimizers(cfg, model, total_steps=10**6))
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    return lambda: step(x, y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="standard,at,at_vs,anp,anp_vs,trades")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--pgd-steps", type=int, default=10)
    args = p.parse_args()
    torch.manual_seed(0)
    names = [m for m in args.methods.split(",") if m in METHODS]
    steps = {m: make_step(m, args.pgd_steps) for m in names}
    best = {m: float("inf") for m in names}
    for _ in range(3):
        for m, fn in steps.items():
            fn()  # warm-up / settle
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            best[m] = min(best[m], (time.perf_counter() - t0) / args.steps)
    base = best.get("standard", next(iter(best.values())))
    print(json.dumps({"benchmark": "train_step_ms", "model": "lenet5_caffe", "batch": 64,
                      "pgd_steps": args.pgd_steps, "threads": torch.get_num_threads(),
                      "results": {m: {"ms": round(1e3 * t, 2), "vs_standard": round(t / base, 2)}
                                  for m, t in best.items()}}, indent=2))


if __name__ == "__main__":
    main()
