"""Running a reproduction: train and evaluate every planned job, resumably, then write the tables and figures.

See :mod:`anpvs.jobs.reproduce` for the protocol schema and the layout of the output folder."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..._version import __version__
from ...core.config import Config, ConfigError, EvalSpec, flatten
from ...data import DataNotFoundError
from ...evaluation.evaluate import write_record
from ...evaluation.tables import with_autoattack, write_tables
from ...io.atomic import write_json, write_text
from ...io.records import MISSING, fresh_record, stamp_record
from ...io.rundir import ReproDir, RunDir, check_inside
from ...io.yamlfile import read_yaml
from ...models.checkpoint import CheckpointError, read_checkpoint
from ...training.loop import TrainingError, fit
from ...training.run_config import config_from_dict
from ..evaluate import evaluate_checkpoint
from .plan import Job, plan
from .protocol import SAMPLED_SUFFIX, ProtocolError, load_protocol, protocol_path
from .tables import table_inputs

log = logging.getLogger(__name__)

#: config keys that may differ between a finished run and the protocol without changing what was trained
#: dotted keys (or prefixes) that do not change what a run trains: the folders, the device, the evaluation
NOT_TRAINING = ("device", "out", "init", "data.dir", "data.download", "data.test_limit", "eval.")
#: keys that only say where a run lives: a run that differs from another in these alone is the same run moved
PLACES = ("device", "out", "init", "data.dir", "data.download")


def config_differences(saved: dict[str, Any], wanted: dict[str, Any], *,
                       ignore: tuple[str, ...] = NOT_TRAINING) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved, wanted)}`` for the settings of two configs (as saved in a checkpoint or a run's
    config.yaml) that differ, after both are read as a :class:`Config` (defaults filled in, old spellings
    upgraded); keys starting with one of ``ignore`` are left out. The one rule for "is this the same run":
    :func:`config_drift` (``ignore=NOT_TRAINING``) and ``scripts/frontier_mnist.py`` (``ignore=PLACES``: the
    frontier evaluates a copied run with its saved evaluation settings, so those must match too) use it."""
    def keys(cfg: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in flatten(config_from_dict(cfg).to_dict()).items() if not k.startswith(ignore)}

    a, b = keys(saved), keys(wanted)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


class _ReadOnce:
    """:func:`read_checkpoint` that reads a file at most once: ``--tables-only`` looks at a run's checkpoint twice,
    its config (:func:`config_drift`) and its epoch (:func:`_finished`), and one instance per run keeps no more
    than that run's checkpoint in memory. An unreadable checkpoint raises its error again."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._got: dict[str, Any] | CheckpointError | None = None

    def __call__(self, path: Path) -> dict[str, Any]:
        if self._got is None or self._path != path:
            try:
                self._got = read_checkpoint(path)
            except CheckpointError as e:
                self._got = e
            self._path = path
        if isinstance(self._got, CheckpointError):
            raise self._got
        return self._got


def config_drift(job: Job, *, records: bool = False,
                 read: Callable[[Path], dict[str, Any]] | None = None) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, protocol)}`` for training settings of an existing checkpoint that differ from the plan.

    ``records`` (``--tables-only``): a run without its checkpoint but with a logged epoch (a results folder
    keeps no checkpoints) is compared through its ``config.yaml``, which training writes with the config it
    saves in the checkpoint. ``read``: how the checkpoint is read (default :func:`read_checkpoint`)."""
    try:
        if job.checkpoint.exists():
            saved_cfg = (read or read_checkpoint)(job.checkpoint)["config"]
        elif records and _logged_epoch(job) > 0:
            saved_cfg = read_yaml(RunDir(job.run_dir).config, what="run config", error=ConfigError, fix="")
        else:
            return {}
        if not isinstance(saved_cfg, dict):
            return {}
        return config_differences(saved_cfg, job.cfg.to_dict())
    except (CheckpointError, ConfigError, KeyError, TypeError):
        return {}


def _attack_spec(cfg: Config, sampled: bool) -> dict[str, Any]:
    return {**EvalSpec.of(cfg).attack_settings(), "sampled_weights": sampled}


def _same_source(rec: dict[str, Any], checkpoint: Path, source: Path | None) -> bool:
    """Whether ``rec`` was attacked from ``source``: the same file, or the file at the same place relative to the
    evaluated checkpoint (the reproduction folder was moved or copied as a whole)."""
    have = rec.get("black_box_source")
    if have is None or source is None:
        return have is None and source is None
    was = rec.get("checkpoint")
    return Path(have).resolve() == source.resolve() or (
        was is not None and os.path.relpath(have, Path(was).parent) == os.path.relpath(source, checkpoint.parent))


def _names_checkpoint(rec: dict[str, Any], checkpoint: Path, out: Path) -> bool:
    """Whether ``rec`` says it was made from ``checkpoint``: the same path, or one that ends as ``checkpoint`` does
    inside the reproduction folder ``out`` (the folder was moved, or its paths were made relative, as in
    ``docs/results``: ``runs/at/seed0/checkpoint.pt``)."""
    have = rec.get("checkpoint")
    if not isinstance(have, str):
        return False
    try:
        tail = checkpoint.relative_to(out).parts
    except ValueError:
        tail = checkpoint.parts
    return Path(have) == checkpoint or Path(have).parts[-len(tail):] == tail


def _current_record(path: Path, *, checkpoint: Path, epoch: int, source: Path | None, source_epoch: int | None,
                    cfg: Config, sampled: bool = False, records_of: Path | None = None) -> dict[str, Any] | None:
    """The evaluation record at ``path`` if it is current (:func:`anpvs.io.fresh_record`: not older than the
    checkpoint and the source) for this checkpoint epoch, source (:func:`_same_source`) and attack (an attack
    setting the record lacks counts as false).

    ``records_of`` (``--tables-only`` on a run whose checkpoint is absent, e.g. a results folder, which keeps no
    checkpoints): the reproduction folder. The record is then taken as it is when it says it was made from
    ``checkpoint`` (:func:`_names_checkpoint`) at ``epoch``, with the same expectations otherwise; it is compared
    with the source's file only when that file is there."""
    def attack_is(want: Any):
        return lambda have: (False if have is MISSING else have) == want

    expect = {"epochs": epoch, "source_epoch": source_epoch, "test_limit": cfg.data.test_limit,
              **{f"attack.{k}": attack_is(v) for k, v in _attack_spec(cfg, sampled).items()}}
    if records_of is None:
        rec = fresh_record(path, checkpoint=checkpoint, inputs=[source] if source is not None else [], expect=expect)
    else:
        rec = fresh_record(path, inputs=[source] if source is not None and source.is_file() else [], expect=expect)
        if rec is not None and not _names_checkpoint(rec, checkpoint, records_of):
            rec = None
    return rec if rec is not None and _same_source(rec, checkpoint, source) else None


def _evaluate(job: Job, *, epoch: int, source: Job | None, source_epoch: int | None, device: str,
              progress: bool, sampled: bool = False) -> tuple[dict[str, Any], bool]:
    """Evaluate ``job``'s checkpoint unless a current record exists; returns ``(record, reused)``.

    ``sampled``: a Bayesian model samples its weights at test time, attacks use EOT (``eval_bb_sampled.json``)."""
    path = RunDir(job.run_dir).eval_record(black_box=source is not None, sampled=sampled)
    src_ckpt = source.checkpoint if source else None
    rec = _current_record(path, checkpoint=job.checkpoint, epoch=epoch, source=src_ckpt, source_epoch=source_epoch,
                          cfg=job.cfg, sampled=sampled)
    if rec is not None:
        return rec, True
    d = job.cfg.data
    rec = evaluate_checkpoint(job.checkpoint, spec=EvalSpec.of(job.cfg), source=src_ckpt, data_dir=d.dir,
                              test_limit=d.test_limit, seed=0, device=device, out=path, progress=progress,
                              **({"sample_weights": True} if sampled else {}))
    rec.pop("record_path", None)
    # Written last: a record without these keys (interrupted between the two writes) is redone.
    rec.update({"row": job.row, "source_epoch": source_epoch, "test_limit": d.test_limit})
    write_record(rec, path)
    return rec, False


def _logged_epoch(job: Job) -> int:
    """The last epoch of the run's epoch log (``log.jsonl``; 0 without one): how far a run whose checkpoint is
    absent was trained (training appends an epoch's line after saving its checkpoint)."""
    try:
        entries = RunDir(job.run_dir).read_log()
    except (OSError, ValueError, RecursionError):
        return 0
    return max((e["epoch"] for e in entries if isinstance(e, dict) and type(e.get("epoch")) is int), default=0)


def _finished(job: Job, source: Job | None, epochs: dict[str, int], proto: dict[str, Any], out: Path, *,
              read: Callable[[Path], dict[str, Any]] | None = None
              ) -> tuple[int, dict[str, Any] | None, dict[str, Any] | str | None] | str:
    """For ``--tables-only``: ``(epoch, record, sampled)`` of a run that is trained and evaluated (``record`` None
    for runs without an evaluation), else why not (a footnote). Nothing is trained or evaluated. ``sampled``: for
    a row with ``sampled_eval``, the record of its evaluation with sampled weights (``eval_bb_sampled.json``),
    which counts by the same rule as ``record``, or why it is still to do; None for other runs. ``read``: how the
    checkpoint is read (default :func:`read_checkpoint`).

    With the run's checkpoint there, a record counts only when it is current for it (:func:`_current_record`),
    as during the run. Without it but with its records (a results folder keeps no checkpoints), the table is
    built from the records alone: the evaluation record counts when it names this run's checkpoint and the
    protocol's number of epochs for the row (and the source's epoch, the attack and the test subset, as
    always); the epoch log says how far a run without such a record was trained."""
    want = job.cfg.train.epochs
    path = RunDir(job.run_dir).eval_record(black_box=source is not None)
    src_ckpt = source.checkpoint if source else None
    src_epoch = epochs.get(source.name) if source else None
    records_of: Path | None = None
    if job.checkpoint.is_file():
        try:
            epoch = int((read or read_checkpoint)(job.checkpoint)["epoch"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            return "its checkpoint cannot be read"
        if epoch < want:
            return f"trained {epoch} of {want} epochs so far"
        if not job.evaluate:
            return epoch, None, None
        if source is not None and source.name not in epochs:
            return "its black-box source is not finished"
        rec = _current_record(path, checkpoint=job.checkpoint, epoch=epoch, source=src_ckpt, source_epoch=src_epoch,
                              cfg=job.cfg)
        if rec is None:
            return "not evaluated yet"
    else:  # records only: the one epoch whose records count is the protocol's
        records_of, epoch, rec = out, want, None
        if job.evaluate and (source is None or source.name in epochs):
            rec = _current_record(path, checkpoint=job.checkpoint, epoch=epoch, source=src_ckpt,
                                  source_epoch=src_epoch, cfg=job.cfg, records_of=out)
        if rec is None:
            logged = _logged_epoch(job)
            if 0 < logged < want:
                return f"trained {logged} of {want} epochs so far"
            if logged == 0 and not (job.evaluate and path.is_file()):
                return "not trained yet"
            if not job.evaluate:
                return logged, None, None
            if source is not None and source.name not in epochs:
                return "its black-box source is not finished"
            return "not evaluated yet"
    sampled: dict[str, Any] | str | None = None
    if job.row is not None and proto["rows"][job.row]["sampled_eval"]:
        sampled = _current_record(RunDir(job.run_dir).eval_record(black_box=source is not None, sampled=True),
                                  checkpoint=job.checkpoint, epoch=epoch, source=src_ckpt, source_epoch=src_epoch,
                                  cfg=job.cfg, sampled=True, records_of=records_of) or "not evaluated yet"
    aa = proto["autoattack"]
    if job.row is not None and aa is not None and job.seed in aa["seeds"]:
        path = RunDir(job.run_dir).autoattack_record(sampled=proto["rows"][job.row]["aa_sampled"])
        aa_rec = _autoattack_record(path, job, epoch, aa["test_limit"], records_of)
        if aa_rec is not None:
            rec = _with_autoattack(rec, aa_rec)
        extra = aa.get("extra")
        if extra is not None and job.row in extra["rows"]:
            x_rec = _autoattack_record(extra_autoattack_record(job.run_dir, extra["eps"]), job, epoch,
                                       aa["test_limit"], records_of)
            if x_rec is not None and abs(x_rec["attack"]["eps"] - extra["eps"]) <= 1e-9:
                rec = _with_extra_autoattack(rec, x_rec)
    return epoch, rec, sampled


def _autoattack_record(path: Path, job: Job, epoch: int, test_limit: int,
                       records_of: Path | None) -> dict[str, Any] | None:
    """The AutoAttack record at ``path`` of ``job`` for ``--tables-only``: current for its checkpoint, or, with
    ``records_of`` (no checkpoint, see :func:`_finished`), naming that checkpoint and ``epoch``."""
    expect: dict[str, Any] = {"audit": {"test_limit": test_limit}}
    if records_of is None:
        return fresh_record(path, checkpoint=job.checkpoint, expect=expect)
    rec = fresh_record(path, expect={**expect, "epochs": epoch})
    return rec if rec is not None and _names_checkpoint(rec, job.checkpoint, records_of) else None


def _with_autoattack(rec: dict[str, Any], aa_rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` with the AutoAttack accuracy and the PGD accuracy on the same subset of ``aa_rec``, and its warnings."""
    # the union in order, e.g. with AutoAttack's own checks
    warnings = list(dict.fromkeys([*(rec.get("warnings") or []), *(aa_rec.get("warnings") or [])]))
    return {**rec, "metrics": with_autoattack(rec["metrics"], aa_rec["metrics"]), "warnings": warnings}


def _with_extra_autoattack(rec: dict[str, Any], aa_rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` with AutoAttack and PGD at the protocol's second radius (``autoattack.extra``)."""
    m = aa_rec["metrics"]
    return {**rec, "metrics": {**rec["metrics"], "autoattack_acc_extra": m["autoattack_acc"],
                               "aa_pgd_acc_extra": m["pgd_acc"]}}


def extra_autoattack_record(run_dir: Path, eps: float) -> Path:
    """The record of AutoAttack at a second radius (``autoattack.extra`` of a protocol), e.g. 8/255."""
    return RunDir(run_dir).path / f"eval_autoattack_eps{eps:.5f}.json"


def _autoattack(job: Job, test_limit: int, *, sampled: bool, device: str, progress: bool,
                eps: float | None = None) -> dict[str, Any]:
    """AutoAttack and PGD on ``test_limit`` seeded test images of ``job``'s checkpoint (reused when current).

    The record is the one ``anpvs audit --aa-limit N`` reads (``eval_autoattack.json``, stamped with its
    subset size), so an audit of the folder does not run it again. ``sampled``: the stochastic network with
    sampled weights, AutoAttack ``rand`` (EOT) and EOT-PGD (``eval_autoattack_sampled.json``)."""
    path = (RunDir(job.run_dir).autoattack_record(sampled=sampled) if eps is None
            else extra_autoattack_record(job.run_dir, eps))
    rec = fresh_record(path, checkpoint=job.checkpoint, expect={"audit": {"test_limit": test_limit}})
    if rec is not None and eps is not None and abs(rec["attack"]["eps"] - eps) > 1e-9:
        rec = None
    if rec is None:
        extra = {"sample_weights": True} if sampled else {}
        if eps is not None:
            extra["eps"] = eps
        rec = stamp_record(evaluate_checkpoint(job.checkpoint, attacks=["pgd", "autoattack"], test_limit=test_limit,
                                               data_dir=job.cfg.data.dir, device=device, progress=progress, out=path,
                                               latency=False, **extra),
                           path, test_limit=test_limit)
    return rec


def reproduce(table: str | None = None, *, seeds: int = 1, scale: str | None = None, out: str | Path = "runs/reproduce",
              rows: list[str] | None = None, protocol: str | Path | None = None, device: str = "auto",
              data_dir: str | None = None, pretrain_data_dir: str | None = None, figures: bool = True,
              progress: bool = True, train: bool = True) -> dict[str, Any]:
    """Train and evaluate every row of a table's protocol, write the tables (and figures); returns a summary.

    ``table``/``scale`` pick the shipped protocol (``scale`` default: :data:`DEFAULT_SCALE`); ``protocol``
    (a YAML path) replaces it. ``seeds`` runs seeds ``0 .. seeds-1`` of every row. ``rows`` restricts the
    rows shown (dependencies still train). ``train=False`` (``--tables-only``) trains and evaluates nothing:
    it writes the tables from the records that are already current, footnoting every run still to do, e.g.
    to look at a long reproduction while it runs; a run whose checkpoint is absent (a results folder keeps
    none) counts from its records alone when they match the protocol (:func:`_finished`). It writes the three
    table files and nothing else.
    """
    t0 = time.time()
    if protocol is None:
        if table is None:
            raise ProtocolError("give a table (mnist, cifar10, cifar100) or a protocol file")
        protocol = protocol_path(table, scale)
    proto = load_protocol(protocol)
    if table is not None and proto["table"] != table:
        raise ProtocolError(f"protocol {proto['name']} is for table {proto['table']!r}, not {table!r}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (got {seeds})")
    out = Path(out)
    seed_list = list(range(seeds))
    jobs, shown, skipped = plan(proto, seeds=seed_list, out=out, rows=rows, device=device, data_dir=data_dir,
                                pretrain_data_dir=pretrain_data_dir)
    for job in jobs:  # a symbolic link in the folder must not send a run (or its records) elsewhere
        check_inside(out, job.run_dir)
    if not train and not ReproDir(out).manifest.is_file():
        raise ProtocolError(f"--tables-only: {str(out)!r} holds no reproduction yet (no reproduce.json); "
                            f"run anpvs reproduce without --tables-only first")
    if train:  # --tables-only leaves the manifest of the reproduction (maybe running) alone
        out.mkdir(parents=True, exist_ok=True)
        write_text(ReproDir(out).protocol, Path(proto["path"]).read_text())
        _write_manifest(out, proto, seed_list, shown, skipped, jobs, device)

    notes: list[str] = []
    failed: dict[str, str] = {}  # job name -> reason
    epochs: dict[str, int] = {}
    records: dict[str, dict[str, Any]] = {}
    by_name = {j.name: j for j in jobs}
    source = by_name["source"]
    bar = tqdm(total=len(jobs), desc="reproduce", disable=None if progress else True, dynamic_ncols=True)
    for i, job in enumerate(jobs, 1):
        bar.set_postfix_str(job.name)
        prefix = f"[{i}/{len(jobs)}] {job.name}"
        blocked = [d for d in job.deps if d in failed]
        if blocked:
            failed[job.name] = f"needs {blocked[0]}, which did not finish"
            log.warning("%s: skipped (%s)", prefix, failed[job.name])
            bar.update()
            continue
        read = None if train else _ReadOnce()  # --tables-only: the checkpoint is read once for both
        drift = config_drift(job, records=not train, read=read)
        if drift:
            diff = ", ".join(f"{k}={a!r} (protocol: {b!r})" for k, a, b in ((k, *v) for k, v in drift.items()))
            notes.append(f"{job.name} was trained with settings that differ from the protocol: {diff}; "
                         f"delete {job.run_dir} and rerun to retrain it.")
            log.warning("%s: existing run differs from the protocol: %s", prefix, diff)
        t_job = time.time()
        if not train:
            found = _finished(job, source if job.kind != "source" else None, epochs, proto, out, read=read)
            if isinstance(found, str):
                failed[job.name] = found
            else:
                epochs[job.name], rec, sampled = found
                if rec is not None:  # a run without an evaluation (the pre-training) has no record
                    records[job.name] = rec
                if sampled is not None:  # the row's second table row (sampled weights), as in a training run
                    name = f"{job.row}{SAMPLED_SUFFIX}/seed{job.seed}"
                    if isinstance(sampled, str):
                        failed[name] = sampled
                    else:
                        records[name] = sampled
            bar.update()
            continue
        try:
            log.info("%s: train %s (%d epochs, seed %d)", prefix, job.cfg.method.name, job.cfg.train.epochs,
                     job.cfg.seed)
            summary = fit(job.cfg, resume=True, progress=progress)
        except DataNotFoundError as e:
            if job.kind != "pretrain":
                raise
            failed[job.name] = f"its data is missing ({e})"
            log.warning("%s: %s", prefix, failed[job.name])
            bar.update()
            continue
        except (TrainingError, CheckpointError) as e:
            if job.kind == "source":
                raise
            failed[job.name] = str(e)
            log.error("%s: training failed: %s", prefix, e)
            bar.update()
            continue
        epochs[job.name] = summary["epoch"]
        if job.evaluate:
            src = None if job.kind == "source" else source
            rec, reused = _evaluate(job, epoch=summary["epoch"], source=src,
                                    source_epoch=None if src is None else epochs["source"], device=device,
                                    progress=progress)
            records[job.name] = rec
            _log_record(prefix, rec, reused, time.time() - t_job)
            aa = proto["autoattack"]
            if job.row is not None and aa is not None and job.seed in aa["seeds"]:
                rec = _autoattack(job, aa["test_limit"], sampled=proto["rows"][job.row]["aa_sampled"],
                                  device=device, progress=progress)
                m = rec["metrics"]
                records[job.name] = _with_autoattack(records[job.name], rec)
                log.info("%s: AutoAttack %.2f, PGD %.2f on the same %d test images (%.0f s)", prefix,
                         m["autoattack_acc"], m["pgd_acc"], m["n"], time.time() - t_job)
                extra = aa.get("extra")
                if extra is not None and job.row in extra["rows"]:
                    rec = _autoattack(job, aa["test_limit"], sampled=proto["rows"][job.row]["aa_sampled"],
                                      device=device, progress=progress, eps=extra["eps"])
                    m = rec["metrics"]
                    records[job.name] = _with_extra_autoattack(records[job.name], rec)
                    log.info("%s: at eps %.5f: AutoAttack %.2f, PGD %.2f on the same %d test images (%.0f s)", prefix,
                             extra["eps"], m["autoattack_acc"], m["pgd_acc"], m["n"], time.time() - t_job)
            if job.row is not None and proto["rows"][job.row]["sampled_eval"]:
                rec, reused = _evaluate(job, epoch=summary["epoch"], source=src, source_epoch=epochs["source"],
                                        device=device, progress=progress, sampled=True)
                records[f"{job.row}{SAMPLED_SUFFIX}/seed{job.seed}"] = rec
                _log_record(prefix + " (sampled weights)", rec, reused, time.time() - t_job)
        bar.update()
    bar.close()

    paths = write_tables(out, **table_inputs(proto, seed_list, shown, skipped, failed, records, notes))
    figure_paths: list[str] = []
    if figures and train:
        from ..figures import FiguresUnavailable, draw_figures

        try:
            figure_paths = [str(p) for p in draw_figures(out, device=device, progress=progress)]
        except FiguresUnavailable as e:
            log.warning("figures skipped: %s", e)
    summary = {"out": str(out), "tables": {k: str(v) for k, v in paths.items()}, "figures": figure_paths,
               "skipped": skipped, "failed": failed, "elapsed_s": round(time.time() - t0, 1),
               "markdown": paths["md"].read_text()}
    if train:
        _write_manifest(out, proto, seed_list, shown, skipped, jobs, device, failed=failed,
                        elapsed=summary["elapsed_s"])
    return summary


def _log_record(prefix: str, rec: dict[str, Any], reused: bool, seconds: float) -> None:
    m = rec["metrics"]
    log.info("%s: %s clean %.2f, PGD %.2f%s (%.0f s)", prefix, "evaluation reused:" if reused else "done:",
             m["clean_acc"], m["pgd_acc"], f", black-box {m['bb_pgd_acc']:.2f}" if "bb_pgd_acc" in m else "", seconds)


def _earlier_runs(out: Path, protocol: str) -> dict[str, str]:
    """The runs named by the folder's earlier manifest (same protocol) whose folders are still there.

    A call with ``--rows`` or fewer ``--seeds`` adds runs to a folder that may hold others, so the manifest
    keeps them all: ``anpvs audit`` reads its ``runs`` and must see every model of the folder."""
    repro = ReproDir(out)
    if not repro.manifest.is_file():
        return {}
    try:
        earlier = repro.read_manifest(ProtocolError)
    except ProtocolError:
        return {}  # unreadable: rewritten from this call alone
    if earlier.get("protocol") != protocol:
        return {}
    return {name: rel for name, rel in earlier["runs"].items() if repro.run(rel).checkpoint.is_file()}


def _write_manifest(out: Path, proto: dict[str, Any], seeds: list[int], shown: list[str], skipped: dict[str, str],
                    jobs: list[Job], device: str, *, failed: dict[str, str] | None = None,
                    elapsed: float | None = None) -> None:
    manifest = {
        "anpvs_version": __version__, "protocol": proto["name"], "table": proto["table"], "scale": proto["scale"],
        "seeds": seeds, "device": device,
        "rows": [{"key": k, "label": proto["rows"][k]["label"], "method": proto["rows"][k]["method"],
                  "ablation": proto["rows"][k]["ablation"]} for k in shown],
        "skipped": skipped, "failed": failed or {},
        "runs": {**_earlier_runs(out, proto["name"]), **{j.name: str(j.run_dir.relative_to(out)) for j in jobs}},
        "figures": proto["figures"], "elapsed_s": elapsed,
    }
    write_json(ReproDir(out).manifest, manifest)


__all__ = ["config_drift", "reproduce"]
