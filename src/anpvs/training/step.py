"""The training step as one callable, shared by :func:`anpvs.training.loop.fit` and ``benchmarks/``.

:func:`build_optimizers` makes the parameter groups, optimizers and LR schedulers of a config, and
:class:`TrainStep` runs one step: the method's loss dict (under bf16 autocast if asked), the
backward pass(es), the gradient all-reduce of a distributed run, the optimizer and scheduler steps and
the method's per-step hook. The model's sparsifiers (:mod:`anpvs.sparsifiers`) each bring their parameters,
optimizer and loss: with Beta-Bernoulli masks there are two losses and two optimizers, as the reference code
(the masks see only ``mask_loss``, ``CE_adv + beta * KL / N``; the weights only ``loss``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.config import Config
from ..methods import Method
from ..sparsifiers import Sparsifier, sparsifiers_of

PRECISIONS = ("fp32", "bf16")


def lr_factor(cfg: Config, total_steps: int):
    """LR multiplier per optimizer step.

    ``staircase`` (reference): ``gamma ** (milestones passed)``, milestones as fractions of all steps;
    ``cosine``: half a cosine from 1 to 0 over training; ``constant``: 1."""
    t = cfg.train
    if t.schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    if t.schedule == "constant":
        return lambda step: 1.0
    bounds = sorted(max(1, int(round(m * total_steps))) for m in t.lr_milestones)
    return lambda step: t.lr_gamma ** sum(step >= b for b in bounds)


def lr_depends_on_total(cfg: Config) -> bool:
    """Whether :func:`lr_factor` changes with the number of steps (cosine, staircase with milestones)."""
    t = cfg.train
    return t.schedule == "cosine" or (t.schedule == "staircase" and bool(t.lr_milestones))


def make_optimizer(cfg: Config, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.train.momentum, nesterov=cfg.train.momentum > 0)
    return torch.optim.Adam(groups, lr=lr)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(the sparsifiers' parameters, e.g. masks; decayed weights = conv/linear weight tensors; other weights =
    biases and BN)."""
    masks = [p for s in sparsifiers_of(model) for p in s.parameters()]
    mask_ids = {id(p) for p in masks}
    decay, no_decay = [], []
    for p in model.parameters():
        if id(p) in mask_ids or not p.requires_grad:
            continue
        (decay if p.dim() > 1 else no_decay).append(p)
    return masks, decay, no_decay


@dataclass
class Optimization:
    """What :func:`build_optimizers` returns: the parameter lists (``masks``: every sparsifier's), the model's
    sparsifiers and, per name ("weights", then each sparsifier's, e.g. "masks"), an optimizer and its LR
    scheduler."""

    masks: list[nn.Parameter]
    weights: list[nn.Parameter]
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    sparsifiers: list[Sparsifier] = dataclasses.field(default_factory=list)


def build_optimizers(cfg: Config, model: nn.Module, total_steps: int,
                     sparsifiers: list[Sparsifier] | None = None) -> Optimization:
    """Adam/SGD on the weights, and each sparsifier's own optimizer (Adam on the masks). L2 (``train.weight_decay``)
    on the conv/linear weight tensors only, or with ``train.decay_scope="all"`` on every weight-optimizer
    parameter (biases, BN too). ``sparsifiers``: default the model's (:func:`sparsifiers_of`); ``fit`` adds the
    method's."""
    sparsifiers = sparsifiers_of(model) if sparsifiers is None else sparsifiers
    masks, decay, no_decay = split_parameters(model)
    if cfg.train.decay_scope == "all":
        decay, no_decay = decay + no_decay, []
    opt_w = make_optimizer(cfg, [{"params": decay, "weight_decay": cfg.train.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], cfg.train.lr)
    optimizers: dict[str, torch.optim.Optimizer] = {"weights": opt_w}
    for s in sparsifiers:
        if s.parameters():
            optimizers[s.name] = s.make_optimizer(cfg)
    factor = lr_factor(cfg, total_steps)
    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in optimizers.items()}
    return Optimization(masks, decay + no_decay, optimizers, schedulers, sparsifiers)


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision="bf16"``, else a no-op context."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


#: parameters below this magnitude are zeroed after every step (float32 and narrower; float64: its own ``tiny``)
FLUSH_BELOW = 1e-30


def flush_subnormals_(params: Sequence[Tensor]) -> None:
    """Zero the entries of the floating-point ``params`` that are subnormal or small enough to make subnormal
    products: magnitude below :data:`FLUSH_BELOW` (float64: below its smallest normal number), in place.

    Weights that only weight decay moves (those of dead units) shrink under Adam towards zero, and a CPU
    multiplies subnormal operands many times slower: a full-MNIST AT run's PGD-20 step took 7x longer after two
    epochs, with 22% of conv2's and 28% of dense3's weights subnormal; zeroing only those still left the step 2x
    slower three epochs later, from weights of 1e-38 to 1e-30 whose products with the activations are
    subnormal (``benchmarks/bench_subnormal.py``, docs/performance.md). Such products are far below any sum that
    holds a normal term, so zeroing them leaves the forward pass unchanged (a test checks it)."""
    with torch.no_grad():
        for p in params:
            if p.is_floating_point():
                info = torch.finfo(p.dtype)
                bound = info.tiny if info.bits > 32 else max(FLUSH_BELOW, info.tiny)
                p.masked_fill_(p.abs() < bound, 0.0)


class TrainStep:
    """One training step of ``method`` on ``model``: ``out = step(x, y)`` returns the method's loss dict.

    Args:
        precision: ``"fp32"`` or ``"bf16"``: the method's forward passes (training attack included) run
            under bf16 autocast; the masks' KL, the losses' reductions, the backward pass, the parameters
            and the optimizer states stay float32.
        check: called with the loss dict before the backward pass (``fit`` raises on a non-finite loss).
        grad_sync: called after the backward pass(es) with the parameters whose gradients the optimizers
            read (a distributed run averages them over ranks, :func:`anpvs.core.distributed.all_reduce_grads`).

    After the optimizers' step the parameters' entries below 1e-30 in magnitude are set to zero
    (:func:`flush_subnormals_`).
    """

    def __init__(self, method: Method, model: nn.Module, opt: Optimization, *, precision: str = "fp32",
                 check: Callable[[dict[str, Any]], None] | None = None,
                 grad_sync: Callable[[list[nn.Parameter]], None] | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.method, self.model, self.opt = method, model, opt
        self.precision = precision
        self.check = check
        self.grad_sync = grad_sync
        self._params = opt.masks + opt.weights

    def __call__(self, x: Tensor, y: Tensor) -> dict[str, Any]:
        opt = self.opt
        with autocast(self.precision, x.device):
            out = self.method.loss(self.model, x, y)
        if self.precision != "fp32":
            out = {k: v.float() if isinstance(v, Tensor) and v.is_floating_point() else v for k, v in out.items()}
        for s in opt.sparsifiers:  # e.g. ADMM's rho/2 ||W - Z + U||^2 joins the weights' loss
            penalty = s.penalty(self.model)
            if penalty is not None:
                out["loss"] = out["loss"] + penalty
                out[f"{s.name}_penalty"] = penalty.detach()
        if self.check is not None:
            self.check(out)
        for o in opt.optimizers.values():
            o.zero_grad(set_to_none=True)
        loss = out["loss"]
        own = [(out[s.loss_key], s.parameters()) for s in opt.sparsifiers
               if s.loss_key in out and s.parameters()]
        if own:
            # One loss per parameter group: each sparsifier's parameters see only their loss, the weights only loss.
            for own_loss, params in own:
                own_loss.backward(inputs=params, retain_graph=True)
            loss.backward(inputs=opt.weights)
        else:
            loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(self._params)
        for o in opt.optimizers.values():
            o.step()
        for s in opt.schedulers.values():
            s.step()
        flush_subnormals_(self._params)
        self.method.on_step_end(self.model)
        for s in opt.sparsifiers:
            s.on_step_end(self.model)
        return out
