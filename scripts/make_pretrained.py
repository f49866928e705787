"""Build the pretrained-model registry (``anpvs pretrained``, ``pretrained:NAME``) from finished runs.

For each ``NAME=RUN_DIR`` (a run folder of ``anpvs train`` or of ``anpvs reproduce``, evaluated):

* the run's ``checkpoint.pt`` is read and validated, then copied into the registry as ``NAME.pt`` without its
  training state (optimizers, schedulers, RNG, method state: a third of the size; it is not resumable);
* a model with pruned units also gets its compacted twin ``NAME.compact.pt`` (``anpvs compact`` of that copy);
* the manifest entry gets both files' SHA-256 and size, the training command rebuilt from the run's
  ``config.yaml`` (flags and ``--set`` keys that differ from the dataset's and method's presets; ``--init``
  names another model of the registry by its source checkpoint when it is one), the ``anpvs reproduce``
  command and protocol when the run belongs to a reproduction, and the metrics of its evaluation records
  (``eval.json`` or ``eval_bb.json``: clean, PGD, vulnerability, FLOPs and measured speed-up; AutoAttack
  from ``eval_autoattack.json`` when present). A record must be of this checkpoint (same model and epoch).

An entry of the same name is replaced; the others are kept.

    python scripts/make_pretrained.py mnist/at=results/mnist_full/runs/at/seed0 \\
        mnist/anp_vs=results/mnist_full/runs/anp_vs/seed0            # into src/anpvs/pretrained/
    python scripts/make_pretrained.py --eval eval_ep20.json --autoattack eval_ep20_autoattack.json \\
        --note "docs/results/mnist_full/long_run.md" mnist/anp_vs_20ep=long/anp_vs
    python scripts/make_pretrained.py --dest /tmp/registry tiny/anp_vs=/tmp/run   # ANPVS_PRETRAINED_DIR=/tmp/registry
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from anpvs.cli import TRAIN_FLAGS
from anpvs.core.config import ConfigError, flatten
from anpvs.core.errors import AnpvsError
from anpvs.io.atomic import write_text
from anpvs.io.pretrained import COMPACT, FORMAT, MANIFEST, check_name, format_table, read_manifest, registry_dir
from anpvs.io.records import read_json
from anpvs.io.rundir import ReproDir, RunDir
from anpvs.io.yamlfile import read_yaml
from anpvs.jobs.compact import compact_checkpoint
from anpvs.metrics.efficiency import model_full_units
from anpvs.models.checkpoint import atomic_save, load_model, read_checkpoint, sha256_file
from anpvs.models.masks import active_units
from anpvs.training.run_config import build_config, config_from_dict

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
        if key == "init" and value in init_names:
            value = f"runs/{init_names[value]}/checkpoint.pt"
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


def build_one(name: str, run: Path, dest: Path, *, eval_name: str | None, aa_name: str | None, note: str | None,
              init_names: dict[str, str]) -> dict[str, Any]:
    """Copy one run into ``dest`` (and its compacted twin when pruned); returns its manifest entry."""
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
    atomic_save({k: ckpt[k] for k in KEEP if k in ckpt}, target)
    model, _ = load_model(target)  # the copy reads back and validates
    twin = None
    if active_units(model) != model_full_units(model):
        twin_path = dest / f"{name}{COMPACT}.pt"
        compact_checkpoint(target, out=twin_path, force=True)
        load_model(twin_path)
        twin = {"file": f"{name}{COMPACT}.pt", "sha256": sha256_file(twin_path), "size": twin_path.stat().st_size}
    training = {"command": command, "protocol": protocol_of(run, cfg.data.dir), "note": note,
                "epochs": ckpt.get("epoch"), "seed": cfg.seed, "run": str(run.resolve()),
                "source_sha256": sha256_file(checkpoint), "anpvs_version": ckpt.get("anpvs_version"),
                "git_commit": ckpt.get("git_commit")}
    return {"name": name, "file": f"{name}.pt", "sha256": sha256_file(target), "size": target.stat().st_size,
            "compact": twin, "model": ckpt["model_name"], "method": cfg.method.name, "dataset": rec.get("dataset"),
            "training": training,
            "metrics": metrics_of(rec, found[0].name, aa, aa_path.name)}


def build(models: list[tuple[str, Path]], dest: Path, *, eval_name: str | None = None, aa_name: str | None = None,
          note: str | None = None) -> list[dict[str, Any]]:
    """Add (or replace) ``models`` (``(name, run folder)``) in the registry at ``dest``; returns all its entries."""
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
    for _, run in models:
        init = (read_checkpoint(RunDir(run).checkpoint).get("config") or {}).get("init")
        digest = sha256_file(init) if init and Path(init).is_file() else None
        if digest is not None and digest in by_hash:
            init_names[init] = by_hash[digest]
    for name, run in models:
        entry = build_one(name, run, dest, eval_name=eval_name, aa_name=aa_name, note=note, init_names=init_names)
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
    args = p.parse_args(argv)
    models = []
    for text in args.models:
        name, sep, run = text.partition("=")
        if not sep or not run:
            p.error(f"{text!r} is not NAME=RUN_DIR")
        models.append((name, Path(run)))
    dest = Path(args.dest) if args.dest else registry_dir()
    try:
        build(models, dest, eval_name=args.eval_name, aa_name=args.aa_name, note=args.note)
        print(format_table(read_manifest(dest), dest))
    except AnpvsError as e:
        print(f"make_pretrained: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
