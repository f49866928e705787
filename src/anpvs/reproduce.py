"""One-command reproduction of the paper's tables: ``anpvs reproduce --table mnist --scale sample --seeds 2``.

A *protocol* says what to train; it is data, not code: a YAML file shipped in ``anpvs/protocols``
(``<table>_<scale>.yaml``) or any file given with ``protocol=``. Schema::

    table: mnist                # mnist | cifar10 | cifar100: the paper table printed beside ours
    scale: cpu                  # free text (paper | cpu), shown in the caption
    description: ...            # one paragraph for the caption
    common: {key: value}        # dotted config keys applied to every run (source and pre-training too)
    source:                     # the black-box source: one AT run with its own seed, shared by all rows
      seed: 1000
      method: at                # optional, default at
      overrides: {key: value}
    pretrain:                   # optional named runs that rows start from with init: pretrain.<name>
      <name>: {seed: 2000, method: at, overrides: {data.name: fashion_mnist, ...}}
    rows:                       # the table's rows in the paper's order; the key is the id --rows uses
      <row>:
        label: ANP-VS           # optional, default: the paper's label or the row id
        method: anp_vs          # optional, default: the row id
        init: standard          # optional: a row of the same seed, or pretrain.<name>
        ablation: false         # optional: ablation rows are listed last, marked "(ablation)"
        sampled_eval: false     # optional: also evaluate with sampled weights + EOT (Bayesian models,
                                # SPEC A item 8), shown as an extra row
        overrides: {key: value}
    notes: [text, ...]          # optional footnotes
    figures: {n_images: 256, eps_factors: [0, 0.25, 0.5, 0.75, 1, 1.25]}   # optional

A config is ``build_config({**common, **overrides, method, seed, out, init, device, data.dir})``:
dataset preset < method preset < protocol < command line. Rows whose method is not registered in
:data:`anpvs.methods.METHODS` are skipped with a logged note and a table footnote.

Layout of the output folder::

    DIR/runs/source/                 the black-box source (checkpoint.pt, log.jsonl, eval.json)
    DIR/runs/pretrain/<name>/        pre-training runs
    DIR/runs/<row>/seed<k>/          checkpoint.pt, log.jsonl, config.yaml, eval_bb.json
    DIR/table.md, table.csv, table.json, DIR/figures/*.png
    DIR/reproduce.json, DIR/protocol.yaml   what was run (read by ``anpvs figures DIR``)

Rerunning the same command skips finished trainings and evaluations and resumes interrupted ones
(training continues from the last finished epoch; an evaluation counts as finished when its record
names the current checkpoint epoch, source, attack and test subset).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from ._version import __version__
from .checkpoint import CheckpointError, read_checkpoint
from .config import Config, ConfigError, build_config, config_from_dict, flatten
from .data import DataNotFoundError
from .evaluate import write_record
from .paper_results import PAPER_SETTINGS, TABLES, paper_labels, paper_notes, paper_table
from .report import TABLE_COLUMNS, write_tables
from .runner import evaluate_checkpoint
from .train import TrainingError, fit

log = logging.getLogger(__name__)

#: shipped protocol scales (not every table has every scale: :func:`available_scales`)
SCALES = ("paper", "full", "sample", "cpu")
#: the scale ``anpvs reproduce --table T`` runs without ``--scale``: the quick protocol of each table
DEFAULT_SCALE = {"mnist": "sample", "cifar10": "cpu", "cifar100": "cpu"}
_TOP_KEYS = {"table", "scale", "description", "common", "source", "pretrain", "rows", "notes", "figures",
             "autoattack"}
_ROW_KEYS = {"label", "method", "init", "ablation", "sampled_eval", "aa_sampled", "overrides"}
_AA_KEYS = {"test_limit", "seeds"}
SAMPLED_SUFFIX = " (sampled weights, EOT)"
_RUN_KEYS = {"seed", "method", "overrides"}
#: config keys that may differ between a finished run and the protocol without changing what was trained
_NOT_TRAINING = ("device", "out", "init", "data.dir", "data.download", "data.test_limit", "eval.")


class ProtocolError(ConfigError):
    """A protocol file that cannot be used (one-line message; the CLI exits with status 2)."""


# --------------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------------


def available_scales(table: str) -> list[str]:
    """The scales shipped for ``table``, in the order of :data:`SCALES`."""
    folder = resources.files("anpvs") / "protocols"
    return [s for s in SCALES if (folder / f"{table}_{s}.yaml").is_file()]


def protocol_path(table: str, scale: str | None = None) -> Path:
    """The shipped protocol file of ``table`` at ``scale`` (default: :data:`DEFAULT_SCALE`)."""
    if table not in TABLES:
        raise ProtocolError(f"unknown table {table!r}; valid: {', '.join(TABLES)}")
    scale = DEFAULT_SCALE[table] if scale is None else scale
    valid = available_scales(table)
    if scale not in valid:
        hint = ("; the 4,000-digit MNIST protocol is now --scale sample, the full-data one --scale full"
                if table == "mnist" and scale == "cpu" else "")
        raise ProtocolError(f"no {scale!r} protocol for table {table}; valid: {', '.join(valid)}{hint}")
    return Path(str(resources.files("anpvs") / "protocols" / f"{table}_{scale}.yaml"))


def _autoattack_entry(value: Any) -> dict[str, Any] | None:
    """The protocol's ``autoattack`` block: ``{test_limit: N, seeds: [0]}`` (None: no AutoAttack column)."""
    if value is None:
        return None
    entry = _mapping(value, "autoattack")
    unknown = set(entry) - _AA_KEYS
    if unknown:
        raise ProtocolError(f"autoattack: unknown key(s) {', '.join(sorted(unknown))}; "
                            f"valid: {', '.join(sorted(_AA_KEYS))}")
    n, seeds = entry.get("test_limit"), entry.get("seeds", [0])
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ProtocolError(f"autoattack.test_limit must be an integer >= 1 (got {n!r})")
    if not (isinstance(seeds, list) and seeds and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                      for v in seeds)):
        raise ProtocolError(f"autoattack.seeds must be a non-empty list of seeds >= 0 (got {seeds!r})")
    return {"test_limit": n, "seeds": sorted(set(seeds))}


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _run_entry(value: Any, where: str, default_method: str | None) -> dict[str, Any]:
    entry = _mapping(value, where)
    unknown = set(entry) - _RUN_KEYS
    if unknown:
        raise ProtocolError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                            f"valid: {', '.join(sorted(_RUN_KEYS))}")
    if not isinstance(entry.get("seed"), int):
        raise ProtocolError(f"{where}.seed must be an integer (the run's own seed)")
    overrides = flatten(_mapping(entry.get("overrides"), f"{where}.overrides"))
    method = entry.get("method") or overrides.pop("method.name", None) or default_method
    if not method:
        raise ProtocolError(f"{where} needs a method")
    return {"seed": entry["seed"], "method": str(method), "overrides": overrides}


def load_protocol(path: str | Path) -> dict[str, Any]:
    """Read and check a protocol file; returns it normalised (overrides flattened to dotted keys)."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"protocol file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ProtocolError(f"protocol {str(path)!r} is not valid YAML ({str(e).splitlines()[0]})") from None
    raw = _mapping(raw, f"protocol {path.name}")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ProtocolError(f"protocol {path.name}: unknown key(s) {', '.join(sorted(unknown))}; "
                            f"valid: {', '.join(sorted(_TOP_KEYS))}")
    table = raw.get("table")
    if table not in TABLES:
        raise ProtocolError(f"protocol {path.name}: table must be one of {', '.join(TABLES)} (got {table!r})")
    if "source" not in raw:
        raise ProtocolError(f"protocol {path.name} needs a source entry (the black-box AT source run)")
    pretrain = {name: _run_entry(v, f"pretrain.{name}", None)
                for name, v in _mapping(raw.get("pretrain"), "pretrain").items()}
    labels = paper_labels()
    rows: dict[str, dict[str, Any]] = {}
    for key, value in _mapping(raw.get("rows"), "rows").items():
        entry = _mapping(value, f"rows.{key}")
        unknown = set(entry) - _ROW_KEYS
        if unknown:
            raise ProtocolError(f"rows.{key}: unknown key(s) {', '.join(sorted(unknown))}; "
                                f"valid: {', '.join(sorted(_ROW_KEYS))}")
        overrides = flatten(_mapping(entry.get("overrides"), f"rows.{key}.overrides"))
        rows[key] = {"label": str(entry.get("label") or labels.get(key, key)),
                     "method": str(entry.get("method") or overrides.pop("method.name", None) or key),
                     "init": entry.get("init"), "ablation": bool(entry.get("ablation", False)),
                     "sampled_eval": bool(entry.get("sampled_eval", False)),
                     "aa_sampled": bool(entry.get("aa_sampled", False)), "overrides": overrides}
        overrides.pop("method.name", None)
    if not rows:
        raise ProtocolError(f"protocol {path.name} has no rows")
    for key, row in rows.items():
        init = row["init"]
        if init is None:
            continue
        if not isinstance(init, str):
            raise ProtocolError(f"rows.{key}.init must be a row id or pretrain.<name>")
        if init.startswith("pretrain."):
            if init.removeprefix("pretrain.") not in pretrain:
                raise ProtocolError(f"rows.{key}.init: no pre-training run {init!r}; defined: "
                                    f"{', '.join('pretrain.' + n for n in pretrain) or 'none'}")
        elif init not in rows or init == key:
            raise ProtocolError(f"rows.{key}.init: {init!r} is not another row of the protocol")
    _check_acyclic(rows)
    notes = raw.get("notes") or []
    if not isinstance(notes, list):
        raise ProtocolError("notes must be a list of strings")
    return {
        "name": path.name, "path": str(path), "table": table, "scale": str(raw.get("scale", "")),
        "description": str(raw.get("description", "")).strip(),
        "common": flatten(_mapping(raw.get("common"), "common")),
        "source": _run_entry(raw["source"], "source", "at"),
        "pretrain": pretrain, "rows": rows, "notes": [str(n) for n in notes],
        "figures": _mapping(raw.get("figures"), "figures"),
        "autoattack": _autoattack_entry(raw.get("autoattack")),
    }


def _check_acyclic(rows: dict[str, dict[str, Any]]) -> None:
    for start in rows:
        seen, key = {start}, rows[start]["init"]
        while key in rows:
            if key in seen:
                raise ProtocolError(f"rows.{start}.init: the init chain is circular")
            seen.add(key)
            key = rows[key]["init"]


# --------------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    """One training run (and, for table rows, its evaluation)."""

    name: str  # "source", "pretrain.<name>" or "<row>/seed<k>"
    kind: str  # source | pretrain | row
    cfg: Config
    evaluate: bool
    deps: list[str]
    row: str | None = None
    seed: int | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out)

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint.pt"


def _registered(method: str) -> bool:
    from .methods import METHODS

    return method in METHODS


def plan(protocol: dict[str, Any], *, seeds: list[int], out: Path, rows: list[str] | None = None,
         device: str = "auto", data_dir: str | None = None,
         pretrain_data_dir: str | None = None) -> tuple[list[Job], list[str], dict[str, str]]:
    """Jobs in run order (source, then per seed the rows with their dependencies first), the rows shown in
    the table, and ``{row: reason}`` for skipped rows. Every config is built (and checked) here."""
    all_rows = protocol["rows"]
    selected = list(all_rows) if not rows else rows
    bad = [r for r in selected if r not in all_rows]
    if bad:
        raise ProtocolError(f"unknown row(s) {', '.join(bad)}; rows of {protocol['name']}: {', '.join(all_rows)}")
    selected = [r for r in all_rows if r in selected]  # protocol (paper) order
    skipped: dict[str, str] = {}

    def missing_method(key: str) -> str | None:
        """Why ``key`` cannot run (its method or one of its dependencies' is not registered), or None."""
        row = all_rows[key]
        if not _registered(row["method"]):
            return f"method {row['method']!r} is not registered in this version of anpvs"
        init = row["init"]
        if init and init.startswith("pretrain."):
            method = protocol["pretrain"][init.removeprefix("pretrain.")]["method"]
            if not _registered(method):
                return f"its pre-training method {method!r} is not registered"
        elif init:
            why = missing_method(init)
            if why:
                return f"it starts from the {init} row, which cannot run ({why})"
        return None

    for key in selected:
        why = missing_method(key)
        if why:
            skipped[key] = why
            log.warning("skipping row %s: %s", key, why)
    common = protocol["common"]

    def config(overrides: dict[str, Any], method: str, seed: int, run_dir: Path, init: Path | None,
               own_data_dir: str | None) -> Config:
        merged = {**common, **overrides, "method.name": method, "seed": seed, "out": str(run_dir),
                  "device": device, "init": str(init) if init else None}
        if own_data_dir:
            merged["data.dir"] = own_data_dir
        return build_config(merged)

    jobs: dict[str, Job] = {}
    src = protocol["source"]
    if not _registered(src["method"]):
        raise ProtocolError(f"the black-box source method {src['method']!r} is not registered")
    jobs["source"] = Job("source", "source",
                         config(src["overrides"], src["method"], src["seed"], out / "runs" / "source", None,
                                data_dir or src["overrides"].get("data.dir")), evaluate=True, deps=[])

    def add_pretrain(name: str) -> str:
        job_name = f"pretrain.{name}"
        if job_name not in jobs:
            p = protocol["pretrain"][name]
            own = pretrain_data_dir or p["overrides"].get("data.dir") or data_dir
            jobs[job_name] = Job(job_name, "pretrain",
                                 config(p["overrides"], p["method"], p["seed"], out / "runs" / "pretrain" / name,
                                        None, own), evaluate=False, deps=[])
        return job_name

    def add_row(key: str, seed: int, shown: bool) -> str:
        job_name = f"{key}/seed{seed}"
        if job_name in jobs:
            jobs[job_name].evaluate |= shown
            return job_name
        row = all_rows[key]
        deps, init = [], None
        if row["init"] and row["init"].startswith("pretrain."):
            deps.append(add_pretrain(row["init"].removeprefix("pretrain.")))
            init = jobs[deps[-1]].checkpoint
        elif row["init"]:
            deps.append(add_row(row["init"], seed, False))
            init = jobs[deps[-1]].checkpoint
        cfg = config(row["overrides"], row["method"], seed, out / "runs" / key / f"seed{seed}", init,
                     data_dir or row["overrides"].get("data.dir"))
        jobs[job_name] = Job(job_name, "row", cfg, evaluate=shown, deps=deps, row=key, seed=seed)
        return job_name

    for seed in seeds:
        for key in selected:
            if key not in skipped:
                add_row(key, seed, True)
    shown = [k for k in selected if k not in skipped]
    return list(jobs.values()), shown, skipped


# --------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------


def _training_keys(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten(cfg_dict).items() if not k.startswith(_NOT_TRAINING)}


def config_drift(job: Job) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, protocol)}`` for training settings of an existing checkpoint that differ from the plan."""
    if not job.checkpoint.exists():
        return {}
    try:
        saved = _training_keys(config_from_dict(read_checkpoint(job.checkpoint)["config"]).to_dict())
    except (CheckpointError, ConfigError, KeyError):
        return {}
    wanted = _training_keys(job.cfg.to_dict())
    return {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}


def _attack_spec(cfg: Config, sampled: bool) -> dict[str, Any]:
    e = cfg.eval
    return {"eps": e.eps, "step_size": e.step_size, "steps": e.steps, "restarts": e.restarts, "norm": e.norm,
            "sampled_weights": sampled}


def _current_record(path: Path, *, epoch: int, source: Path | None, source_epoch: int | None,
                    cfg: Config, sampled: bool = False) -> dict[str, Any] | None:
    """The evaluation record at ``path`` if it was made for this checkpoint epoch, source and attack."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    src = rec.get("black_box_source")
    same_source = (src is None and source is None) or (
        src is not None and source is not None and Path(src).resolve() == source.resolve())
    attack = rec.get("attack") or {}
    ok = (rec.get("epochs") == epoch and same_source and rec.get("source_epoch") == source_epoch
          and rec.get("test_limit", "missing") == cfg.data.test_limit
          and all(attack.get(k, False) == v for k, v in _attack_spec(cfg, sampled).items()))
    return rec if ok else None


def _evaluate(job: Job, *, epoch: int, source: Job | None, source_epoch: int | None, device: str,
              progress: bool, sampled: bool = False) -> tuple[dict[str, Any], bool]:
    """Evaluate ``job``'s checkpoint unless a current record exists; returns ``(record, reused)``.

    ``sampled``: a Bayesian model samples its weights at test time, attacks use EOT (``eval_bb_sampled.json``)."""
    path = job.run_dir / (("eval_bb" if source else "eval") + ("_sampled" if sampled else "") + ".json")
    src_ckpt = source.checkpoint if source else None
    rec = _current_record(path, epoch=epoch, source=src_ckpt, source_epoch=source_epoch, cfg=job.cfg,
                          sampled=sampled)
    if rec is not None:
        return rec, True
    e, d = job.cfg.eval, job.cfg.data
    rec = evaluate_checkpoint(job.checkpoint, eps=e.eps, step_size=e.step_size, steps=e.steps, restarts=e.restarts,
                              norm=e.norm, source=src_ckpt, data_dir=d.dir, test_limit=d.test_limit,
                              batch_size=e.batch_size, seed=0, device=device, out=path, progress=progress,
                              latency=e.latency, **({"sample_weights": True} if sampled else {}))
    rec.pop("record_path", None)
    # Written last: a record without these keys (interrupted between the two writes) is redone.
    rec.update({"row": job.row, "source_epoch": source_epoch, "test_limit": d.test_limit})
    write_record(rec, path)
    return rec, False


def _finished(job: Job, source: Job | None, epochs: dict[str, int],
              proto: dict[str, Any]) -> tuple[int, dict[str, Any] | None] | str | None:
    """For ``--tables-only``: ``(epoch, record)`` of a run that is trained and evaluated (``record`` None for
    runs without an evaluation), else why not (a footnote). Nothing is trained or evaluated."""
    if not job.checkpoint.is_file():
        return "not trained yet"
    try:
        epoch = int(read_checkpoint(job.checkpoint)["epoch"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return "its checkpoint cannot be read"
    if epoch < job.cfg.train.epochs:
        return f"trained {epoch} of {job.cfg.train.epochs} epochs so far"
    if not job.evaluate:
        return epoch, None
    if source is not None and source.name not in epochs:
        return "its black-box source is not finished"
    path = job.run_dir / ("eval_bb.json" if source else "eval.json")
    rec = _current_record(path, epoch=epoch, source=source.checkpoint if source else None,
                          source_epoch=epochs.get(source.name) if source else None, cfg=job.cfg)
    if rec is None:
        return "not evaluated yet"
    aa = proto["autoattack"]
    if job.row is not None and aa is not None and job.seed in aa["seeds"]:
        from .audit import fresh_record

        sampled = proto["rows"][job.row]["aa_sampled"]
        path = job.run_dir / ("eval_autoattack_sampled.json" if sampled else "eval_autoattack.json")
        aa_rec = fresh_record(path, job.checkpoint, test_limit=aa["test_limit"])
        if aa_rec is not None:
            rec = _with_autoattack(rec, aa_rec)
    return epoch, rec


def _with_autoattack(rec: dict[str, Any], aa_rec: dict[str, Any]) -> dict[str, Any]:
    """``rec`` with the AutoAttack accuracy and the PGD accuracy on the same subset of ``aa_rec``."""
    m = aa_rec["metrics"]
    return {**rec, "metrics": {**rec["metrics"], "autoattack_acc": m["autoattack_acc"], "aa_pgd_acc": m["pgd_acc"],
                               "aa_n": m["n"]}}


def _autoattack(job: Job, test_limit: int, *, sampled: bool, device: str, progress: bool) -> dict[str, Any]:
    """AutoAttack and PGD on ``test_limit`` seeded test images of ``job``'s checkpoint (reused when current).

    The record is the one ``anpvs audit --aa-limit N`` reads (``eval_autoattack.json``, stamped with its
    subset size), so an audit of the folder does not run it again. ``sampled``: the stochastic network with
    sampled weights, AutoAttack ``rand`` (EOT) and EOT-PGD (``eval_autoattack_sampled.json``)."""
    from .audit import fresh_record, stamp_record

    path = job.run_dir / ("eval_autoattack_sampled.json" if sampled else "eval_autoattack.json")
    rec = fresh_record(path, job.checkpoint, test_limit=test_limit)
    if rec is None:
        rec = stamp_record(evaluate_checkpoint(job.checkpoint, attacks=["pgd", "autoattack"], test_limit=test_limit,
                                               data_dir=job.cfg.data.dir, device=device, progress=progress, out=path,
                                               latency=False, **({"sample_weights": True} if sampled else {})),
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
    to look at a long reproduction while it runs.
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
    if not train and not (out / "reproduce.json").is_file():
        raise ProtocolError(f"--tables-only: {str(out)!r} holds no reproduction yet (no reproduce.json); "
                            f"run anpvs reproduce without --tables-only first")
    if train:  # --tables-only leaves the manifest of the reproduction (maybe running) alone
        out.mkdir(parents=True, exist_ok=True)
        (out / "protocol.yaml").write_text(Path(proto["path"]).read_text())
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
        drift = config_drift(job)
        if drift:
            diff = ", ".join(f"{k}={a!r} (protocol: {b!r})" for k, a, b in ((k, *v) for k, v in drift.items()))
            notes.append(f"{job.name} was trained with settings that differ from the protocol: {diff}; "
                         f"delete {job.run_dir} and rerun to retrain it.")
            log.warning("%s: existing run differs from the protocol: %s", prefix, diff)
        t_job = time.time()
        if not train:
            found = _finished(job, source if job.kind != "source" else None, epochs, proto)
            if isinstance(found, str):
                failed[job.name] = found
            elif found is not None:
                epochs[job.name], rec = found
                records[job.name] = rec
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
        from .figures import FiguresUnavailable, draw_figures

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


def _write_manifest(out: Path, proto: dict[str, Any], seeds: list[int], shown: list[str], skipped: dict[str, str],
                    jobs: list[Job], device: str, *, failed: dict[str, str] | None = None,
                    elapsed: float | None = None) -> None:
    manifest = {
        "anpvs_version": __version__, "protocol": proto["name"], "table": proto["table"], "scale": proto["scale"],
        "seeds": seeds, "device": device,
        "rows": [{"key": k, "label": proto["rows"][k]["label"], "method": proto["rows"][k]["method"],
                  "ablation": proto["rows"][k]["ablation"]} for k in shown],
        "skipped": skipped, "failed": failed or {},
        "runs": {j.name: str(j.run_dir.relative_to(out)) for j in jobs},
        "figures": proto["figures"], "elapsed_s": elapsed,
    }
    (out / "reproduce.json").write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(path: Path, error: type[Exception]) -> dict[str, Any]:
    """Read ``reproduce.json`` and check its shape; ``error`` (one line) when it is not what reproduce writes."""
    fix = f"rerun anpvs reproduce --out {str(path.parent)!r} to rewrite it"
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{str(path)!r} is not valid JSON ({type(e).__name__}); {fix}") from None
    ok = (isinstance(manifest, dict) and isinstance(manifest.get("runs"), dict)
          and all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["runs"].items())
          and isinstance(manifest.get("seeds"), list) and len(manifest["seeds"]) > 0
          and all(isinstance(v, int) and not isinstance(v, bool) for v in manifest["seeds"])
          and isinstance(manifest.get("rows"), list)
          and all(isinstance(r, dict) and isinstance(r.get("key"), str) and isinstance(r.get("label"), str)
                  for r in manifest["rows"])
          and isinstance(manifest.get("figures") or {}, dict))
    if not ok:
        raise error(f"{str(path)!r} lacks the runs, seeds or rows of a reproduction manifest; {fix}")
    return manifest


# --------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------


def table_inputs(proto: dict[str, Any], seeds: list[int], shown: list[str], skipped: dict[str, str],
                 failed: dict[str, str], records: dict[str, dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """Keyword arguments of :func:`anpvs.report.write_tables` for a reproduction: rows (label -> the metrics
    of its seeds), the paper's numbers, row keys, caption, footnotes and metadata."""
    rows: dict[str, list[dict[str, Any]]] = {}
    row_keys: dict[str, str] = {}
    paper_by_key = paper_table(proto["table"])
    paper: dict[str, dict[str, float]] = {}
    footnotes: list[str] = []
    main = [k for k in shown if not proto["rows"][k]["ablation"]]
    ablation = [k for k in shown if proto["rows"][k]["ablation"]]
    warned: dict[str, list[str]] = {}
    for key in main + ablation:
        row = proto["rows"][key]
        label = f"{row['label']} (ablation)" if row["ablation"] else row["label"]
        rows[label] = [records[f"{key}/seed{s}"]["metrics"] for s in seeds if f"{key}/seed{s}" in records]
        row_keys[label] = key
        if key in paper_by_key:
            paper[label] = paper_by_key[key]
        missing = [s for s in seeds if f"{key}/seed{s}" not in records]
        if missing:
            reasons = {failed.get(f"{key}/seed{s}", "not run") for s in missing}
            footnotes.append(f"{label}: seed(s) {', '.join(map(str, missing))} missing ({'; '.join(sorted(reasons))}).")
        sampled = [records[n]["metrics"] for s in seeds if (n := f"{key}{SAMPLED_SUFFIX}/seed{s}") in records]
        if sampled:
            rows[label + SAMPLED_SUFFIX] = sampled
            row_keys[label + SAMPLED_SUFFIX] = key
        for s in seeds:
            for name in (f"{key}/seed{s}", f"{key}{SAMPLED_SUFFIX}/seed{s}"):
                for w in (records.get(name) or {}).get("warnings") or []:
                    warned.setdefault(w, []).append(name)
    footnotes += [f"Evaluation check ({', '.join(names)}): {w}" for w, names in warned.items()]
    for key, why in skipped.items():
        footnotes.append(f"{proto['rows'][key]['label']}: row skipped, {why}.")
    for name, why in failed.items():
        if name.startswith(("source", "pretrain.")):
            footnotes.append(f"{name}: {why}.")
    footnotes += notes + proto["notes"] + paper_notes(shown)
    columns = list(TABLE_COLUMNS)
    aa = proto["autoattack"]
    if aa is not None:
        n = aa["test_limit"]
        columns += [(f"AutoAttack acc, {n} images (%)", "autoattack_acc", 2),
                    (f"PGD-40 acc, same {n} (%)", "aa_pgd_acc", 2)]
    return {"rows": rows, "paper": paper, "row_keys": row_keys, "caption": _caption(proto, seeds, records),
            "columns": columns,
            "footnotes": footnotes,
            "meta": {"protocol": proto["name"], "table": proto["table"], "scale": proto["scale"], "seeds": seeds}}


def _caption(proto: dict[str, Any], seeds: list[int], records: dict[str, dict[str, Any]]) -> str:
    table = proto["table"]
    rows = [r for name, r in records.items() if name != "source"]
    parts = [f"**{PAPER_SETTINGS[table]}** (the paper's Table 1 setting), reproduced with protocol "
             f"`{proto['name']}` (scale: {proto['scale'] or '-'}), seeds {', '.join(map(str, seeds))} "
             f"(mean ± sample std over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}; the paper: mean of 5 runs)."]
    if proto["description"]:
        parts.append(proto["description"])
    if rows:
        r = rows[0]
        a = r["attack"]
        parts.append(f"Model {r['model'].removesuffix('_bbd')}; test set: {r['metrics']['n']} images of {r['dataset']} "
                     f"({r.get('data_source', '?')}).")
        parts.append(f"White-box: PGD-{a['steps']} on the test-mode network, {a['norm']} eps {a['eps']} "
                     f"(pixel units), step {a['step_size']}, random start, {a['restarts']} restart(s). "
                     f"Black-box: the same PGD on the source model, transferred.")
    aa = proto["autoattack"]
    if aa is not None:
        sampled = [proto["rows"][k]["label"] for k in proto["rows"] if proto["rows"][k]["aa_sampled"]]
        parts.append(f"AutoAttack (pyautoattack, standard version: APGD-CE, APGD-T, FAB-T, Square; fp32, on the "
                     f"compacted network for masked models) on one seeded, class-stratified subset of "
                     f"{aa['test_limit']} test images, the same for every row, seed(s) "
                     f"{', '.join(map(str, aa['seeds']))}; PGD-40 on the same subset beside it."
                     + (f" {', '.join(sampled)}: its random-model protocol, i.e. sampled weights, AutoAttack "
                        f"'rand' (APGD-CE and APGD-DLR with EOT over 20 samples) and PGD-40 with EOT-10 on the "
                        f"stochastic network." if sampled else ""))
    src = records.get("source")
    if src is not None:
        sm = src["metrics"]
        parts.append(f"Black-box source: `{Path('runs') / 'source'}` ({src['method']}, seed {src['seed']}, "
                     f"{src.get('epochs')} epochs; clean {sm['clean_acc']:.2f} %, white-box PGD "
                     f"{sm['pgd_acc']:.2f} %), the same for every row and seed.")
    parts.append("V = mean |z(x) - z(x_adv)| over latent features and test images (SPEC A item 2); Memory, FLOPs "
                 "and Sparsity (unit sparsity) are analytic (SPEC B section 6); weight sparsity = share of zero "
                 "conv/linear weights; Measured speed-up = median wall-clock latency of the masked over the "
                 "physically compacted network at batch 256 on the evaluating device (docs/compact.md; - for "
                 "records without it).")
    return " ".join(parts)


def format_summary(summary: dict[str, Any]) -> str:
    """What ``anpvs reproduce`` prints at the end."""
    lines = [summary["markdown"].rstrip(), "", f"written: {', '.join(summary['tables'].values())}"]
    if summary["figures"]:
        lines.append(f"figures: {len(summary['figures'])} in {Path(summary['out']) / 'figures'}")
    if summary["skipped"]:
        lines.append("skipped rows: " + "; ".join(f"{k} ({v})" for k, v in summary["skipped"].items()))
    if summary["failed"]:
        lines.append("did not finish: " + "; ".join(f"{k} ({v})" for k, v in summary["failed"].items()))
    lines.append(f"done in {summary['elapsed_s'] / 60:.1f} min; rerun the same command to resume or refresh")
    return "\n".join(lines)


__all__ = ["Job", "ProtocolError", "config_drift", "format_summary", "load_protocol", "plan", "protocol_path",
           "reproduce", "table_inputs"]
