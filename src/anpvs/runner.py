"""High-level jobs used by the CLI: evaluate a checkpoint, and the demo (the README's main job)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from .attacks import FGSM, PGD
from .checkpoint import load_model, read_checkpoint
from .config import build_config, config_from_dict
from .data import load_dataset
from .evaluate import efficiency, evaluate, evaluation_record, write_record
from .report import markdown_table
from .train import fit, resolve_device

log = logging.getLogger(__name__)


def evaluate_checkpoint(checkpoint: str | Path, *, attacks: list[str] | tuple[str, ...] = ("pgd",),
                        eps: float | None = None, step_size: float | None = None, steps: int | None = None,
                        restarts: int | None = None, norm: str | None = None, source: str | Path | None = None,
                        data_dir: str | None = None, test_limit: int | None = None, batch_size: int | None = None,
                        seed: int = 0, device: str = "auto", out: str | Path | None = None,
                        progress: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint on its dataset's test set and write one JSON record; returns the record."""
    from .config import ConfigError

    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, map_location=dev)
    cfg = config_from_dict(ckpt["config"])
    e = cfg.eval
    eps = e.eps if eps is None else eps
    step_size = e.step_size if step_size is None else step_size
    steps = e.steps if steps is None else steps
    restarts = e.restarts if restarts is None else restarts
    norm = norm or e.norm
    if eps < 0 or step_size <= 0 or steps < 1 or restarts < 1:
        raise ConfigError(f"invalid attack: eps={eps} must be >= 0, step_size={step_size} > 0, "
                          f"steps={steps} >= 1, restarts={restarts} >= 1")
    if test_limit is not None and test_limit < 1:
        raise ConfigError(f"--test-limit must be >= 1 (got {test_limit})")
    built = {}
    for name in attacks:
        built[name] = (PGD(eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm)
                       if name == "pgd" else FGSM(eps, norm=norm))
    src_model = None
    if source is not None:
        src_model, src_ckpt = load_model(source, map_location=dev)
        if src_ckpt["model_kwargs"].get("num_classes") != ckpt["model_kwargs"].get("num_classes"):
            raise ConfigError("the black-box source predicts a different number of classes than the target")
    d = cfg.data
    data = load_dataset(d.name, data_dir or d.dir, download=d.download, test_limit=test_limit or d.test_limit,
                        seed=d.seed)
    t0 = time.time()
    metrics = evaluate(model, data.test.images, data.test.labels, built, source=src_model,
                       batch_size=batch_size or e.batch_size, seed=seed, progress=progress)
    metrics.update(efficiency(model))
    metrics["eval_time_s"] = round(time.time() - t0, 1)
    record = evaluation_record(
        model_name=ckpt["model_name"], method=cfg.method.name, dataset=data.name, seed=cfg.seed,
        attack={"name": "+".join(attacks), "norm": norm, "eps": eps, "eps_units": "pixel ([0,1] images)",
                "step_size": step_size, "steps": steps, "restarts": restarts, "random_start": True,
                "attack_seed": seed},
        metrics=metrics, checkpoint=str(checkpoint), source=str(source) if source else None,
        extra={"data_source": data.source, "epochs": ckpt.get("epoch")})
    out = Path(out) if out else Path(checkpoint).parent / ("eval_bb.json" if source else "eval.json")
    write_record(record, out)
    record["record_path"] = str(out)
    return record


def format_eval(record: dict[str, Any]) -> str:
    m, a = record["metrics"], record["attack"]
    lines = [f"{record['method']} on {record['dataset']} ({m['n']} test images, {record['model']})",
             f"  clean accuracy        {m['clean_acc']:.2f}%"]
    for key in [k[:-4] for k in m if k.endswith("_acc") and k != "clean_acc"]:
        label = f"{'black-box ' if key.startswith('bb_') else ''}{key.removeprefix('bb_').upper()}"
        lines.append(f"  {label:<21} {m[key + '_acc']:.2f}%   vulnerability {m[key + '_vulnerability']:.4f}")
    lines.append(f"  attack: {a['norm']} eps={a['eps']} ({a['eps_units']}), step {a['step_size']}, "
                 f"{a['steps']} steps, {a['restarts']} restart(s)")
    lines.append(f"  active units {m['active_units']}  unit sparsity {m['unit_sparsity']:.2f}%  "
                 f"memory {m['memory_pct']:.2f}%  FLOPs x{m['flops_speedup']:.2f}  "
                 f"weight sparsity {m['weight_sparsity']:.2f}%  params {m['params']}")
    lines.append(f"  record: {record.get('record_path', '-')}")
    return "\n".join(lines)


# The demo: real MNIST digits bundled in the package, small budgets that fit a 2-core CPU.
DEMO_COMMON = {"data.name": "mnist_sample", "data.val_size": 500, "train.lr_milestones": [],
               "attack.steps": 10, "attack.step_size": 0.05}
DEMO_RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("Standard", "standard", {"method.name": "standard", "train.epochs": 10}),
    ("AT", "at", {"method.name": "at", "train.epochs": 12}),
]


def run_demo(out: str | Path, *, epochs_scale: float = 1.0, device: str = "auto", progress: bool = True) -> str:
    """Train and evaluate the demo rows on the bundled MNIST sample; return the table as Markdown."""
    out = Path(out)
    rows: dict[str, list[dict[str, Any]]] = {}
    for label, run_name, overrides in DEMO_RUNS:
        ov = {**DEMO_COMMON, **overrides, "out": str(out / run_name), "device": device}
        ov["train.epochs"] = max(1, round(ov["train.epochs"] * epochs_scale))
        if "init" in ov:
            ov["init"] = str(out / ov["init"] / "checkpoint.pt")
        cfg = build_config(ov)
        log.info("demo: training %s (%d epochs)", label, cfg.train.epochs)
        summary = fit(cfg, resume=True, progress=progress)
        record = evaluate_checkpoint(summary["checkpoint"], device=device, progress=progress)
        rows[label] = [record["metrics"]]
    table = markdown_table(rows)
    ckpt = read_checkpoint(out / DEMO_RUNS[0][1] / "checkpoint.pt")
    note = (f"\nMNIST sample ({ckpt['data']['source']}), test set of {rows[DEMO_RUNS[0][0]][0]['n']} digits; "
            f"white-box = PGD-40, L-inf eps 0.3, step 0.01, random start; black-box: see `anpvs eval "
            f"--attack-source`.\n")
    (out / "table.md").write_text(table + "\n" + note)
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    return table + "\n" + note + f"\nwritten to {out / 'table.md'}"


__all__ = ["evaluate_checkpoint", "format_eval", "run_demo", "torch"]
