"""Subnormal weights and the AT step: the same PGD-20 AT step on LeNet5-Caffe (batch 64) with a share of its
conv2 / dense3 weights subnormal or below 1e-30 (half each), against the same network with those entries zeroed (what
:func:`anpvs.training.step.flush_subnormals_` does after every optimizer step). Also the largest difference of the
two networks' logits (0 expected). Prints JSON. Usage: ``python benchmarks/bench_subnormal.py [--share 0.25]``.

Why: weights that only weight decay moves shrink under Adam until they are subnormal; a full-MNIST AT run had 22%
of conv2's and 28% of dense3's weights subnormal after two epochs and its step took 7x longer.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from anpvs.attacks import PGD
from anpvs.models import create_model
from anpvs.training.step import flush_subnormals_


def at_step(model, x, y, attack) -> None:
    xa = attack(model, x, y)
    model.train()
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(xa), y).backward()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--share", type=float, default=0.25, help="share of conv2 / dense3 weights made subnormal")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    slow = create_model("lenet5_caffe")
    with torch.no_grad():
        for w in (slow.conv2.weight, slow.dense3.weight):
            pick = torch.rand_like(w) < args.share
            # half subnormal in float32 (below 1.18e-38), half tiny normal numbers with subnormal products
            w[pick] = torch.sign(w[pick]) * torch.where(torch.rand_like(w[pick]) < 0.5, 1e-40, 1e-33)
    n_sub = sum(int(((w != 0) & (w.abs() < 1e-30)).sum()) for w in slow.parameters())
    fast = copy.deepcopy(slow)
    flush_subnormals_(list(fast.parameters()))
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    slow.eval(), fast.eval()
    with torch.no_grad():
        diff = float((slow(x) - fast(x)).abs().max())
    attack = PGD(eps=0.3, step_size=0.01, steps=20)
    best = {"subnormal": float("inf"), "flushed": float("inf")}
    for _ in range(args.rounds):
        for name, model in (("subnormal", slow), ("flushed", fast)):
            at_step(model, x, y, attack)  # settle
            t0 = time.perf_counter()
            at_step(model, x, y, attack)
            best[name] = min(best[name], time.perf_counter() - t0)
    print(json.dumps({"benchmark": "subnormal_weights_at_step", "model": "lenet5_caffe", "batch": 64,
                      "pgd_steps": 20, "weights_below_1e-30": n_sub, "threads": torch.get_num_threads(),
                      "ms": {k: round(v * 1000, 1) for k, v in best.items()},
                      "slowdown_subnormal_over_flushed": round(best["subnormal"] / best["flushed"], 2),
                      "max_abs_logit_difference": diff}, indent=2))


if __name__ == "__main__":
    main()
