"""Build the pretrained-model registry (``anpvs pretrained``, ``pretrained:NAME``) from finished runs.

For each ``NAME=RUN_DIR`` (a run folder of ``anpvs train`` or of ``anpvs reproduce``, evaluated):

* the run's ``checkpoint.pt`` is read and validated, then copied into the registry as ``NAME.pt`` without its
  training state (optimizers, schedulers, RNG, method state: a third of the size; it is not resumable) and without
  the machine's paths (its config's ``out``, ``init`` and ``data.dir`` spelled as the manifest's command spells
  them: :func:`portable`; the weights are the run's);
* a model with pruned units also gets its compacted twin ``NAME.compact.pt`` (``anpvs compact`` of that copy);
* the manifest entry gets both files' SHA-256 and size, the training command rebuilt from the run's
  ``config.yaml`` (flags and ``--set`` keys that differ from the dataset's and method's presets; ``--init``
  names another model of the registry by its source checkpoint when it is one), the ``anpvs reproduce``
  command and protocol when the run belongs to a reproduction, and the metrics of its evaluation records
  (``eval.json`` or ``eval_bb.json``: clean, PGD, vulnerability, FLOPs and measured speed-up; AutoAttack
  from ``eval_autoattack.json`` when present). A record must be of this checkpoint (same model and epoch);
* its ``check``: the copy evaluated as ``anpvs eval pretrained:NAME`` evaluates it (the job of that command, the
  model's own evaluation spec: PGD-40 ...; no latency; the record into a temporary folder) on a fixed subset of
  ``--check-limit`` test images (default 200, attack seed 0, on ``--check-device``, default cpu) that the tests
  evaluate again (``tests/test_pretrained.py``): for a model of MNIST's images the 2,000 real MNIST test digits
  bundled with anpvs (``mnist_test_sample``, offline); otherwise its own dataset from ``--check-data-dir``
  (default: the run's ``data.dir``), of which the manifest names only the dataset, not the folder.

The run folder is recorded without the machine's paths (``training.run``: relative to the current folder when
inside it, else its last three components), beside the SHA-256 of its checkpoint.

An entry of the same name is replaced; the others are kept.

    python scripts/make_pretrained.py mnist/at=results/mnist_full/runs/at/seed0 \\
        mnist/anp_vs=results/mnist_full/runs/anp_vs/seed0            # into src/anpvs/pretrained/
    python scripts/make_pretrained.py --eval eval_ep20.json --autoattack eval_ep20_autoattack.json \\
        --note "docs/results/mnist_full/long_run.md" mnist/anp_vs_20ep=long/anp_vs
    python scripts/make_pretrained.py --check-data-dir ~/data/cifar10 cifar10/anp_vs=results/cifar10/runs/anp_vs/seed0
    python scripts/make_pretrained.py --dest /tmp/registry tiny/anp_vs=/tmp/run   # ANPVS_PRETRAINED_DIR=/tmp/registry
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from anpvs.cli import TRAIN_FLAGS
from anpvs.core.config import ConfigError, flatten
from anpvs.core.errors import AnpvsError
from anpvs.data import DataNotFoundError, default_data_dir, load_dataset
from anpvs.evaluation.checks import AnpvsEvaluationWarning
from anpvs.io.atomic import write_text
from anpvs.io.pretrained import COMPACT, FORMAT, MANIFEST, PREFIX, check_name, format_table, read_manifest, registry_dir
from anpvs.io.records import read_json
from anpvs.io.rundir import ReproDir, RunDir
from anpvs.io.yamlfile import read_yaml
from anpvs.jobs.compact import compact_checkpoint
from anpvs.jobs.evaluate import evaluate_checkpoint
from anpvs.metrics.efficiency import model_full_units
from anpvs.models.checkpoint import atomic_save, load_model, read_checkpoint, sha256_file
from anpvs.models.masks import active_units
from anpvs.training.run_config import build_config, checkpoint_config, config_from_dict

#: what a shipped checkpoint keeps: the model, how it was trained and evaluated; not the state of its optimizers
KEEP = ("format", "format_version", "anpvs_version", "git_commit", "model_name", "model_kwargs", "state_dict",
        "config", "epoch", "metrics", "data", "log")
#: the white-box record of a run, first found (reproduce writes eval_bb.json: white-box and black-box in one)
EVAL_RECORDS = ("eval.json", "eval_bb.json")
AA_RECORD = "eval_autoattack.json"
#: metrics copied from the white-box record
METRICS = ("clean_acc", "pgd_acc", "pgd_vulnerability", "bb_pgd_acc", "unit_sparsity", "memory_pct", "flops_speedup",
           "counted_flops_speedup", "wallclock_speedup_b256", "wallclock_speedup_b1", "latency_device",
           "weight_sparsity", "params", "compact_params", "active_units")
#: the check of a model trained on MNIST's images runs on the real MNIST test digits bundled with anpvs, offline;
#: that of any other model on its own dataset's test split
BUNDLED_CHECK = {"mnist": "mnist_test_sample", "mnist_sample": "mnist_test_sample",
                 "mnist_test_sample": "mnist_test_sample"}
CHECK_LIMIT = 200
CHECK_SEED = 0  # of the attack's random starts (the subset is drawn with the run's data seed, as by anpvs eval)
CHECK_DEVICE = "cpu"
HEADER = ("# The pretrained models of anpvs (anpvs pretrained; pretrained:NAME wherever a checkpoint is taken).\n"
          "# Written by scripts/make_pretrained.py; each file's SHA-256 is checked before it is loaded.\n")


class _Dumper(yaml.SafeDumper):
    """Block style, lists of numbers on one line, and no ``&anchors``: anpvs's YAML reader refuses aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=not any(isinstance(v, (dict, list)) for v in data)))


class BuildError(AnpvsError):
    """A run that cannot become a pretrained model as it is."""


def _record(path: Path, ckpt: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The evaluation record at ``path``, checked to be of ``ckpt`` (same model and epoch) and to hold PGD."""
    rec = read_json(path)
    if not isinstance(rec, dict) or not isinstance(rec.get("metrics"), dict):
        raise BuildError(f"{str(path)!r} is missing or not an evaluation record; run anpvs eval {checkpoint}")
    if rec.get("model") != ckpt["model_name"] or rec.get("epochs") != ckpt.get("epoch"):
        raise BuildError(f"{str(path)!r} evaluates {rec.get('model')} at epoch {rec.get('epochs')}, but the checkpoint "
                         f"is {ckpt['model_name']} at epoch {ckpt.get('epoch')}; evaluate it again: anpvs eval "
                         f"{checkpoint} --out {path}")
    if not {"n", "clean_acc", "pgd_acc"} <= set(rec["metrics"]):
        raise BuildError(f"{str(path)!r} has no PGD result; evaluate with anpvs eval {checkpoint} --out {path}")
    return rec


def metrics_of(rec: dict[str, Any], record_name: str, aa: dict[str, Any] | None, aa_name: str) -> dict[str, Any]:
    """The manifest's metrics: the white-box record's, with its attack and test-set size, and AutoAttack's."""
    m, a = rec["metrics"], rec["attack"]
    out: dict[str, Any] = {"record": record_name, "n": m["n"],
                           "attack": {k: a.get(k) for k in ("norm", "eps", "step_size", "steps", "restarts",
                                                            "attack_seed")}}
    for key in METRICS:
        if key in m:
            out["vulnerability" if key == "pgd_vulnerability" else key] = m[key]
    out["autoattack"] = None if aa is None else {
        "record": aa_name, "n": aa["metrics"]["n"], "autoattack_acc": aa["metrics"].get("autoattack_acc"),
        "pgd_acc": aa["metrics"]["pgd_acc"], "version": (aa["attack"].get("autoattack") or {}).get("version")}
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))  # JSON is YAML


def portable_data_dir(dataset: str) -> str:
    """How the manifest's commands name the data folder: ``~/data/DATASET`` (the README's spelling), never the
    training machine's own path (committed files carry no machine paths: tests/test_no_machine_paths.py)."""
    return f"~/data/{dataset}"


def portable_init(init: str, init_names: dict[str, str]) -> str:
    """How the manifest names a model's ``init``: ``runs/OTHER/checkpoint.pt`` for the registry model ``OTHER``
    (``init_names`` maps its source path to it), a ``pretrained:`` name as it is, any other run by its last
    folders (:func:`run_label`), never a machine path."""
    if init in init_names:
        return f"runs/{init_names[init]}/checkpoint.pt"
    if str(init).startswith(PREFIX):
        return init
    return f"{run_label(Path(init).parent)}/{Path(init).name}"


def portable(ckpt: dict[str, Any], name: str, init: str | None) -> dict[str, Any]:
    """The checkpoint as shipped: the keys of :data:`KEEP` (no training state), its config's folders spelled as
    the manifest's command spells them (``out``: ``runs/NAME``; ``data.dir``: :func:`portable_data_dir`;
    ``init``: ``init``, from :func:`portable_init`) and its data description without the data folder, so that a
    shipped file carries no path of the machine that trained it (the weights and settings are unchanged)."""
    out = {k: ckpt[k] for k in KEEP if k in ckpt}
    config = out.get("config")
    if not isinstance(config, dict):
        return out
    config = {**config, "out": f"runs/{name}"}
    if config.get("init"):
        config["init"] = init
    data = config.get("data")
    if isinstance(data, dict) and data.get("dir"):
        here = portable_data_dir(str(data.get("name")))
        if isinstance(out.get("data"), dict) and isinstance(out["data"].get("source"), str):
            source = out["data"]["source"]
            for was in sorted({str(data["dir"]), str(Path(str(data["dir"])).expanduser().resolve())}, key=len,
                              reverse=True):
                source = source.replace(was, here)
            out["data"] = {**out["data"], "source": source}
        config["data"] = {**data, "dir": here}
    out["config"] = config
    return out


def train_command(config: dict[str, Any], name: str, init_names: dict[str, str]) -> str:
    """The ``anpvs train`` command that trains this config: the flags and ``--set`` keys that differ from the
    presets of its dataset and method (``out``: ``runs/NAME``; ``device`` left to the user; ``init``: the
    ``runs/OTHER/checkpoint.pt`` of the registry model ``OTHER`` trained by such a command, when ``init_names``
    maps the init path to it)."""
    cfg = config_from_dict(config)
    have = flatten(cfg.to_dict())
    base = flatten(build_config({"data.name": cfg.data.name, "method.name": cfg.method.name}).to_dict())
    flags = {key: flag for flag, key, _, _ in TRAIN_FLAGS}
    parts = ["anpvs", "train", "--dataset", cfg.data.name, "--method", cfg.method.name]
    for key, value in have.items():
        if key in ("data.name", "method.name", "out", "device") or value == base.get(key):
            continue
        if key == "init":
            value = portable_init(value, init_names)
        if key == "data.dir":  # the training machine's folder is no one else's: the README's spelling instead
            value = portable_data_dir(cfg.data.name)
        parts += [flags[key], _text(value)] if key in flags else ["--set", f"{key}={_text(value)}"]
    return shlex.join([*parts, "--out", f"runs/{name}"])


def protocol_of(run: Path, data_dir: str | None) -> dict[str, Any] | None:
    """The reproduction a run folder ``DIR/runs/<row>/seed<k>`` belongs to, with its ``anpvs reproduce`` command."""
    if not run.name.startswith("seed") or not run.name[4:].isdigit() or run.resolve().parents[1].name != "runs":
        return None
    repro = ReproDir(run.resolve().parents[2])
    if not (repro.path / "reproduce.json").is_file():
        return None
    manifest = repro.read_manifest(BuildError)
    row, seed = run.parent.name, int(run.name[4:])
    command = None
    if manifest.get("table") and manifest.get("scale"):
        command = shlex.join(["anpvs", "reproduce", "--table", manifest["table"], "--scale", manifest["scale"],
                              "--seeds", str(seed + 1), "--rows", row, *(["--data-dir", data_dir] if data_dir else []),
                              "--out", f"results/{manifest['table']}_{manifest['scale']}"])
    return {"command": command, "file": manifest.get("protocol"), "row": row, "seed": seed}


def run_label(run: Path) -> str:
    """The run folder without the machine's paths: relative to the current folder when inside it (e.g.
    ``results/mnist_full/runs/at/seed0``), else its last three components (``runs/at/seed0``)."""
    path, here = run.resolve(), Path.cwd().resolve()
    if here != Path(here.anchor) and path.is_relative_to(here) and path != here:
        return path.relative_to(here).as_posix()
    return PurePosixPath(*path.parts[-3:] if len(path.parts) > 3 else path.parts[1:]).as_posix()


def check_dataset(cfg: Any) -> str:
    """The dataset of a model's check: the bundled MNIST test digits for MNIST's images, else its own."""
    return BUNDLED_CHECK.get(cfg.data.name, cfg.data.name)


def _no_check_data(name: str, dataset: str, where: str | None) -> BuildError:
    return BuildError(f"{name}: the {dataset} test data of its check are not found in "
                      f"{str(where or default_data_dir())!r}; give their folder with --check-data-dir DIR")


def need_check_data(name: str, cfg: Any, data_dir: str | None, limit: int) -> None:
    """Refuse (one line, before any file is written) a model whose check data cannot be read."""
    if cfg.data.name in BUNDLED_CHECK:
        return
    try:
        load_dataset(cfg.data.name, data_dir or cfg.data.dir, download=False, test_limit=limit, seed=cfg.data.seed)
    except DataNotFoundError:
        raise _no_check_data(name, cfg.data.name, data_dir or cfg.data.dir) from None


def check_of(name: str, target: Path, cfg: Any, *, data_dir: str | None, limit: int,
             device: str) -> dict[str, Any]:
    """The ``check`` entry of the shipped copy ``target``: evaluated by the job of ``anpvs eval
    pretrained:NAME`` with the model's own evaluation spec on ``limit`` images of :func:`check_dataset`, without
    latency, its record written into a temporary folder (neither the registry nor the run folder)."""
    dataset = check_dataset(cfg)
    bundled = cfg.data.name in BUNDLED_CHECK
    with tempfile.TemporaryDirectory(prefix="anpvs-check-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", AnpvsEvaluationWarning)  # the check reports numbers, not their warnings
        try:
            rec = evaluate_checkpoint(target, dataset=dataset, data_dir=None if bundled else data_dir or cfg.data.dir,
                                      test_limit=limit, seed=CHECK_SEED, device=device,
                                      out=Path(tmp) / "check.json", latency=False)
        except DataNotFoundError:
            raise _no_check_data(name, dataset, data_dir or cfg.data.dir) from None
    m, a = rec["metrics"], rec["attack"]
    command = ["anpvs", "eval", f"{PREFIX}{name}", "--dataset", dataset, "--test-limit", str(limit),
               "--seed", str(CHECK_SEED), "--device", device, "--no-latency"]
    return {"dataset": dataset, "test_limit": limit, "n": m["n"], "seed": CHECK_SEED, "device": device,
            "attack": {k: a.get(k) for k in ("norm", "eps", "step_size", "steps", "restarts")},
            "clean_acc": m["clean_acc"], "pgd_acc": m["pgd_acc"], "command": shlex.join(command)}


def build_one(name: str, run: Path, dest: Path, *, eval_name: str | None, aa_name: str | None, note: str | None,
              init_names: dict[str, str], check_data_dir: str | None = None, check_limit: int = CHECK_LIMIT,
              check_device: str = CHECK_DEVICE) -> dict[str, Any]:
    """Copy one run into ``dest`` (and its compacted twin when pruned) and check the copy; returns its manifest
    entry."""
    checkpoint = RunDir(run).checkpoint
    ckpt = read_checkpoint(checkpoint)  # validated like any checkpoint
    if "compact" in ckpt:
        raise BuildError(f"{str(checkpoint)!r} is a compacted checkpoint; give the run of the masked model, its "
                         f"compacted twin is made here")
    found = [run / n for n in ([eval_name] if eval_name else EVAL_RECORDS) if (run / n).is_file()]
    if not found:
        raise BuildError(f"{str(run)!r} has no evaluation record ({eval_name or ' or '.join(EVAL_RECORDS)}); run "
                         f"anpvs eval {checkpoint} first")
    rec = _record(found[0], ckpt, checkpoint)
    aa_path = run / (aa_name or AA_RECORD)
    if aa_name and not aa_path.is_file():
        raise BuildError(f"{str(aa_path)!r} not found; run anpvs eval {checkpoint} --attack autoattack --test-limit "
                         f"1000 --no-latency --out {aa_path}")
    aa = _record(aa_path, ckpt, checkpoint) if aa_path.is_file() else None
    config_file = RunDir(run).config
    config = (read_yaml(config_file, what="run config", error=BuildError, fix="pass a finished run folder")
              if config_file.is_file() else ckpt["config"])
    try:
        cfg = config_from_dict(config)
        command = train_command(config, name, init_names)
    except ConfigError as e:
        raise BuildError(f"{str(config_file)!r}: {e}") from None

    target = dest / f"{name}.pt"
    init = (ckpt.get("config") or {}).get("init")
    atomic_save(portable(ckpt, name, init and portable_init(init, init_names)), target)
    model, _ = load_model(target)  # the copy reads back and validates
    twin = None
    if active_units(model) != model_full_units(model):
        twin_path = dest / f"{name}{COMPACT}.pt"
        # the twin names its source pretrained:NAME, not the builder's path (the SHA-256 is the shipped file's)
        compact_checkpoint(target, out=twin_path, force=True, source_name=f"{PREFIX}{name}")
        load_model(twin_path)
        twin = {"file": f"{name}{COMPACT}.pt", "sha256": sha256_file(twin_path), "size": twin_path.stat().st_size}
    check = check_of(name, target, checkpoint_config(ckpt, str(checkpoint)), data_dir=check_data_dir,
                     limit=check_limit, device=check_device)
    protocol = protocol_of(run, cfg.data.dir and portable_data_dir(cfg.data.name))
    training = {"command": command, "protocol": protocol, "note": note,
                "epochs": ckpt.get("epoch"), "seed": cfg.seed, "run": run_label(run),
                "source_sha256": sha256_file(checkpoint), "anpvs_version": ckpt.get("anpvs_version"),
                "git_commit": ckpt.get("git_commit")}
    return {"name": name, "file": f"{name}.pt", "sha256": sha256_file(target), "size": target.stat().st_size,
            "compact": twin, "model": ckpt["model_name"], "method": cfg.method.name, "dataset": rec.get("dataset"),
            "training": training,
            "metrics": metrics_of(rec, found[0].name, aa, aa_path.name), "check": check}


def build(models: list[tuple[str, Path]], dest: Path, *, eval_name: str | None = None, aa_name: str | None = None,
          note: str | None = None, check_data_dir: str | None = None, check_limit: int = CHECK_LIMIT,
          check_device: str = CHECK_DEVICE) -> list[dict[str, Any]]:
    """Add (or replace) ``models`` (``(name, run folder)``) in the registry at ``dest``; returns all its entries.
    ``check_*``: the data folder (default: each run's ``data.dir``; not used for MNIST models), number of test
    images and device of each model's ``check``."""
    if isinstance(check_limit, bool) or not isinstance(check_limit, int) or check_limit < 1:
        raise BuildError(f"--check-limit must be a positive number of test images (got {check_limit!r})")
    manifest = dest / MANIFEST
    entries: list[dict[str, Any]] = []
    if manifest.is_file():
        read_manifest(dest)  # checked
        entries = read_yaml(manifest, what="manifest", error=BuildError, fix="")["models"] or []
    for name, run in models:
        check_name(name)
        if not RunDir(run).checkpoint.is_file():
            raise BuildError(f"{str(run)!r} holds no checkpoint.pt; give NAME=RUN_DIR with a finished run folder")
    # a model trained from another one of the registry names it in its command: source checkpoints by hash
    by_hash = {(e.get("training") or {}).get("source_sha256"): e["name"] for e in entries}
    by_hash.update({sha256_file(RunDir(run).checkpoint): name for name, run in models})
    init_names = {}
    for name, run in models:
        ckpt = read_checkpoint(RunDir(run).checkpoint)
        init = (ckpt.get("config") or {}).get("init")
        digest = sha256_file(init) if init and Path(init).is_file() else None
        if digest is not None and digest in by_hash:
            init_names[init] = by_hash[digest]
        need_check_data(name, checkpoint_config(ckpt, str(RunDir(run).checkpoint)), check_data_dir, check_limit)
    for name, run in models:
        entry = build_one(name, run, dest, eval_name=eval_name, aa_name=aa_name, note=note, init_names=init_names,
                          check_data_dir=check_data_dir, check_limit=check_limit, check_device=check_device)
        entries = [e for e in entries if e.get("name") != name] + [entry]
        print(f"{name}: {entry['file']} ({entry['size']} bytes)"
              + (f" + {entry['compact']['file']} ({entry['compact']['size']} bytes)" if entry["compact"] else ""))
    entries.sort(key=lambda e: e["name"])
    write_text(manifest, HEADER + yaml.dump({"format": FORMAT, "format_version": 1, "models": entries},
                                            Dumper=_Dumper, sort_keys=False, width=120))
    read_manifest(dest)  # what was written reads back
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", metavar="NAME=RUN_DIR",
                   help="e.g. mnist/anp_vs=results/mnist_full/runs/anp_vs/seed0")
    p.add_argument("--dest", help=f"the registry folder (default: {registry_dir()})")
    p.add_argument("--eval", dest="eval_name", help=f"file name of each run's white-box record (default: the first "
                                                    f"of {', '.join(EVAL_RECORDS)})")
    p.add_argument("--autoattack", dest="aa_name", help=f"file name of each run's AutoAttack record (default: "
                                                        f"{AA_RECORD} when present)")
    p.add_argument("--note", help="how the runs were trained beyond the command (e.g. a page of docs/results)")
    p.add_argument("--check-limit", type=int, default=CHECK_LIMIT,
                   help=f"test images of each model's check (default: {CHECK_LIMIT})")
    p.add_argument("--check-data-dir", help="the test data of the check of a model not of MNIST's images "
                                            "(default: the run's data.dir; MNIST models use the bundled digits)")
    p.add_argument("--check-device", default=CHECK_DEVICE,
                   help=f"device of the checks (default: {CHECK_DEVICE}, where the tests evaluate them again)")
    args = p.parse_args(argv)
    models = []
    for text in args.models:
        name, sep, run = text.partition("=")
        if not sep or not run:
            p.error(f"{text!r} is not NAME=RUN_DIR")
        models.append((name, Path(run)))
    dest = Path(args.dest) if args.dest else registry_dir()
    try:
        build(models, dest, eval_name=args.eval_name, aa_name=args.aa_name, note=args.note,
              check_data_dir=args.check_data_dir, check_limit=args.check_limit, check_device=args.check_device)
        print(format_table(read_manifest(dest), dest))
    except AnpvsError as e:
        print(f"make_pretrained: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
