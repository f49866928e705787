"""The one training loop shared by every method (:func:`fit`).

A run directory holds ``config.yaml`` (the resolved config), ``log.jsonl`` (one JSON line per
epoch) and ``checkpoint.pt`` (written atomically at the end of every epoch, with optimizer,
scheduler and RNG states and the epoch log, so ``resume=True`` continues an interrupted run, rebuilds
``log.jsonl`` from the checkpoint and reaches the same weights as an uninterrupted one on CPU).
A run holds the folder's lock (:mod:`anpvs.training.runlock`) from start to end; docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from ..attacks import PGD
from ..core import distributed
from ..core.config import Config
from ..core.device import effective_precision, resolve_device, seed_everything
from ..core.errors import ConfigError, OutputError, RunInterrupted, StorageError, TrainingError
from ..data import BatchLoader, load_dataset
from ..evaluation.evaluate import evaluate
from ..io.atomic import append_text, write_text
from ..io.rundir import RunDir
from ..methods import METHODS, Method, build_method
from ..models import MODELS, create_model
from ..models.base import output_classes
from ..models.checkpoint import (
    atomic_save,
    head_parameter_names,
    load_weights,
    make_checkpoint,
    read_checkpoint,
)
from ..sparsifiers import sparsifiers_of
from .divergence import DivergenceGuard, checkpoint_note
from .run_config import checkpoint_config
from .runlock import MARKER_NAME, RunLock, clean_partial_writes, foreign_entries, mark_run, refuse_links
from .step import TrainStep, build_optimizers, lr_depends_on_total

log = logging.getLogger(__name__)


def model_spec(cfg: Config, method: Method, num_classes: int, in_channels: int) -> tuple[str, dict[str, Any]]:
    """Registry name and kwargs of the model a config trains (methods with masks use the ``_bbd`` variant; the
    ``model.*`` keys a variant takes are its factory's ``config_keys``, :func:`anpvs.models.register_model`)."""
    name = cfg.model.name
    variant = method.model_variant
    if variant and not name.endswith(f"_{variant}"):
        name = f"{name}_{variant}"
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_channels": in_channels}
    factory = MODELS.get(name) if name in MODELS else None  # an unknown name fails in create_model
    for key, arg in getattr(factory, "config_keys", {}).items():
        if getattr(cfg.model, key) is not None:
            kwargs[arg] = getattr(cfg.model, key)
    return name, kwargs


def build_model(cfg: Config, method: Method, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    name, kwargs = model_spec(cfg, method, num_classes, input_shape[0])
    try:
        model = create_model(name, **kwargs)
    except ValueError as e:  # an architecture argument out of its range (model.width, model.depth, ...)
        raise ConfigError(f"model {name!r}: {e}; change the model.* setting") from None
    if output_classes(model, torch.zeros(1, *input_shape)) is None:
        raise TrainingError(f"model {name!r} does not accept {cfg.data.name} images of shape {tuple(input_shape)}; "
                            f"pick a model made for this input size")
    return model


def compile_model(model: nn.Module) -> None:
    """``torch.compile`` the model's ``forward`` and ``forward_intermediates`` in place (``train.compile=true``).

    Off by default: on a 2-core CPU it costs ~25 s of compilation and made LeNet5-Caffe's attack step
    slower, not faster (docs/performance.md). Compacted attack snapshots are not compiled."""
    model.compile()
    model.forward_intermediates = torch.compile(model.forward_intermediates)


def validate(model: nn.Module, val_x: torch.Tensor, val_y: torch.Tensor, attack: PGD) -> dict[str, float]:
    """Clean and PGD accuracy and the white-box vulnerability V (mean |z(x) - z(x_adv)| over latent features
    and validation images) of the *test-mode* network on the validation split (the network users get).

    :func:`anpvs.evaluation.evaluate.evaluate` on the split (sharded over ranks under torchrun), with its own seeded
    random starts: the training's random stream is left as it was."""
    devices = [val_x.device] if val_x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        m = evaluate(model, val_x, val_y, {"pgd": attack}, batch_size=500)
    return {"val_clean_acc": m["clean_acc"], f"val_pgd{attack.steps}_acc": m["pgd_acc"],
            "val_vulnerability": m["pgd_vulnerability"]}


def prepare_run_dir(out: str, *, force: bool = False) -> Path:
    """Check ``--out`` before any work: a new, empty or anpvs run folder that can be written; create it.

    A folder holding other files (someone's ``config.yaml``) is refused unless ``force``."""
    if str(out).strip() == "":
        raise OutputError("--out is empty; name the run folder, e.g. --out runs/at")
    run_dir = Path(out).expanduser()
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputError(f"--out {str(run_dir)!r} is a file; the run needs a folder: choose another --out")
    base = run_dir
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"--out {str(run_dir)!r} lies under {str(base)!r}, which is a file; choose another --out")
    foreign = foreign_entries(run_dir)
    if foreign and not force:
        shown = ", ".join(foreign[:4]) + (" ..." if len(foreign) > 4 else "")
        raise OutputError(f"--out {str(run_dir)!r} holds files that are not an anpvs run ({shown}); choose a new "
                          f"or empty folder, or pass --force to train into it (its config.yaml and log.jsonl "
                          f"would be replaced)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"--out {str(run_dir)!r} is not writable (no write permission in {str(base)!r}); "
                          f"choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create --out {str(run_dir)!r} ({e.strerror or type(e).__name__}); "
                          f"choose another --out") from None
    return run_dir


def fit(cfg: Config, *, resume: bool = False, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Train a model as ``cfg`` says and return a summary ``{"run_dir", "checkpoint", "epoch", "metrics"}``.

    The run folder is checked and locked first (two runs never share one); files of a killed checkpoint
    write are removed. SIGINT/SIGTERM (as :class:`~anpvs.core.errors.RunInterrupted`) abandon the current epoch;
    the checkpoint of the last finished epoch stays and ``resume=True`` redoes the epoch exactly."""
    if distributed.world_from_env().rank > 0:
        # rank 0 alone checks, creates, locks and marks the folder; another rank doing so at the same time
        # would see rank 0's half-made folder (a lock, no marker yet) and refuse it as someone else's
        return _fit(cfg, resume=resume, progress=progress)
    created = not Path(cfg.out).expanduser().exists()
    run_dir = prepare_run_dir(cfg.out, force=force)
    try:
        with RunLock(run_dir):
            clean_partial_writes(run_dir)
            refuse_links(run_dir)  # a run folder from elsewhere: its files must not lead anywhere else
            return _fit_marked(cfg, run_dir, resume=resume, progress=progress)
    finally:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run that failed before writing anything leaves no folder behind


def _fit_marked(cfg: Config, run_dir: Path, *, resume: bool, progress: bool) -> dict[str, Any]:
    """:func:`_fit` with the anpvs-run marker (kept once the run wrote its config) and the interrupt message."""
    marker = run_dir / MARKER_NAME
    wrote_marker = not (run_dir / "checkpoint.pt").exists() and mark_run(run_dir)
    try:
        try:
            return _fit(cfg, resume=resume, progress=progress)
        except KeyboardInterrupt as e:
            signum = e.signum if isinstance(e, RunInterrupted) else 2
            ckpt_path = run_dir / "checkpoint.pt"
            done = read_checkpoint(ckpt_path).get("epoch", 0) if ckpt_path.is_file() else 0
            how = e.signame if isinstance(e, RunInterrupted) else "Ctrl-C"
            raise RunInterrupted(signum, f"stopped by {how}; the unfinished epoch is dropped and "
                                         f"{checkpoint_note(run_dir, done)}"
                                         + ("; rerun with --resume to continue" if done else "")) from None
    finally:
        if wrote_marker and not (run_dir / "config.yaml").exists():
            marker.unlink(missing_ok=True)


def _extended(saved: Config, asked: Config, run_dir: Path) -> Config | None:
    """``asked`` when it is ``saved`` with a larger ``train.epochs`` and nothing else (``--resume --epochs
    N`` on a finished run), else None. Only where nothing depends on the total: a constant learning rate and no
    ADMM phases, so the longer run trains exactly what a run of N epochs from the start would have."""
    s, a = saved.to_dict(), asked.to_dict()
    if a["train"]["epochs"] <= s["train"]["epochs"]:
        return None
    if {**s, "train": {**s["train"], "epochs": a["train"]["epochs"]}} != a:
        return None  # other settings differ too: the saved configuration wins (warned by the caller)
    t = saved.train
    by_method = METHODS.get(saved.method.name).depends_on_epochs
    if by_method or lr_depends_on_total(saved):
        what = f"method ({saved.method.name})" if by_method else f"learning-rate schedule ({t.schedule})"
        raise TrainingError(f"{str(run_dir)!r} cannot be extended to {t.epochs} -> {asked.train.epochs} epochs: its "
                            f"{what} depends on the number of epochs; train a new run with --epochs "
                            f"{asked.train.epochs} (--out elsewhere)")
    return asked


def _fit(cfg: Config, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    run_dir = Path(cfg.out)
    ckpt_path = run_dir / "checkpoint.pt"
    state = None
    if ckpt_path.exists():
        if not resume:
            raise TrainingError(f"{str(run_dir)!r} already holds a checkpoint; pass --resume to continue it "
                                f"or choose another --out")
        state = read_checkpoint(ckpt_path)
        # the folder it lives in now: a run folder that was moved or copied keeps training where it is, and its
        # config.yaml names that folder, not the one it was trained in
        saved = dataclasses.replace(checkpoint_config(state, str(ckpt_path)), out=cfg.out)
        longer = _extended(saved, cfg, run_dir)
        if longer is not None:
            log.info("extending %s from %d to %d epochs", run_dir, saved.train.epochs, longer.train.epochs)
            saved = longer
        elif saved.to_dict() != cfg.to_dict():
            log.warning("resuming %s with the configuration saved in its checkpoint", run_dir)
        cfg = saved
        if state["epoch"] >= cfg.train.epochs:
            _restore_log(run_dir / "log.jsonl", state["epoch"], state)
            log.info("%s is already complete (%d epochs)", run_dir, state["epoch"])
            return {"run_dir": str(run_dir), "checkpoint": str(ckpt_path), "epoch": state["epoch"],
                    "metrics": state.get("metrics", {})}

    device = resolve_device(cfg.device)
    world = distributed.setup(device)
    device = distributed.device_for(device, world)
    precision = effective_precision(cfg.train.precision, device)  # fp32 where bf16 would be emulated
    if cfg.train.batch_size % world.size:
        raise TrainingError(f"train.batch_size={cfg.train.batch_size} is the global batch and must be a multiple "
                            f"of the {world.size} processes; pick another --batch-size or --nproc_per_node")
    seed_everything(cfg.seed)
    d = cfg.data
    data = load_dataset(d.name, d.dir, download=d.download, val_size=d.val_size,
                        train_limit=d.train_limit, test_limit=d.test_limit, seed=d.seed)
    augment = d.augment if d.augment is not None else d.name.startswith("cifar")
    loader = BatchLoader(data.train, cfg.train.batch_size, shuffle=True, augment=augment, seed=cfg.seed,
                         drop_last=len(data.train) > cfg.train.batch_size, device=device,
                         shard=(world.rank, world.size))
    method = build_method(cfg, len(data.train))
    guard = DivergenceGuard(data.num_classes)
    method.loss = guard.watch(method.loss)  # records the starting loss; the training step is unchanged
    model = build_model(cfg, method, data.input_shape, data.num_classes)
    if state is None and cfg.init:
        init = read_checkpoint(cfg.init)
        kept = load_weights(model, init["state_dict"],
                            reinit=head_parameter_names(model) if cfg.method.reinit_head else ())
        log.info("initialised from %s (%s left at their initial values)", cfg.init, len(kept))
    elif state is None and method.wants_init:
        log.warning("method %s normally starts from a Standard checkpoint (init=...); training from scratch",
                    cfg.method.name)
    model.to(device)
    if world.enabled and state is None:
        # same initial weights on every rank (seeded above), then a stream of random starts and mask
        # samples of its own for every rank but the first
        if world.rank:
            torch.manual_seed(cfg.seed * 1_000_003 + world.rank)

    total_steps = cfg.train.epochs * len(loader)
    opt = build_optimizers(cfg, model, total_steps, sparsifiers=sparsifiers_of(model) + method.sparsifiers(model))
    optimizers, schedulers = opt.optimizers, opt.schedulers
    opt_w = optimizers["weights"]
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["state_dict"])
        for k, o in optimizers.items():
            o.load_state_dict(state["optimizers"][k])
            schedulers[k].load_state_dict(state["schedulers"][k])
        method.load_state_dict(state.get("method_state") or {})
        ranks = state["rng"].get("ranks")
        torch.set_rng_state(ranks[world.rank] if ranks and len(ranks) == world.size else state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        start_epoch = state["epoch"]
        guard.load_state_dict(state.get("guard"))
        log.info("resuming %s at epoch %d", run_dir, start_epoch + 1)
    for s in opt.sparsifiers:  # e.g. a unit budget cut on the init's masks before the first step
        s.on_train_start(model)

    log_path = run_dir / "log.jsonl"
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(RunDir(run_dir).config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        epoch_log = _restore_log(log_path, start_epoch, state)
    else:  # rank 0 owns the files; the others keep the same epoch log for the checkpoint it writes
        epoch_log = [e for e in ((state or {}).get("log") or []) if e.get("epoch", 0) <= start_epoch]

    val_x = val_y = None
    if data.val is not None:
        val_x, val_y = data.val.images.to(device).float().div_(255), data.val.labels.to(device)
    val_attack = PGD(eps=cfg.attack.eps, step_size=cfg.attack.step_size, steps=cfg.attack.steps,
                     norm=cfg.attack.norm)
    def check_loss(out: dict[str, Any]) -> None:
        bad = [k for k in ("loss", "mask_loss") if k in out and not torch.isfinite(out[k])]
        if world.enabled:  # every rank stops together (a lone rank raising would leave the others waiting)
            anywhere = distributed.all_reduce_sum(torch.tensor([float(bool(bad))], device=device)).item() > 0
            if anywhere and not bad:
                raise TrainingError(f"the loss became non-finite on another process at epoch {epoch + 1}; "
                                    f"{checkpoint_note(run_dir, epoch)}; lower train.lr or check the data")
        if bad:  # name the loss that diverged (mask_loss can go while loss is still finite)
            raise TrainingError(f"{bad[0]} became {out[bad[0]].item()} at epoch {epoch + 1}; "
                                f"{checkpoint_note(run_dir, epoch)}; lower train.lr or check the data")

    step = TrainStep(method, model, opt, precision=precision, check=check_loss,
                     grad_sync=distributed.all_reduce_grads if world.enabled else None)
    if cfg.train.compile:
        compile_model(model)
    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.time()
        loader.set_epoch(epoch)
        model.train()
        sums: dict[str, float] = {}
        n_seen = 0
        bar = tqdm(loader, desc=f"{cfg.method.name} epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=None if progress and world.is_main else True, dynamic_ncols=True)
        for x, y in bar:
            out = step(x, y)
            b = len(y)
            n_seen += b
            _accumulate(sums, out, y, b)
            bar.set_postfix(loss=f"{sums['loss'] / n_seen:.3f}", acc=f"{sums['acc'] / n_seen:.1f}")
        bar.close()
        method.on_epoch_end(model, epoch)
        for s in opt.sparsifiers:
            s.on_epoch_end(model, epoch)
        if world.enabled:  # epoch means over the global batches
            keys = list(sums)  # same insertion order on every rank
            tot = distributed.all_reduce_sum(torch.tensor([sums[k] for k in keys] + [n_seen], dtype=torch.float64))
            sums, n_seen = dict(zip(keys, tot[:-1].tolist(), strict=True)), int(tot[-1].item())
        metrics = {k: round(v / max(n_seen, 1), 4) for k, v in sums.items()}
        metrics.update(method.epoch_metrics(model))
        metrics["lr"] = opt_w.param_groups[0]["lr"]
        for s in opt.sparsifiers:
            metrics.update(s.epoch_metrics(model, optimizers.get(s.name)))
        if val_x is not None and ((epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs):
            metrics.update(validate(model, val_x, val_y, val_attack))
        metrics["epoch_time_s"] = round(time.time() - t0, 2)
        _check_health(opt.sparsifiers, model, cfg, epoch, run_dir, len(data.train))
        guard.check_epoch(epoch, metrics, run_dir)
        epoch_log.append({"epoch": epoch + 1, **metrics})

        ckpt = make_checkpoint(
            model, config=cfg.to_dict(), epoch=epoch + 1, metrics=metrics,
            optimizers={k: o.state_dict() for k, o in optimizers.items()},
            method_state=method.state_dict(),
            schedulers={k: s.state_dict() for k, s in schedulers.items()},
            rng={"torch": torch.get_rng_state(),
                 "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                 **({"ranks": distributed.all_gather_objects(torch.get_rng_state())} if world.enabled else {})},
            data={"name": data.name, "source": data.source, "num_classes": data.num_classes,
                  "input_shape": list(data.input_shape), "n_train": len(data.train)},
            log=epoch_log, guard=guard.state_dict(),
        )
        if world.is_main:
            done = epoch
            try:
                atomic_save(ckpt, ckpt_path)
                done = epoch + 1
                append_text(log_path, json.dumps(epoch_log[-1]) + "\n")
            except StorageError as e:  # full disk, quota, read-only: the last checkpoint stays and resumes
                raise StorageError(f"{e.problem}; {checkpoint_note(run_dir, done)}", e.action,
                                   then=f"resume with anpvs train --resume --out {str(run_dir)!r}" if done
                                   else "rerun the command") from e
            log.info("epoch %d/%d %s", epoch + 1, cfg.train.epochs, _brief(metrics))
        distributed.barrier()
    return {"run_dir": str(run_dir), "checkpoint": str(ckpt_path), "epoch": cfg.train.epochs, "metrics": metrics}


def _accumulate(sums: dict[str, float], out: dict[str, Any], y: torch.Tensor, b: int) -> None:
    def add(k: str, v: float) -> None:
        sums[k] = sums.get(k, 0.0) + v * b

    add("loss", float(out["loss"].detach()))
    add("acc", 100.0 * (out["logits"].detach().argmax(1) == y).float().mean().item())
    if "logits_adv" in out:
        add("adv_acc", 100.0 * (out["logits_adv"].detach().argmax(1) == y).float().mean().item())
    for k, v in out.items():
        if k in ("loss", "logits", "logits_adv") or not isinstance(v, torch.Tensor) or v.numel() != 1:
            continue
        add(k, float(v.detach()))


def _check_health(sparsifiers: list, model: nn.Module, cfg: Config, epoch: int, run_dir: Path, n_train: int) -> None:
    """Stop when a sparsifier says training cannot go on (e.g. a masked layer without an active unit)."""
    for s in sparsifiers:
        found = s.health(model, cfg, n_train, epoch)
        if found is not None:
            problem, fix = found
            raise TrainingError(f"{problem}; {checkpoint_note(run_dir, epoch)}; {fix}")


def _restore_log(path: Path, epochs_done: int, state: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The epoch log of the checkpoint, written back to ``log.jsonl``; returns it (to extend and save again).

    A kill between the checkpoint write and the log append cannot lose or duplicate a line: the checkpoint
    is the record. Checkpoints written before the log was stored in them keep the old truncation."""
    saved = (state or {}).get("log")
    if saved is None:
        _truncate_log(path, epochs_done)
        if not path.exists():
            return []
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    entries = [e for e in saved if isinstance(e, dict) and e.get("epoch", 0) <= epochs_done]
    write_text(path, "".join(json.dumps(e) + "\n" for e in entries))
    return entries


def _truncate_log(path: Path, epochs_done: int) -> None:
    """Drop log lines of epochs after the checkpoint (an interrupted epoch is redone on resume)."""
    if not path.exists():
        return
    if epochs_done == 0:
        path.unlink()
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= epochs_done]
    write_text(path, "".join(ln + "\n" for ln in keep))


def _brief(metrics: dict[str, Any]) -> str:
    parts = []
    for k, v in metrics.items():
        if isinstance(v, float) and math.isfinite(v):
            parts.append(f"{k}={v:g}")
        elif isinstance(v, dict) and k == "active_units":
            parts.append(f"active={list(v.values())}")
    return " ".join(parts)


__all__ = ["fit"]
