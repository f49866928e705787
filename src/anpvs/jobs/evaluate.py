"""``anpvs eval``: evaluate a checkpoint on its test set and write one JSON record beside it."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..attacks import ThreatSpec
from ..core.config import MAX_FLOAT, EvalSpec
from ..core.device import effective_precision
from ..core.errors import ConfigError, check_output_file
from ..core.registry import ATTACKS
from ..evaluation.checks import check_metrics
from ..evaluation.evaluate import efficiency, evaluate, evaluation_record, write_record
from ..io.rundir import RunDir
from ..methods.target import asked_target
from ..models.base import output_classes
from ..models.checkpoint import CheckpointError, checkpoint_name, checkpoint_paths, is_compact_checkpoint, load_model
from ..training.run_config import checkpoint_config
from .context import check_batch_size, dataset_record, is_other_dataset, open_run, sampling_setup

log = logging.getLogger(__name__)

def _check_source(source: torch.nn.Module, src_ckpt: dict[str, Any], ckpt: dict[str, Any], x: torch.Tensor,
                  num_classes: int) -> None:
    """The black-box source must take the target's images and predict the same classes (the input shape first:
    a VGG-16 source of a LeNet target fails there, whatever the classes)."""
    shapes = [c.get("data", {}).get("input_shape") for c in (ckpt, src_ckpt)]
    if None not in shapes and list(shapes[0]) != list(shapes[1]):
        raise ConfigError(f"the black-box source was trained on images of shape {tuple(shapes[1])}, "
                          f"the target on {tuple(shapes[0])}")
    classes = output_classes(source, x)
    if classes is None:
        raise ConfigError(f"the black-box source does not accept the target's test images of shape "
                          f"{tuple(x.shape[1:])}")
    if classes != num_classes:
        raise ConfigError(f"the black-box source predicts {classes} classes, the target's dataset has {num_classes}")


def evaluate_checkpoint(checkpoint: str | Path, *, spec: EvalSpec | None = None,
                        attacks: list[str] | tuple[str, ...] = ("pgd",), source: str | Path | None = None,
                        data_dir: str | None = None, test_limit: int | None = None, seed: int = 0,
                        device: str = "auto", out: str | Path | None = None, progress: bool = False,
                        eot: int | None = None, sample_weights: bool = False, ensemble: int | None = None,
                        dataset: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Evaluate a checkpoint on its dataset's test set and write one JSON record; returns the record.

    ``spec``: where and how to attack (:class:`anpvs.core.config.EvalSpec`); default: the run's own
    (``EvalSpec.of(cfg)``, its ``eval.*`` section: the radius and norm the model is evaluated at by every
    command). ``overrides``: fields of the spec to replace, ``None`` keeping the spec's (``eps``, ``norm``,
    ``step_size``, ``steps``, ``restarts``, ``batch_size``, ``precision``, ``latency``: the CLI's flags).
    ``eot``: PGD/FGSM gradients averaged over this many forwards. ``sample_weights``: a Bayesian model samples
    its weights in eval mode; predictions average the softmax of ``ensemble`` forwards and the attacks use EOT
    (both default to 10). ``"autoattack"`` always runs beside ``"pgd"`` (``version="rand"`` when sampling).
    ``dataset``: evaluate on the test split of this registered dataset instead of the run's (e.g.
    ``mnist_test_sample``, 2,000 real MNIST test digits bundled with the package): read from ``data_dir`` only,
    the run's ``data.test_limit`` not applied, a one-line :class:`ConfigError` for an unknown name
    and when its images or classes are not the model's; the default record is then
    ``eval_<dataset>.json`` (``eval_compact_<dataset>.json``, ...), so the run's own record is kept (the run's
    own dataset named again changes only the record's name).
    The sanity checks (d) and (e) of :mod:`anpvs.evaluation.checks` run on the results: ``record["warnings"]``.
    ``latency`` adds the wall-clock latency of the masked and the compacted network
    (:func:`anpvs.evaluation.evaluate.efficiency`), measured after the attacks."""
    EvalSpec.check_names(overrides)  # an unknown keyword fails before any work
    # a compacted checkpoint usually sits beside its source: its records must not replace the source's;
    # a pretrained model's go to runs/pretrained/NAME/, never into the registry (checkpoint_paths)
    file, home = checkpoint_paths(checkpoint)
    default = RunDir.of(home).eval_record(black_box=bool(source), sampled=sample_weights,
                                          compact=out is None and is_compact_checkpoint(checkpoint))
    default, dataset = dataset_record(default, dataset)  # checked before the work
    out = check_output_file(out if out is not None else default,  # before the work, not after it
                            inputs=[file, checkpoint_paths(source)[0] if source is not None else None])
    check_batch_size(overrides.get("batch_size"))
    if overrides.get("precision") not in (None, "fp32", "bf16"):
        raise ConfigError(f"--precision must be fp32 or bf16 (got {overrides['precision']!r})")
    run = open_run(checkpoint, device=device, sharded=True)
    model, ckpt, cfg, dev, world = run.model, run.ckpt, run.cfg, run.device, run.world
    # The threat model defaults to the run's evaluation spec (its eval.* section, as every command).
    if spec is not None or overrides.get("eps") is not None:
        threat_source = "command line"
    elif cfg.eval.eps == cfg.attack.eps and cfg.eval.norm == cfg.attack.norm:
        threat_source = "training attack (eval.eps of the run's config, equal to its attack.eps)"
    else:
        threat_source = "the run's evaluation radius (eval.eps of its config, not its training attack.eps)"
    spec = (spec or EvalSpec.of(cfg)).with_overrides(**overrides)
    eps, step_size, steps, restarts, norm = spec.eps, spec.step_size, spec.steps, spec.restarts, spec.norm
    if not (0 <= eps <= MAX_FLOAT and 0 < step_size <= MAX_FLOAT) or steps < 1 or restarts < 1:
        raise ConfigError(f"invalid attack: eps={eps} must be in [0, {MAX_FLOAT:g}], step_size={step_size} in "
                          f"(0, {MAX_FLOAT:g}], steps={steps} >= 1, restarts={restarts} >= 1")
    precision = effective_precision(spec.precision, dev, "eval precision")  # no emulated bf16
    if test_limit is not None and test_limit < 1:
        raise ConfigError(f"--test-limit must be >= 1 (got {test_limit})")
    eot, ensemble = sampling_setup(model, sample_weights, eot, ensemble)
    if "autoattack" in attacks and "pgd" not in attacks:  # AutoAttack is reported beside PGD, never instead
        attacks = ["pgd", *attacks]
    threat = ThreatSpec(eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm, eot=eot, seed=seed,
                      sampled_weights=sample_weights, progress=progress)
    built = {name: ATTACKS.get(name)(threat) for name in dict.fromkeys(attacks)}
    src_model = None
    if source is not None:
        src_model, src_ckpt = load_model(source, map_location=dev)
        checkpoint_config(src_ckpt, checkpoint_name(source))  # a source is a run's checkpoint as well
    data = (run.test_data(dataset=dataset, data_dir=data_dir, test_limit=test_limit)
            if is_other_dataset(dataset, cfg.data.name)
            else run.test_data(data_dir=data_dir, test_limit=test_limit or cfg.data.test_limit))
    if src_model is not None:
        _check_source(src_model, src_ckpt, ckpt, data.test.images[:1].to(dev).float().div(255), data.num_classes)
    t0 = time.time()
    metrics = evaluate(model, data.test.images, data.test.labels, built, source=src_model,
                       batch_size=spec.batch_size, seed=seed, progress=progress, ensemble=ensemble,
                       precision=precision)
    metrics.update(efficiency(model, latency=spec.latency))
    metrics["eval_time_s"] = round(time.time() - t0, 1)
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:  # finite weights can still overflow; a record of NaN would look like a result
        raise CheckpointError(f"evaluating {str(checkpoint)!r} gave non-finite {', '.join(bad[:3])} (the model's "
                              f"outputs overflow); no record was written; check the checkpoint's run")
    attack_desc = {"name": "+".join(built), "norm": norm, "eps": eps, "eps_units": "pixel ([0,1] images)",
                   "step_size": step_size, "steps": steps, "restarts": restarts, "random_start": True,
                   "attack_seed": seed, "eot": eot, "sampled_weights": sample_weights, "ensemble": ensemble,
                   "precision": precision, "eps_source": threat_source}
    if "autoattack" in built:
        attack_desc["autoattack"] = built["autoattack"].describe()
    record = evaluation_record(
        model_name=ckpt["model_name"], method=cfg.method.name, dataset=data.name, seed=cfg.seed,
        attack=attack_desc, metrics=metrics, checkpoint=str(checkpoint), source=str(source) if source else None,
        extra={"data_source": data.source, "epochs": ckpt.get("epoch"), "warnings": check_metrics(metrics),
               **asked_target(cfg)})  # a unit target beside the achieved metrics["unit_sparsity"]
    if world.is_main:  # a full disk's StorageError carries the record: the evaluation's result is kept
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
                 f"{a['steps']} steps, {a['restarts']} restart(s)"
                 + (f", EOT {a['eot']}" if a.get("eot", 1) > 1 else "")
                 + (f"; sampled weights, ensemble of {a['ensemble']}" if a.get("sampled_weights") else "")
                 + (f"; AutoAttack {a['autoattack']['version']}" if "autoattack" in a else ""))
    if record.get("black_box_source"):
        lines.append(f"  black-box source: {record['black_box_source']}")
    lines.append(f"  active units {m['active_units']}  unit sparsity {m['unit_sparsity']:.2f}%  "
                 f"memory {m['memory_pct']:.2f}%  FLOPs x{m['flops_speedup']:.2f}  "
                 f"weight sparsity {m['weight_sparsity']:.2f}%  params {m['params']}")
    lines += format_cost(m)
    lines += [f"  warning: {w}" for w in record.get("warnings", [])]
    lines.append(f"  record: {record.get('record_path', '-')}")
    return "\n".join(lines)


def format_cost(m: dict[str, Any]) -> list[str]:
    """The compacted network's size and measured cost lines of :func:`format_eval` (none for records
    without them)."""
    lines = []
    if "compact_params" in m:
        counted = m.get("counted_flops_speedup", m.get("measured_speedup"))  # older records: measured_speedup
        lines.append(f"  compacted: params {m['compact_params']}  {m['compact_bytes'] / 1024:.1f} KiB  "
                     f"FLOPs x{m['flops_speedup']:.2f} analytic, x{counted:.2f} counted (FlopCounterMode)")
    if "compact_widths" in m:
        lines.append("  compacted widths: " + ", ".join(f"{k} {v}" for k, v in m["compact_widths"].items()))
    if "latency_ms" in m:
        ms = m["latency_ms"]
        cells = [f"B={b[1:]} {ms['masked'][b]:.3g} -> {ms['compact'][b]:.3g} ms (x{m[f'wallclock_speedup_{b}']:.2f})"
                 for b in ("b1", "b256")]
        lines.append(f"  latency masked -> compacted, {m['latency_device']}: " + ", ".join(cells))
    return lines


__all__ = ["evaluate_checkpoint", "format_cost", "format_eval", "sampling_setup"]
