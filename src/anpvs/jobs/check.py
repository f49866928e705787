"""``anpvs check``: the sanity checks of :mod:`anpvs.evaluation.checks` and an eps sweep of one checkpoint, a record."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.config import EvalSpec
from ..core.errors import ConfigError, check_output_file
from ..evaluation.checks import check_eps_sweep, check_model, check_robust_above_clean, eps_sweep, sweep_eps
from ..evaluation.evaluate import evaluation_record, write_record
from ..io.rundir import RunDir
from ..models.checkpoint import checkpoint_paths, is_compact_checkpoint
from .context import check_batch_size, dataset_record, open_run, sampling_setup


def check_checkpoint(checkpoint: str | Path, *, eps_values: Sequence[float] | None = None, steps: int | None = None,
                     test_limit: int | None = 1000, probe_size: int = 256, sample_weights: bool = False,
                     eot: int | None = None, ensemble: int | None = None, data_dir: str | None = None,
                     dataset: str | None = None, batch_size: int | None = None, seed: int = 0, device: str = "auto",
                     out: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """``anpvs check``: checks (a) to (c) on a test batch, an eps sweep with checks (d) and (f); writes
    ``check.json`` beside the checkpoint (or to ``out``) and returns the record (``"warnings"``: all texts).
    ``dataset``: another dataset's test split instead of the run's, as ``anpvs eval --dataset`` (e.g.
    ``mnist_test_sample``, offline); its record is ``check_NAME.json``, the run's own is not replaced."""
    # a compacted checkpoint usually sits beside its source: its record must not replace the source's;
    # a pretrained model's goes to runs/pretrained/NAME/, never into the registry (checkpoint_paths)
    file, home = checkpoint_paths(checkpoint)
    default = RunDir.of(home).check_record(compact=out is None and is_compact_checkpoint(checkpoint))
    default, dataset = dataset_record(default, dataset)  # checked before the work
    out = check_output_file(out if out is not None else default, inputs=[file])  # before the work
    check_batch_size(batch_size)
    run = open_run(checkpoint, device=device)
    model, ckpt, cfg, dev = run.model, run.ckpt, run.cfg, run.device
    e = EvalSpec.of(cfg)  # the radius, norm and attack every command evaluates the run at
    steps = e.steps if steps is None else steps
    if steps < 1 or (test_limit is not None and test_limit < 1):
        raise ConfigError(f"steps and --test-limit must be >= 1 (got {steps}, {test_limit})")
    eot, ensemble = sampling_setup(model, sample_weights, eot, ensemble)
    data = run.test_data(dataset=dataset, data_dir=data_dir, test_limit=test_limit)
    norm = e.norm
    if eps_values is None:
        eps_values = sweep_eps(e.eps, norm, data.test.images.shape[1:])
    eps_values = sorted(float(v) for v in eps_values)
    if not eps_values or eps_values[0] < 0:
        raise ConfigError(f"the eps sweep needs radii >= 0 (got {eps_values})")

    torch.manual_seed(seed)
    x = data.test.images[:probe_size].to(dev).float().div(255)
    y = data.test.labels[:probe_size].to(dev)
    found = {"model": check_model(model, x, y, eot=eot)}
    clean_acc, rows = eps_sweep(model, data.test.images, data.test.labels, eps_values, step_size=e.step_size,
                                steps=steps, norm=norm, eot=eot, ensemble=ensemble,
                                batch_size=batch_size or e.batch_size, seed=seed, progress=progress)
    attacked = {f"PGD at eps={r['eps']:g}": r["acc"] for r in rows if r["eps"] > 0}
    found["robust_above_clean"] = check_robust_above_clean(clean_acc, attacked)
    found["eps_sweep"] = check_eps_sweep([r["eps"] for r in rows], [r["acc"] for r in rows], n=len(data.test))
    all_warnings = [w for ws in found.values() for w in ws]
    record = evaluation_record(
        model_name=ckpt["model_name"], method=cfg.method.name, dataset=data.name, seed=cfg.seed,
        attack={"name": "pgd eps sweep", "norm": norm, "eps_units": "pixel ([0,1] images)", "steps": steps,
                "step_size": f"max({e.step_size}, 2.5*eps/{steps})", "restarts": 1, "random_start": True,
                "eot": eot, "sampled_weights": sample_weights, "ensemble": ensemble, "attack_seed": seed},
        metrics={"n": len(data.test), "clean_acc": clean_acc, "sweep": rows}, checkpoint=str(checkpoint),
        extra={"checks": found, "warnings": all_warnings, "probe_size": len(x),
               "checked_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    write_record(record, out)  # a full disk's StorageError carries the record: the checks' result is kept
    record["record_path"] = str(out)
    return record


def format_check(record: dict[str, Any]) -> str:
    """The eps -> accuracy table and the warnings of a :func:`check_checkpoint` record, as text."""
    m, a = record["metrics"], record["attack"]
    lines = [f"{record['method']} on {record['dataset']} ({m['n']} test images, {record['model']}); "
             f"PGD-{a['steps']} {a['norm']}, step {a['step_size']}"
             + (f", EOT {a['eot']}" if a["eot"] > 1 else "")
             + (f", sampled weights, ensemble {a['ensemble']}" if a["sampled_weights"] else ""),
             "  eps      step     accuracy",
             *(f"  {r['eps']:<8g} {r['step_size']:<8.4g} {r['acc']:6.2f}%" for r in m["sweep"])]
    ws = record["warnings"]
    lines.append(f"  {len(ws)} warning(s)" + (":" if ws else "; no sanity check fired"))
    lines += [f"  - {w}" for w in ws]
    lines.append(f"  record: {record.get('record_path', '-')}")
    return "\n".join(lines)


__all__ = ["check_checkpoint", "format_check"]
