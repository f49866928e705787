"""``anpvs demo``: the README's main job, in two parts.

Part 1, *pretrained models*: the full-data MNIST AT and ANP-VS models of the pretrained registry
(``pretrained:mnist/at``, ``pretrained:mnist/anp_vs``) evaluated side by side on the 2,000 real MNIST test digits
bundled with the package (``mnist_test_sample``). When the registry does not hold them, one line says so and
how to build them, and the demo goes on.

Part 2, *smoke test*: Standard and ANP-VS (from the Standard model) trained for a few epochs on the bundled MNIST
sample and evaluated with PGD-40: it checks that training, pruning and compaction run end to end; its numbers
are not the method's results (those are in ``docs/results/mnist_full``). The comparison with AT and AutoAttack is
part 1's, on the full-data models: a few epochs on 4,000 digits would compare budgets, not methods, and the two
parts together stay within about five minutes on 2 CPU cores."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ..attacks.autoattack import autoattack_available
from ..evaluation.tables import COLUMNS, autoattack_columns, markdown_table, with_autoattack
from ..io import pretrained
from ..io.atomic import write_json, write_text
from ..io.rundir import RunDir
from ..models.checkpoint import read_checkpoint
from ..training.loop import fit
from ..training.run_config import build_config
from .evaluate import evaluate_checkpoint

log = logging.getLogger(__name__)


# Part 2: real MNIST digits bundled in the package, budgets that fit a 2-core CPU in minutes.
# Training PGD-10 of step 0.05 (the paper: PGD-20 of step 0.01, which needs many more epochs), a constant
# learning rate, and for ANP-VS the CPU-protocol mask settings of the README (masks start at
# E[pi] = 0.68 and learn at 5e-2 so that a few hundred steps can prune).
DEMO_COMMON = {"data.name": "mnist_sample", "train.lr_milestones": [], "attack.steps": 10, "attack.step_size": 0.05}
DEMO_RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("Standard", "standard", {"method.name": "standard", "train.epochs": 5}),
    ("ANP-VS", "anp_vs", {"method.name": "anp_vs", "train.epochs": 6, "init": "standard",
                          "model.mask_init": 2.0, "train.mask_lr": 0.05, "method.kl_n": 60000}),
]

#: Part 1: (row label, pretrained model name), in table order
PRETRAINED_ROWS: list[tuple[str, str]] = [("AT", "mnist/at"), ("ANP-VS", "mnist/anp_vs")]
#: the bundled real MNIST test digits part 1 evaluates on (anpvs/_data/mnist_test_sample.npz)
PRETRAINED_DATASET = "mnist_test_sample"
#: part 1's white-box attack: PGD-40, L-inf eps 0.3 in pixel units, step 0.01 (random start), the paper's
PRETRAINED_PGD: dict[str, Any] = {"norm": "linf", "eps": 0.3, "step_size": 0.01, "steps": 40}
#: test digits of part 1 (None: all 2,000), and of its AutoAttack column (seeded, class-stratified)
PRETRAINED_TEST_LIMIT: int | None = None
PRETRAINED_AA_IMAGES = 200
#: where the method's results are (part 2's caption points there)
RESULTS = "docs/results/mnist_full/README.md"


def _have_autoattack() -> bool:
    return autoattack_available()


def run_demo(out: str | Path, *, epochs_scale: float = 1.0, device: str = "auto", progress: bool = True,
             training: bool = True) -> str:
    """Run both parts of the demo; return what ``anpvs demo`` prints (Markdown tables with their captions).

    Part 1 evaluates the pretrained MNIST models of :data:`PRETRAINED_ROWS` that the registry holds
    (:func:`pretrained_part`): PGD-40 on the test digits and, when ``pyautoattack`` is installed
    (``anpvs[eval]``), standard AutoAttack with PGD-40 beside it on a seeded subset. Part 2 trains and evaluates
    :data:`DEMO_RUNS` on the bundled MNIST sample with every epoch budget times ``epochs_scale``
    (:func:`smoke_test_part`), unless ``training`` is false. Writes ``table.md`` (this text), ``table.json``
    (part 2's rows) and ``pretrained.json`` (part 1's rows) into ``out``."""
    out = Path(out)
    t0 = time.time()
    aa = _have_autoattack()
    part1, rows1 = pretrained_part(out, device=device, progress=progress, autoattack=aa)
    sections = ["## Part 1: pretrained models on real MNIST test digits", "", part1]
    if rows1:
        write_json(out / "pretrained.json", rows1, indent=2)
    if training:
        part2, rows2 = smoke_test_part(out, epochs_scale=epochs_scale, device=device, progress=progress)
        sections += ["", "## Part 2: smoke test of training, pruning and compaction (not results)", "", part2]
        write_json(out / "table.json", rows2, indent=2)
    else:
        sections += ["", "Part 2 (the smoke test of training) skipped: --skip-training."]
    text = "\n".join(sections) + f"\n\nTotal time {(time.time() - t0) / 60:.1f} min.\n"
    write_text(out / "table.md", text)
    return text + f"\nwritten to {out / 'table.md'}"


# --------------------------------------------------------------------------------------------------------
# Part 1: the pretrained models
# --------------------------------------------------------------------------------------------------------


def skip_line() -> str:
    """Part 1's line when the registry holds none of :data:`PRETRAINED_ROWS`."""
    names = ", ".join(name for _, name in PRETRAINED_ROWS)
    env = os.environ.get(pretrained.ENV, "").strip()
    where = (f"the pretrained-model registry {pretrained.ENV}={env!r} holds none of them" if env
             else "no pretrained MNIST models are installed in this version of anpvs")
    return (f"Pretrained comparison skipped: {where} ({names}). Build them from finished full-data runs with "
            f"{pretrained.BUILD}.")


def pretrained_part(out: Path, *, device: str = "auto", progress: bool = True,
                    autoattack: bool = False) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """Evaluate the models of :data:`PRETRAINED_ROWS` the registry holds on :data:`PRETRAINED_DATASET`; returns
    the table with its caption (or :func:`skip_line`) and the rows. Records go to ``out/pretrained/NAME/``."""
    entries = {m.name: m for m in pretrained.read_manifest()}
    present = [(label, name) for label, name in PRETRAINED_ROWS if name in entries]
    if not present:
        line = skip_line()
        log.info("demo part 1: %s", line)
        return line, {}
    rows: dict[str, list[dict[str, Any]]] = {}
    for label, name in present:
        spec, home = pretrained.PREFIX + name, out / "pretrained" / name
        log.info("demo part 1: evaluating %s on the bundled MNIST test digits (%s)", spec, PRETRAINED_DATASET)
        metrics = evaluate_checkpoint(spec, dataset=PRETRAINED_DATASET, test_limit=PRETRAINED_TEST_LIMIT,
                                      device=device, progress=progress, out=home / "eval.json",
                                      **PRETRAINED_PGD)["metrics"]
        if autoattack:
            log.info("demo part 1: AutoAttack on %d test digits of %s", PRETRAINED_AA_IMAGES, spec)
            m = evaluate_checkpoint(spec, attacks=["pgd", "autoattack"], dataset=PRETRAINED_DATASET,
                                    test_limit=PRETRAINED_AA_IMAGES, device=device, progress=progress, latency=False,
                                    out=home / "eval_autoattack.json", **PRETRAINED_PGD)["metrics"]
            metrics = with_autoattack(metrics, m)
        rows[label] = [metrics]
    columns = [c for c in COLUMNS if not c[1].startswith("bb_")]
    if autoattack:
        columns += autoattack_columns(PRETRAINED_AA_IMAGES, "digits")
    trained = "; ".join(f"{label}: pretrained:{name}, {_training(entries[name])}" for label, name in present)
    n = rows[present[0][0]][0]["n"]
    missing = [name for _, name in PRETRAINED_ROWS if name not in entries]
    note = (f"{trained}. Tested on {n:,} real MNIST test digits bundled with anpvs ({PRETRAINED_DATASET}: 200 per "
            f"class of the official t10k test file); white-box = PGD-{PRETRAINED_PGD['steps']}, "
            f"L-inf eps {PRETRAINED_PGD['eps']} (pixels), step {PRETRAINED_PGD['step_size']}, random start, on the "
            f"test-mode network. "
            + (f"AutoAttack: the standard version (APGD-CE, APGD-T, FAB-T, Square) on {PRETRAINED_AA_IMAGES} of "
               f"those digits (seeded, class-stratified; the compacted network for a pruned model), PGD-40 on the "
               f"same beside it. " if autoattack else "AutoAttack column: pip install 'anpvs[eval]'. ")
            + "Measured speed-up: wall-clock latency of the masked over the compacted network at batch 256. "
            + (f"Not in the registry, so not shown: {', '.join(missing)}. " if missing else "")
            + f"Records: {out / 'pretrained'}.")
    return markdown_table(rows, columns) + "\n\n" + note, rows


def _training(entry: pretrained.Pretrained) -> str:
    """How a registry model was trained, from its manifest entry (epochs and dataset)."""
    train = entry.info.get("training") or {}
    epochs = train.get("epochs")
    dataset = entry.info.get("dataset") or "?"
    return f"trained {epochs} epoch{'s' if epochs != 1 else ''} on {dataset}" if epochs else f"trained on {dataset}"


# --------------------------------------------------------------------------------------------------------
# Part 2: the smoke test
# --------------------------------------------------------------------------------------------------------


def smoke_test_part(out: Path, *, epochs_scale: float = 1.0, device: str = "auto",
                    progress: bool = True) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """Train and evaluate :data:`DEMO_RUNS` on the bundled MNIST sample (runs in ``out/<run>``, resumable);
    returns the table with its caption and the rows."""
    rows: dict[str, list[dict[str, Any]]] = {}
    epochs: list[str] = []
    for label, run_name, overrides in DEMO_RUNS:
        ov = {**DEMO_COMMON, **overrides, "out": str(out / run_name), "device": device}
        ov["train.epochs"] = max(1, round(ov["train.epochs"] * epochs_scale))
        if "init" in ov:
            ov["init"] = str(RunDir(out / ov["init"]).checkpoint)
        cfg = build_config(ov)
        epochs.append(f"{label} {cfg.train.epochs}")
        log.info("demo part 2 (smoke test): training %s (%d epochs)", label, cfg.train.epochs)
        summary = fit(cfg, resume=True, progress=progress)
        rows[label] = [evaluate_checkpoint(summary["checkpoint"], device=device, progress=progress)["metrics"]]
    columns = [c for c in COLUMNS if not c[1].startswith("bb_")]
    table = markdown_table(rows, columns)
    ckpt = read_checkpoint(RunDir(out / DEMO_RUNS[0][1]).checkpoint)
    note = (f"Smoke test: a few epochs ({', '.join(epochs)}, ANP-VS from the Standard model) check that training, "
            f"pruning and compaction run end to end; these numbers are not the method's results (ANP-VS against "
            f"AT, under PGD-40 and AutoAttack: part 1, and {RESULTS}). "
            f"MNIST sample ({ckpt['data']['source']}): trained on {ckpt['data']['n_train']} digits, "
            f"tested on {rows[DEMO_RUNS[0][0]][0]['n']} others of MNIST's training file; white-box = PGD-40, L-inf "
            f"eps 0.3 (pixels), step 0.01, random start, on the test-mode network. "
            "Measured speed-up: wall-clock latency of the masked over the compacted network at batch 256. "
            "Black-box transfer: `anpvs eval CKPT --attack-source SOURCE_CKPT`.")
    return table + "\n\n" + note, rows


__all__ = ["DEMO_COMMON", "DEMO_RUNS", "PRETRAINED_AA_IMAGES", "PRETRAINED_DATASET",
           "PRETRAINED_PGD", "PRETRAINED_ROWS", "PRETRAINED_TEST_LIMIT", "pretrained_part", "run_demo", "skip_line",
           "smoke_test_part"]
