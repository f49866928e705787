"""High-level jobs used by the CLI: evaluate a checkpoint, and the demo (the README's main job)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .attacks import FGSM, PGD, AutoAttack, eval_mode
from .checkpoint import is_compact_checkpoint, load_model, read_checkpoint
from .checks import check_metrics
from .config import build_config, config_from_dict
from .data import load_dataset
from .evaluate import efficiency, evaluate, evaluation_record, write_record
from .report import COLUMNS, markdown_table
from .runtime import resolve_device
from .train import fit

log = logging.getLogger(__name__)

#: EOT samples of the attacks and size of the prediction ensemble under ``sample_weights`` when not given
SAMPLED_EOT = 10
SAMPLED_ENSEMBLE = 10


def sampling_setup(model: torch.nn.Module, sample_weights: bool, eot: int | None,
                   ensemble: int | None) -> tuple[int, int]:
    """Validate the EOT / weight-sampling options, switch weight sampling on if asked; returns ``(eot, ensemble)``."""
    from .config import ConfigError

    if (eot is not None and eot < 1) or (ensemble is not None and ensemble < 1):
        raise ConfigError(f"--eot and --ensemble must be >= 1 (got {eot}, {ensemble})")
    if not sample_weights:
        if ensemble not in (None, 1):
            raise ConfigError("--ensemble averages forwards with sampled weights: it needs --sample-weights")
        return eot or 1, 1
    try:
        from .nn.bayes import set_sampling
    except ImportError:  # the Bayesian layers are an optional part of the tree
        raise ConfigError("--sample-weights needs anpvs.nn.bayes, which this installation lacks") from None
    if set_sampling(model, True) == 0:
        raise ConfigError(f"--sample-weights needs a Bayesian model (e.g. lenet5_caffe_bnn); "
                          f"{getattr(model, 'model_name', type(model).__name__)} has no Bayesian layers")
    return eot or SAMPLED_EOT, ensemble or SAMPLED_ENSEMBLE


def _check_source(source: torch.nn.Module, src_ckpt: dict[str, Any], ckpt: dict[str, Any], x: torch.Tensor) -> None:
    """The black-box source must predict the same classes from the same images as the target."""
    from .config import ConfigError

    if src_ckpt["model_kwargs"].get("num_classes") != ckpt["model_kwargs"].get("num_classes"):
        raise ConfigError("the black-box source predicts a different number of classes than the target")
    shapes = [c.get("data", {}).get("input_shape") for c in (ckpt, src_ckpt)]
    if None not in shapes and list(shapes[0]) != list(shapes[1]):
        raise ConfigError(f"the black-box source was trained on images of shape {tuple(shapes[1])}, "
                          f"the target on {tuple(shapes[0])}")
    try:
        with torch.no_grad(), eval_mode(source):
            source(x)
    except RuntimeError:
        raise ConfigError(f"the black-box source does not accept the target's test images of shape "
                          f"{tuple(x.shape[1:])}") from None


def evaluate_checkpoint(checkpoint: str | Path, *, attacks: list[str] | tuple[str, ...] = ("pgd",),
                        eps: float | None = None, step_size: float | None = None, steps: int | None = None,
                        restarts: int | None = None, norm: str | None = None, source: str | Path | None = None,
                        data_dir: str | None = None, test_limit: int | None = None, batch_size: int | None = None,
                        seed: int = 0, device: str = "auto", out: str | Path | None = None,
                        progress: bool = False, eot: int | None = None, sample_weights: bool = False,
                        ensemble: int | None = None, precision: str | None = None,
                        latency: bool | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on its dataset's test set and write one JSON record; returns the record.

    ``eot``: PGD/FGSM gradients averaged over this many forwards. ``sample_weights``: a Bayesian model samples
    its weights in eval mode; predictions average the softmax of ``ensemble`` forwards and the attacks use EOT
    (both default to 10). ``"autoattack"`` always runs beside ``"pgd"`` (``version="rand"`` when sampling).
    The sanity checks (d) and (e) of :mod:`anpvs.checks` run on the results: ``record["warnings"]``.
    ``latency`` (default: the run's ``eval.latency``) adds the wall-clock latency of the masked and the
    compacted network (:func:`anpvs.evaluate.efficiency`), measured after the attacks."""
    from .config import ConfigError
    from .errors import check_output_file

    # a compacted checkpoint usually sits beside its source: its records must not replace the source's
    name = ("eval_bb" if source else "eval") + ("_sampled" if sample_weights else "") + (
        "_compact" if out is None and is_compact_checkpoint(checkpoint) else "")
    out = check_output_file(out if out is not None else Path(checkpoint).parent / f"{name}.json",
                            inputs=[checkpoint, source])  # before the work, not after it
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {batch_size})")
    dev = resolve_device(device)
    world = distributed.setup(dev)  # torchrun: the test set is sharded over ranks, rank 0 writes the record
    dev = distributed.device_for(dev, world)
    model, ckpt = load_model(checkpoint, map_location=dev)
    cfg = config_from_dict(ckpt["config"])
    e = cfg.eval
    # The threat model defaults to the one the model was trained for (attack.eps / attack.norm of its run).
    threat_source = "command line" if eps is not None else "training attack (attack.eps of the run's config)"
    eps = cfg.attack.eps if eps is None else eps
    step_size = e.step_size if step_size is None else step_size
    steps = e.steps if steps is None else steps
    restarts = e.restarts if restarts is None else restarts
    norm = norm or cfg.attack.norm
    if eps < 0 or step_size <= 0 or steps < 1 or restarts < 1:
        raise ConfigError(f"invalid attack: eps={eps} must be >= 0, step_size={step_size} > 0, "
                          f"steps={steps} >= 1, restarts={restarts} >= 1")
    if precision not in (None, "fp32", "bf16"):
        raise ConfigError(f"--precision must be fp32 or bf16 (got {precision!r})")
    if test_limit is not None and test_limit < 1:
        raise ConfigError(f"--test-limit must be >= 1 (got {test_limit})")
    eot, ensemble = sampling_setup(model, sample_weights, eot, ensemble)
    if "autoattack" in attacks and "pgd" not in attacks:  # AutoAttack is reported beside PGD, never instead
        attacks = ["pgd", *attacks]
    factories = {
        "pgd": lambda: PGD(eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm, eot=eot),
        "fgsm": lambda: dataclasses.replace(FGSM(eps, norm=norm), eot=eot),
        "autoattack": lambda: AutoAttack(eps=eps, norm=norm, version="rand" if sample_weights else "standard",
                                         seed=seed),
    }
    built = {name: factories[name]() for name in dict.fromkeys(attacks)}
    src_model = None
    if source is not None:
        src_model, src_ckpt = load_model(source, map_location=dev)
    d = cfg.data
    data = load_dataset(d.name, data_dir or d.dir, download=d.download, test_limit=test_limit or d.test_limit,
                        seed=d.seed)
    if src_model is not None:
        _check_source(src_model, src_ckpt, ckpt, data.test.images[:1].to(dev).float().div(255))
    t0 = time.time()
    metrics = evaluate(model, data.test.images, data.test.labels, built, source=src_model,
                       batch_size=batch_size or e.batch_size, seed=seed, progress=progress, ensemble=ensemble,
                       precision=precision or e.precision)
    metrics.update(efficiency(model, latency=e.latency if latency is None else latency))
    metrics["eval_time_s"] = round(time.time() - t0, 1)
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:  # finite weights can still overflow; a record of NaN would look like a result
        from .checkpoint import CheckpointError

        raise CheckpointError(f"evaluating {str(checkpoint)!r} gave non-finite {', '.join(bad[:3])} (the model's "
                              f"outputs overflow); no record was written; check the checkpoint's run")
    attack_desc = {"name": "+".join(built), "norm": norm, "eps": eps, "eps_units": "pixel ([0,1] images)",
                   "step_size": step_size, "steps": steps, "restarts": restarts, "random_start": True,
                   "attack_seed": seed, "eot": eot, "sampled_weights": sample_weights, "ensemble": ensemble,
                   "precision": precision or e.precision, "eps_source": threat_source}
    if "autoattack" in built:
        attack_desc["autoattack"] = built["autoattack"].describe()
    record = evaluation_record(
        model_name=ckpt["model_name"], method=cfg.method.name, dataset=data.name, seed=cfg.seed,
        attack=attack_desc, metrics=metrics, checkpoint=str(checkpoint), source=str(source) if source else None,
        extra={"data_source": data.source, "epochs": ckpt.get("epoch"), "warnings": check_metrics(metrics)})
    if world.is_main:
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
    if "latency_ms" in m:
        ms = m["latency_ms"]
        cells = [f"B={b[1:]} {ms['masked'][b]:.3g} -> {ms['compact'][b]:.3g} ms (x{m[f'wallclock_speedup_{b}']:.2f})"
                 for b in ("b1", "b256")]
        lines.append(f"  latency masked -> compacted, {m['latency_device']}: " + ", ".join(cells))
    return lines


# The demo: real MNIST digits bundled in the package, budgets that fit a 2-core CPU in minutes.
# Training PGD-10 of step 0.05 (the paper: PGD-20 of step 0.01, which needs many more epochs), a constant
# learning rate, and for ANP-VS the CPU-protocol mask settings of the README (masks start at
# E[pi] = 0.68 and learn at 5e-2 so that a few hundred steps can prune).
DEMO_COMMON = {"data.name": "mnist_sample", "train.lr_milestones": [], "attack.steps": 10, "attack.step_size": 0.05}
DEMO_RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("Standard", "standard", {"method.name": "standard", "train.epochs": 5}),
    ("AT", "at", {"method.name": "at", "train.epochs": 6}),
    ("ANP-VS", "anp_vs", {"method.name": "anp_vs", "train.epochs": 6, "init": "standard",
                          "model.mask_init": 2.0, "train.mask_lr": 0.05, "method.kl_n": 60000}),
]


#: test digits of the demo's AutoAttack column (a seeded, class-stratified subset; PGD-40 beside it on the same)
DEMO_AA_IMAGES = 200


def _have_autoattack() -> bool:
    try:
        import pyautoattack  # noqa: F401
    except ImportError:
        return False
    return True


def run_demo(out: str | Path, *, epochs_scale: float = 1.0, device: str = "auto", progress: bool = True) -> str:
    """Train and evaluate the demo rows on the bundled MNIST sample; return the table as Markdown.

    Every row gets PGD-40 on the test digits and, when ``pyautoattack`` is installed (``anpvs[eval]``),
    standard AutoAttack with PGD-40 beside it on :data:`DEMO_AA_IMAGES` of them."""
    out = Path(out)
    t0 = time.time()
    aa = _have_autoattack()
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
        if aa:
            log.info("demo: AutoAttack on %d test digits of %s", DEMO_AA_IMAGES, label)
            m = evaluate_checkpoint(summary["checkpoint"], attacks=["pgd", "autoattack"], test_limit=DEMO_AA_IMAGES,
                                    device=device, progress=progress, latency=False,
                                    out=Path(summary["checkpoint"]).parent / "eval_autoattack.json")["metrics"]
            rows[label][0] = {**rows[label][0], "autoattack_acc": m["autoattack_acc"], "aa_pgd_acc": m["pgd_acc"]}
    columns = [c for c in COLUMNS if not c[1].startswith("bb_")]
    if aa:
        columns += [(f"AutoAttack acc, {DEMO_AA_IMAGES} digits (%)", "autoattack_acc", 2),
                    (f"PGD-40 acc, same {DEMO_AA_IMAGES} (%)", "aa_pgd_acc", 2)]
    table = markdown_table(rows, columns)
    ckpt = read_checkpoint(out / DEMO_RUNS[0][1] / "checkpoint.pt")
    note = (f"\nMNIST sample ({ckpt['data']['source']}): trained on {ckpt['data']['n_train']} digits, "
            f"tested on {rows[DEMO_RUNS[0][0]][0]['n']}; white-box = PGD-40, L-inf eps 0.3 (pixels), step 0.01, "
            f"random start, on the test-mode network. "
            + (f"AutoAttack: the standard version (APGD-CE, APGD-T, FAB-T, Square) on {DEMO_AA_IMAGES} of those "
               f"digits (seeded, class-stratified; the compacted network for ANP-VS), PGD-40 on the same beside it. "
               if aa else "AutoAttack column: pip install 'anpvs[eval]'. ")
            + "Measured speed-up: wall-clock latency of the masked over the compacted network at batch 256. "
            f"Total time {(time.time() - t0) / 60:.1f} min. "
            f"Black-box transfer: `anpvs eval CKPT --attack-source SOURCE_CKPT`.\n")
    (out / "table.md").write_text(table + "\n" + note)
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    return table + "\n" + note + f"\nwritten to {out / 'table.md'}"


__all__ = ["evaluate_checkpoint", "format_eval", "run_demo"]
