"""``anpvs audit DIR``: the trust checks of a finished reproduction, model by model.

For every trained model of an ``anpvs reproduce`` folder (each row and seed, and the black-box source)
it verifies the three properties that an honest robustness table must have (``docs/checks.md``):

* **black-box >= white-box**: the transferred attack of the table is no stronger than the white-box
  PGD it is compared with (read from the reproduction's own ``eval_bb.json``; the source has none);
* **the eps sweep falls to ~0%**: PGD accuracy at the largest radius of ``anpvs check``'s sweep
  (1.0 for L-inf: every image can be turned into any other) is at most 5% (``check.json``);
* **AutoAttack <= PGD-40** (needs ``pip install 'anpvs[eval]'``): standard AutoAttack and the table's
  PGD-40, on the same test images, for models whose test-mode forward is deterministic
  (``eval_autoattack.json``).

Every record is written next to its checkpoint and reused by a later audit when it is newer than the
checkpoint and was made with the same settings, so an interrupted audit resumes. The summary goes to
``DIR/audit.md`` and ``DIR/audit.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..core.errors import AnpvsError
from ..io.atomic import write_json, write_text
from ..io.records import fresh_record, stamp_record
from ..io.rundir import ReproDir, RunDir

log = logging.getLogger(__name__)

#: largest accuracy (%) at the sweep's largest eps that still counts as "falls to ~0%"
MAX_FINAL_ACC = 5.0


class AuditError(AnpvsError, RuntimeError):
    """The folder is not a finished reproduction (one-line message naming the fix)."""


def _audited(path: Path, checkpoint: Path, **settings: Any) -> dict[str, Any] | None:
    """The record at ``path`` if it is current for ``checkpoint`` and was stamped with ``settings``."""
    return fresh_record(path, checkpoint=checkpoint, expect={"audit": settings})


def _models(out: Path, seeds: list[int] | None) -> list[tuple[str, Path]]:
    manifest = ReproDir(out).read_manifest(AuditError)
    models = []
    for name, rel in manifest["runs"].items():
        if name.startswith("pretrain."):
            continue  # pre-training runs live on another dataset and are not models of the table
        seed = name.rsplit("/seed", 1)[1] if "/seed" in name else None
        if seeds is not None and seed is not None and int(seed) not in seeds:
            continue
        run = RunDir(out / rel)
        if run.eval_record().is_file() or run.eval_record(black_box=True).is_file():
            models.append((name, run.checkpoint))
    if not models:
        raise AuditError(f"no evaluated runs in {out / 'runs'}; finish anpvs reproduce --out {out} first")
    return models


def audit(out: str | Path, *, test_limit: int | None = 1000, autoattack: bool = True,
          aa_limit: int | None = None, seeds: list[int] | None = None, device: str = "auto",
          progress: bool = True) -> dict[str, Any]:
    """Audit every evaluated model of the reproduction folder ``out``; returns the summary.

    ``test_limit``: test images of the eps sweep; ``aa_limit``: of AutoAttack (default: ``test_limit``;
    PGD-40 is rerun on the same images); ``seeds``: only these seeds' runs (the source is always
    audited). ``autoattack=False`` skips AutoAttack."""
    from ..attacks.autoattack import INSTALL_HINT, OptionalDependencyError, autoattack_available
    from .check import check_checkpoint
    from .evaluate import evaluate_checkpoint

    t0 = time.time()
    out = Path(out)
    aa_limit = test_limit if aa_limit is None else aa_limit
    if (test_limit is not None and test_limit < 1) or (aa_limit is not None and aa_limit < 1):
        raise AuditError(f"--test-limit and --aa-limit must be >= 1 (got {test_limit}, {aa_limit})")
    if autoattack and not autoattack_available():
        raise OptionalDependencyError(f"{INSTALL_HINT} (or audit without it: --no-autoattack)")
    models = _models(out, seeds)
    rows: list[dict[str, Any]] = []
    for i, (name, ckpt) in enumerate(models, 1):
        run_dir = ckpt.parent
        run = RunDir(run_dir)
        log.info("[%d/%d] %s", i, len(models), name)
        row: dict[str, Any] = {"run": name, "dir": str(run_dir.relative_to(out))}
        table = json.loads(run.eval_record(black_box=name != "source").read_text())
        m = table["metrics"]
        row.update(clean=m["clean_acc"], pgd=m["pgd_acc"], black_box=m.get("bb_pgd_acc"))
        row["bb_ge_wb"] = None if row["black_box"] is None else row["black_box"] >= row["pgd"]

        path = run.check_record()
        rec = _audited(path, ckpt, test_limit=test_limit)
        if rec is None:
            rec = stamp_record(check_checkpoint(ckpt, test_limit=test_limit, device=device, progress=progress), path,
                         test_limit=test_limit)
        final = rec["metrics"]["sweep"][-1]
        deterministic = not any("#stochastic-forward" in w for w in rec["checks"]["model"])
        row.update(sweep_eps=final["eps"], sweep_acc=final["acc"], sweep_ok=final["acc"] <= MAX_FINAL_ACC,
                   deterministic=deterministic, warnings=list(rec["warnings"]))

        row.update(aa=None, aa_pgd=None, aa_ok=None, aa_n=None)
        if autoattack and deterministic:
            path = run.autoattack_record()
            rec = _audited(path, ckpt, test_limit=aa_limit)
            if rec is None:
                rec = stamp_record(evaluate_checkpoint(ckpt, attacks=["pgd", "autoattack"], test_limit=aa_limit,
                                                 device=device, progress=progress, out=path), path,
                             test_limit=aa_limit)
            am = rec["metrics"]
            row.update(aa=am["autoattack_acc"], aa_pgd=am["pgd_acc"], aa_n=am["n"],
                       aa_ok=am["autoattack_acc"] <= am["pgd_acc"])
            row["warnings"] = list(dict.fromkeys([*row["warnings"], *rec.get("warnings", [])]))
        rows.append(row)
        log.info("%s: clean %.1f, PGD %.1f, bb %s, eps %g -> %.1f%%, AutoAttack %s", name, row["clean"], row["pgd"],
                 row["black_box"], row["sweep_eps"], row["sweep_acc"], row["aa"])
        # rewritten after every model: an interrupted audit leaves a report of the models done so far
        summary = _summary(out, rows, len(models), test_limit=test_limit, aa_limit=aa_limit if autoattack else None,
                           elapsed=time.time() - t0)
    return summary


def _summary(out: Path, rows: list[dict[str, Any]], n_models: int, *, test_limit: int | None,
             aa_limit: int | None, elapsed: float) -> dict[str, Any]:
    failed = [f"{r['run']}: {what}" for r in rows for what, ok in
              (("black-box accuracy below white-box", r["bb_ge_wb"]),
               (f"{r['sweep_acc']:.1f}% accuracy at eps {r['sweep_eps']:g}", r["sweep_ok"]),
               ("AutoAttack accuracy above PGD-40", r["aa_ok"])) if ok is False]
    summary = {"out": str(out), "test_limit": test_limit, "aa_limit": aa_limit, "models": rows,
               "n_models": n_models, "complete": len(rows) == n_models, "failed": failed, "passed": not failed,
               "elapsed_s": round(elapsed, 1)}
    write_json(ReproDir(out).audit("json"), summary)
    write_text(ReproDir(out).audit("md"), markdown(summary))
    return summary


def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**NO**")


def markdown(summary: dict[str, Any]) -> str:
    """The audit as a Markdown table (one line per model) with its verdict."""
    n_aa = {r["aa_n"] for r in summary["models"] if r["aa_n"] is not None}
    lines = [
        "# Audit of the reproduction",
        "",
        f"Eps sweep (`anpvs check`): PGD at growing eps on {summary['test_limit'] or 'all'} test images; "
        f"passes when the accuracy at the largest eps is <= {MAX_FINAL_ACC:g}%. "
        + (f"AutoAttack (standard) and PGD-40 on the same {', '.join(map(str, sorted(n_aa)))} test images. "
           if n_aa else "AutoAttack not run. ")
        + "Black-box and white-box accuracy are the table's.",
        "",
        "| Run | Clean | White-box PGD | Black-box | bb >= wb | Acc. at largest eps | ~0% | PGD on the AA images "
        "| AutoAttack | AA <= PGD | Warnings |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["models"]:
        fmt = (lambda v: "–" if v is None else f"{v:.1f}")  # noqa: E731
        lines.append(f"| {r['run']} | {fmt(r['clean'])} | {fmt(r['pgd'])} | {fmt(r['black_box'])} | "
                     f"{_mark(r['bb_ge_wb'])} | {r['sweep_acc']:.1f} (eps {r['sweep_eps']:g}) | "
                     f"{_mark(r['sweep_ok'])} | {fmt(r['aa_pgd'])} | {fmt(r['aa'])} | {_mark(r['aa_ok'])} | "
                     f"{len(r['warnings'])} |")
    done = "" if summary.get("complete", True) else (
        f" (partial audit: {len(summary['models'])} of {summary['n_models']} models so far)")
    lines += ["", (f"**All checks pass{done}.**" if summary["passed"] else
                   "**Failed:** " + "; ".join(summary["failed"]) + f".{done}"),
              f"({summary['elapsed_s']:.0f} s)", ""]
    warned = [(r["run"], w) for r in summary["models"] for w in r["warnings"]]
    if warned:
        lines += ["Warnings of the sanity checks:", ""] + [f"- {run}: {w}" for run, w in warned] + [""]
    return "\n".join(lines)


__all__ = ["MAX_FINAL_ACC", "AuditError", "audit", "markdown"]
