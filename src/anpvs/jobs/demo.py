"""``anpvs demo``: the README's main job (Standard, AT and ANP-VS on the bundled MNIST digits)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..attacks.autoattack import autoattack_available
from ..evaluation.tables import COLUMNS, autoattack_columns, markdown_table, with_autoattack
from ..io.atomic import write_json, write_text
from ..io.rundir import RunDir
from ..models.checkpoint import read_checkpoint
from ..training.loop import fit
from ..training.run_config import build_config
from .evaluate import evaluate_checkpoint

log = logging.getLogger(__name__)


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
    return autoattack_available()


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
            ov["init"] = str(RunDir(out / ov["init"]).checkpoint)
        cfg = build_config(ov)
        log.info("demo: training %s (%d epochs)", label, cfg.train.epochs)
        summary = fit(cfg, resume=True, progress=progress)
        record = evaluate_checkpoint(summary["checkpoint"], device=device, progress=progress)
        rows[label] = [record["metrics"]]
        if aa:
            log.info("demo: AutoAttack on %d test digits of %s", DEMO_AA_IMAGES, label)
            m = evaluate_checkpoint(summary["checkpoint"], attacks=["pgd", "autoattack"], test_limit=DEMO_AA_IMAGES,
                                    device=device, progress=progress, latency=False,
                                    out=RunDir.of(summary["checkpoint"]).autoattack_record())["metrics"]
            rows[label][0] = with_autoattack(rows[label][0], m)
    columns = [c for c in COLUMNS if not c[1].startswith("bb_")]
    if aa:
        columns += autoattack_columns(DEMO_AA_IMAGES, "digits")
    table = markdown_table(rows, columns)
    ckpt = read_checkpoint(RunDir(out / DEMO_RUNS[0][1]).checkpoint)
    note = (f"\nMNIST sample ({ckpt['data']['source']}): trained on {ckpt['data']['n_train']} digits, "
            f"tested on {rows[DEMO_RUNS[0][0]][0]['n']}; white-box = PGD-40, L-inf eps 0.3 (pixels), step 0.01, "
            f"random start, on the test-mode network. "
            + (f"AutoAttack: the standard version (APGD-CE, APGD-T, FAB-T, Square) on {DEMO_AA_IMAGES} of those "
               f"digits (seeded, class-stratified; the compacted network for ANP-VS), PGD-40 on the same beside it. "
               if aa else "AutoAttack column: pip install 'anpvs[eval]'. ")
            + "Measured speed-up: wall-clock latency of the masked over the compacted network at batch 256. "
            f"Total time {(time.time() - t0) / 60:.1f} min. "
            f"Black-box transfer: `anpvs eval CKPT --attack-source SOURCE_CKPT`.\n")
    write_text(out / "table.md", table + "\n" + note)
    write_json(out / "table.json", rows, indent=2)
    return table + "\n" + note + f"\nwritten to {out / 'table.md'}"


__all__ = ["DEMO_AA_IMAGES", "DEMO_COMMON", "DEMO_RUNS", "run_demo"]
