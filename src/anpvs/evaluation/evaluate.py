"""Evaluation: clean, white-box and black-box (transfer) accuracy, latent vulnerability, efficiency.

Everything runs on the deterministic test-mode network (expected masks, BN running statistics, no
dropout) over the whole test set (docs/decisions.md item 3). Adversarial examples are computed batch by batch;
the vulnerability is averaged over the whole test set, overall and per layer.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._version import __version__
from ..attacks import autoattack_flags, eval_mode
from ..attacks.base import check_images
from ..core import distributed
from ..core.device import effective_precision
from ..core.errors import StorageError
from ..io.atomic import write_json
from ..metrics.efficiency import weight_stats
from ..metrics.vulnerability import vulnerability
from ..models.checkpoint import git_commit
from ..models.compact import attack_network, compact_stats, efficiency_columns
from ..models.masks import active_units
from ..training.step import autocast


def _attack_seed(seed: int, key: str, batch: int) -> int:
    """The random-state seed of attack ``key`` on batch number ``batch``: each attack's random starts depend on
    ``seed`` and its own name only, not on which other attacks run in the same call (white-box PGD gives the
    same accuracy with or without a black-box source beside it)."""
    return (seed * 1_000_003 + zlib.crc32(key.encode()) * 7_919 + batch) % (2**63 - 1)


def evaluate(model: nn.Module, images: Tensor, labels: Tensor, attacks: Mapping[str, Any] | None = None, *,
             source: nn.Module | None = None, batch_size: int = 500, seed: int = 0,
             vulnerability_reduction: str = "mean", progress: bool = False, ensemble: int = 1,
             precision: str = "fp32") -> dict[str, Any]:
    """Accuracy (%) of ``model`` on clean images and under each attack, plus latent vulnerability.

    Args:
        images, labels: the test set, images float in [0, 1] (or uint8, divided by 255).
        attacks: ``{name: attack}``; each attack is called as ``attack(model, x, y)``.
        source: if given, each attack is also run on this model and transferred to ``model``
            (black-box); results are keyed ``bb_<name>``.
        ensemble: predictions (clean and adversarial) average the softmax of this many forwards; for
            models that sample weights in eval mode (``anpvs.nn.bayes.set_sampling``). The vulnerability
            then compares the latents of one sampled forward of x and one of x'.
        precision: ``"bf16"`` computes the adversarial examples under bf16 autocast (opt-in, faster on CPUs
            with bf16 units); accuracies and vulnerabilities are always measured with float32 forwards.

    Attacks on a masked model (and a masked source) run on its compacted network
    (:func:`anpvs.models.compact.attack_network`), which computes the same test-mode function for the cost of
    the surviving units; accuracy and latents are read from ``model`` itself.

    Returns ``{"n": N, "clean_acc": ..., "<name>_acc": ..., "<name>_vulnerability": ...,
    "<name>_vulnerability_per_layer": [...], "bb_<name>_acc": ..., ...}``, and ``"<name>_flags"``: the
    warnings AutoAttack's own reliability checks gave during that attack (``"batch 0: Square Attack has
    decreased ..."``), where there were any (under ``torchrun``: those of rank 0's share).
    """
    attacks = dict(attacks or {})
    if ensemble < 1:
        raise ValueError(f"ensemble must be >= 1, got {ensemble}")
    check_images(images, "evaluate()'s images")
    device = next(model.parameters()).device
    precision = effective_precision(precision, device, "precision")  # fp32 where bf16 would be emulated
    world = distributed.current()
    if world.enabled:  # under torchrun every rank evaluates its share of the test set; counts are summed
        lo, hi = distributed.shard_bounds(len(images), world)
        images, labels = images[lo:hi], labels[lo:hi]
        seed = seed + world.rank
    torch.manual_seed(seed)  # sampled forwards are reproducible; every attack call is seeded on its own below
    correct: dict[str, int] = {"clean": 0}
    vsum: dict[str, Tensor] = {}
    flags: dict[str, list[str]] = {}  # AutoAttack's own reliability warnings, per attack
    n = 0
    kinds = [(name, atk, False) for name, atk in attacks.items()]
    if source is not None:
        kinds += [(f"bb_{name}", atk, True) for name, atk in attacks.items()]
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        if source is not None:
            stack.enter_context(eval_mode(source))
        target_net = attack_network(model)
        source_net = attack_network(source) if source is not None else None
        batches = range(0, len(images), batch_size)
        # disable=None: tqdm hides the bar when stderr is not a terminal (CI logs stay readable)
        for b, i in enumerate(tqdm(batches, desc="evaluate", leave=False, disable=None if progress else True)):
            x = images[i:i + batch_size].to(device)
            x = x.float().div(255) if x.dtype == torch.uint8 else x
            y = labels[i:i + batch_size].to(device)
            with torch.no_grad():
                logits, latents = _forward(model, x, ensemble)
            correct["clean"] += (logits.argmax(1) == y).sum().item()
            for key, atk, transfer in kinds:
                torch.manual_seed(_attack_seed(seed, key, b))
                with autocast(precision, x.device), autoattack_flags() as found:
                    x_adv = atk(source_net if transfer else target_net, x, y)
                flags.setdefault(key, []).extend(f"batch {b}: {m}" for m in found)
                with torch.no_grad():
                    logits_adv, latents_adv = _forward(model, x_adv, ensemble)
                    _, per_layer = vulnerability(latents, latents_adv, reduction=vulnerability_reduction)
                correct[key] = correct.get(key, 0) + (logits_adv.argmax(1) == y).sum().item()
                vsum[key] = vsum.get(key, 0) + torch.stack(per_layer) * len(y)
            n += len(y)
    if world.enabled:
        keys = [k for k, _, _ in kinds]
        n_layers = len(next(iter(vsum.values()))) if vsum else 0
        flat = torch.tensor([n, correct["clean"], *(correct.get(k, 0) for k in keys)], dtype=torch.float64)
        flat = torch.cat([flat, *(vsum.get(k, torch.zeros(n_layers)).double().cpu() for k in keys)])
        flat = distributed.all_reduce_sum(flat)
        n, correct["clean"] = int(flat[0]), int(flat[1])
        for i, k in enumerate(keys):
            correct[k] = int(flat[2 + i])
            start = 2 + len(keys) + i * n_layers
            vsum[k] = flat[start:start + n_layers].float()
    out: dict[str, Any] = {"n": n, "clean_acc": round(100.0 * correct["clean"] / n, 2)}
    for key, _, _ in kinds:
        per_layer = (vsum[key] / n).tolist()
        out[f"{key}_acc"] = round(100.0 * correct[key] / n, 2)
        out[f"{key}_vulnerability"] = round(sum(per_layer) / len(per_layer), 5)
        out[f"{key}_vulnerability_per_layer"] = [round(v, 5) for v in per_layer]
        if flags.get(key):
            out[f"{key}_flags"] = flags[key]
    return out


def _forward(model: nn.Module, x: Tensor, ensemble: int) -> tuple[Tensor, list[Tensor]]:
    """``(logits, latents)``; with ``ensemble > 1`` the logits are the log of the mean softmax of that many
    forwards (the latents are those of the first)."""
    logits, latents = model.forward_intermediates(x)
    if ensemble > 1:
        probs = logits.softmax(1)
        for _ in range(ensemble - 1):
            probs += model(x).softmax(1)
        logits = probs.div_(ensemble).log()
    return logits, latents


def efficiency(model: nn.Module, *, latency: bool = True, latency_budget_s: float = 0.2) -> dict[str, Any]:
    """The paper's efficiency columns (analytic), weight statistics of the model as stored, the size and
    FlopCounterMode cost of the physically compacted network (:func:`anpvs.models.compact.compact_stats`; for an
    unmasked model the compacted network has the same size) and, with ``latency``, the measured wall-clock
    cost of both on the model's device (:func:`efficiency_latency`).

    ``model`` may itself be a compacted network (a checkpoint of ``anpvs compact``): the analytic columns are
    then those of the masked model it came from, and the masked side of the comparison is that
    architecture, rebuilt (a masked forward costs the same whatever the mask values)."""
    from ..models.compact import compact_pair, is_compact

    units = list(model.source_units) if is_compact(model) else active_units(model)
    masked, net = compact_pair(model)
    rep = efficiency_columns(masked, units, net=net)
    ws = weight_stats(net if is_compact(model) else model)
    cs = compact_stats(model)
    out = {
        "active_units": rep["active_units"],
        "unit_sparsity": round(rep["unit_sparsity"], 2),
        "flops_speedup": round(rep["flops_speedup"], 3),
        "memory_pct": round(rep["memory_pct"], 2),
        "weight_sparsity": round(ws["weight_sparsity"], 2),
        "params": ws["params"],
        "compact_params": cs["compact_params"],
        "compact_bytes": cs["compact_bytes"],
        "compact_flops": cs["compact_flops"],
        "dense_flops": cs["dense_flops"],
        "counted_flops_speedup": round(cs["counted_flops_speedup"], 3),
        "compact_widths": cs["compact_widths"],
    }
    if latency:
        out.update(efficiency_latency(masked, net, budget_s=latency_budget_s))
    return out


def efficiency_latency(masked: nn.Module, net: nn.Module, *, budget_s: float = 0.2) -> dict[str, Any]:
    """Median wall-clock latency (ms) at batch 1 and 256 of the masked and the compacted network on their
    device, interleaved (:func:`anpvs.metrics.latency.median_latency`), and the measured speed-ups
    ``wallclock_speedup_b1`` / ``wallclock_speedup_b256`` (masked / compacted)."""
    from ..metrics.latency import latency_device, median_latency
    from ..models.compact import example_shape

    device = next(net.parameters()).device
    ms = median_latency({"masked": masked, "compact": net}, example_shape(masked), batch_sizes=(1, 256),
                        budget_s=budget_s)
    out: dict[str, Any] = {"latency_ms": ms, "latency_device": latency_device(device)}
    for b in ("b1", "b256"):
        out[f"wallclock_speedup_{b}"] = round(ms["masked"][b] / ms["compact"][b], 3)
    return out


def evaluation_record(*, model_name: str, method: str, dataset: str, seed: int, attack: dict[str, Any],
                      metrics: dict[str, Any], checkpoint: str | None = None,
                      source: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One flat, self-describing JSON record per evaluation (RobustBench-style)."""
    return {
        "model": model_name,
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "attack": attack,
        "black_box_source": source,
        "checkpoint": checkpoint,
        "metrics": metrics,
        "anpvs_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }


def write_record(record: dict[str, Any], path: str | Path) -> None:
    """Write a record atomically (:func:`anpvs.io.write_json`). A :class:`~anpvs.core.errors.StorageError` (the
    disk filled up, a quota, a read-only file system) carries ``record`` as its ``result``: what the command
    computed is kept for its caller (``anpvs eval`` and ``anpvs check`` print it instead)."""
    try:
        write_json(path, record)
    except StorageError as err:
        err.result = record
        raise
