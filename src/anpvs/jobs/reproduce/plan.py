"""Planning a reproduction: the jobs of a protocol in run order, every config built and checked up front."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from ...core.config import Config
from ...core.registry import METHODS
from ...io.rundir import RunDir
from ...training.run_config import build_config
from .protocol import ProtocolError

log = logging.getLogger(__name__)

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
        return RunDir(self.run_dir).checkpoint


def _registered(method: str) -> bool:
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

    def add_pretrain(name: str) -> str:
        job_name = f"pretrain.{name}"
        if job_name not in jobs:
            p = protocol["pretrain"][name]
            own = pretrain_data_dir or p["overrides"].get("data.dir") or data_dir
            jobs[job_name] = Job(job_name, "pretrain",
                                 config(p["overrides"], p["method"], p["seed"], out / "runs" / "pretrain" / name,
                                        None, own), evaluate=False, deps=[])
        return job_name

    src_deps = [add_pretrain(src["init"].removeprefix("pretrain."))] if src.get("init") else []
    jobs["source"] = Job("source", "source",
                         config(src["overrides"], src["method"], src["seed"], out / "runs" / "source",
                                jobs[src_deps[0]].checkpoint if src_deps else None,
                                data_dir or src["overrides"].get("data.dir")), evaluate=True, deps=src_deps)

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

    run_order = protocol.get("run_order") or list(all_rows)  # the table keeps the rows' order; training this one
    for seed in seeds:
        for key in run_order:
            if key in selected and key not in skipped:
                add_row(key, seed, True)
    shown = [k for k in selected if k not in skipped]
    return list(jobs.values()), shown, skipped


__all__ = ["Job", "plan"]
