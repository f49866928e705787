"""The sparsity-robustness frontier on full MNIST (issue 25; docs/target_sparsity.md): ANP-VS cut to unit
sparsities of 50 / 75 / 84 / 90% by the target-sparsity control, the L1 filter-pruning baseline at the same
per-layer widths, and AT as the unpruned reference; PGD-40 on all 10,000 test digits, AutoAttack on the
table's 1,000, analytic and measured speed-ups.

Every model trains with the paper's attack (PGD-20, step 0.01, eps 0.3), a constant learning rate and
5 adversarial epochs: AT 5 epochs; L1 = AT's epoch-3 checkpoint pruned, then F = 2 fine-tuning epochs;
ANP-VS = 3 epochs of mask learning from a 2-epoch Standard model (the MNIST table's ANP-VS row, docs/full_protocol.md),
cut to the target, then the same F = 2 fine-tuning epochs with the masks held. The masks are learned once per
seed and cut to every target (cutting after epoch 3 of one run or of four identical runs is the same).

L1 gets the widths of ANP-VS's *compacted* network (``widths.json`` beside each checkpoint): a conv2 channel kept
by its mask but none of whose 16 positions is kept by mask3 feeds nothing and is removed by compaction, so the
masks' counts overstate what computes (ANP-VS at 75% keeps 37 conv2 channels by its mask, 35 that compute).
With the same compacted widths the two networks cost the same FLOPs.

Resumable: rerun the same command after an interruption; finished runs and current records are reused (a
record is current when it is newer than its checkpoint), an interrupted training continues from its last
epoch. The table and figure are rewritten after every finished point.

    python scripts/frontier_mnist.py --data-dir ~/data/mnist --out results/mnist_frontier
    python scripts/frontier_mnist.py --data-dir ~/data/mnist --out results/mnist_frontier \
        --reuse-table runs/mnist_full     # reuse the MNIST table's Standard, AT and ANP-VS runs of the same seeds
    python scripts/frontier_mnist.py --out results/mnist_frontier --table-only      # tables from what exists
    python scripts/frontier_mnist.py --out results/mnist_frontier --retime          # time every network together
    python scripts/frontier_mnist.py --smoke --out /tmp/frontier_smoke              # the chain on 64 digits, ~1 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

LEARN_EPOCHS, AT_E3 = 3, 3  # ANP-VS mask learning (the table's row); AT epochs before L1 prunes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="the MNIST IDX files (not needed with --smoke or --table-only)")
    p.add_argument("--out", required=True, help="folder of the runs (resumable)")
    p.add_argument("--results", help="where the table and figure go (default: OUT)")
    p.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.75, 0.84, 0.9])
    p.add_argument("--units", type=_units, nargs="*", default=[], metavar="C1,C2,F3,H4",
                   help="also cut ANP-VS (and prune L1) to these per-layer widths (method.target_units), seed 0; "
                        "e.g. 4,23,61,129: widths that give the paper's 84.16%% / 6.81%% memory / 10.6x FLOPs")
    p.add_argument("--second-seed-targets", type=float, nargs="*", default=[0.84],
                   help="targets also run with seed 1 (with its own Standard, AT and mask learning)")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--vs-form", choices=["sum", "mean"], default="sum",
                   help="V in the VS loss: sum (the form the MNIST table found effective) or mean (reference code)")
    p.add_argument("--aa-limit", type=int, default=1000, help="AutoAttack test digits; 0 = no AutoAttack")
    p.add_argument("--reuse-table", metavar="DIR",
                   help="the --out folder of `anpvs reproduce --table mnist --scale full`: its finished Standard, AT "
                        "and ANP-VS runs of the same seed are the frontier's Standard, AT (first 3 epochs) and mask "
                        "learning (the same configurations, checked), so they are copied instead of trained again")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--retime", action="store_true",
                   help="time every run's compacted network and the unpruned one in one process, interleaved "
                        "(retime.json; run on an idle machine): speed-ups comparable point to point, which the "
                        "records' (each timed in its own evaluation) are only up to the machine's drift")
    p.add_argument("--retime-budget", type=float, default=3.0, help="seconds of timing per network (--retime)")
    p.add_argument("--smoke", action="store_true", help="64 bundled digits, 1 epoch, PGD-1: checks the chain")
    args = p.parse_args()
    out = Path(args.out)
    results = Path(args.results or out)
    if args.retime:
        retime(out, args.retime_budget)
    elif not args.table_only:
        if not (args.data_dir or args.smoke):
            p.error("--data-dir is required (or --smoke / --table-only)")
        for seed, targets in ((0, [*args.targets, *args.units]), (1, args.second_seed_targets)):
            if targets:
                run_seed(args, out, results, seed, targets)
    write_table(out, results)


def _units(text: str) -> list[int]:
    try:
        units = [int(u) for u in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of unit counts "
                                         f"(e.g. 4,23,61,129)") from None
    if len(units) != 4 or min(units) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: LeNet5-Caffe has 4 masks, each keeps at least 1 unit")
    return units


def _target(t: float | list[int]) -> tuple[str, list[str]]:
    """A target's name in the run folders and its --set: ``84`` (unit sparsity 0.84) or ``u4-23-61-129`` (widths)."""
    if isinstance(t, list):
        return "u" + "-".join(map(str, t)), ["--set", f"method.target_units=[{','.join(map(str, t))}]"]
    return f"{round(100 * t)}", ["--set", f"method.target_sparsity={t}"]


def run_seed(args: argparse.Namespace, out: Path, results: Path, seed: int,
             targets: list[float | list[int]]) -> None:
    smoke = args.smoke
    ft = 1 if smoke else args.finetune_epochs
    if smoke:
        data = ["--dataset", "mnist_sample", "--train-limit", "64", "--test-limit", "32", "--batch-size", "32",
                "--pgd-steps", "1"]
    else:
        data = ["--dataset", "mnist", "--data-dir", args.data_dir, "--pgd-steps", "20", "--step-size", "0.01"]
    common = [*data, "--seed", str(seed), "--quiet", "--set", "data.val_size=0", "--set", "train.lr_milestones=[]"]
    masks = ["--set", "model.mask_init=2.0", "--set", "train.mask_lr=0.1", "--set", "method.kl_n=60000",
             "--set", f"method.vs_reduction={args.vs_form}"]
    aa = 0 if smoke else args.aa_limit
    learn_e, at_e3 = (1, 1) if smoke else (LEARN_EPOCHS, AT_E3)

    def train(name: str, method: str, epochs: int, *extra: str) -> Path:
        run = out / "runs" / name / f"seed{seed}"
        if args.reuse_table and name in TABLE_ROWS and not run.exists():
            reuse(Path(args.reuse_table) / "runs" / TABLE_ROWS[name] / f"seed{seed}", run,
                  [method, epochs, *common, *extra], aa)
        anpvs("train", "--method", method, "--epochs", str(epochs), *common, *extra, "--out", str(run), "--resume")
        return run / "checkpoint.pt"

    std = train("standard", "standard", 1 if smoke else 2)
    # AT: 3 epochs, saved as L1's init, then extended to 3 + F (constant LR: exactly a run of 3 + F epochs)
    at_init = out / "init" / f"at_e{at_e3}_seed{seed}.pt"
    if not at_init.exists():
        at = train("at", "at", at_e3)
        at_init.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(at, at_init.with_suffix(".tmp"))
        at_init.with_suffix(".tmp").replace(at_init)
    at = train("at", "at", at_e3 + ft)
    evaluate(at, aa)
    series = f"anp_vs_{args.vs_form}"
    learned = train(f"{series}_learn", "anp_vs", learn_e, "--init", str(std), *masks)
    evaluate(learned, aa if seed == 0 else 0)
    write_table(out, results)
    for t in targets:
        pct, ask = _target(t)
        cut = train(f"{series}_{pct}", "anp_vs", ft, "--init", str(learned), *masks, *ask)
        evaluate(cut, aa)
        live = compacted_units(cut)
        l1 = train(f"l1_{args.vs_form}_{pct}", "l1_prune", ft, "--init", str(at_init),
                   "--set", f"method.target_units=[{','.join(map(str, live))}]")
        evaluate(l1, aa)
        write_table(out, results)


#: frontier run -> the row of the MNIST full-scale table (anpvs/protocols/mnist_full.yaml) trained the same way
TABLE_ROWS = {"standard": "standard", "at": "at", "anp_vs_sum_learn": "anp_vs_sum", "anp_vs_mean_learn": "anp_vs"}


def reuse(table_run: Path, run: Path, asked: list, aa_limit: int) -> None:
    """Copy ``table_run`` (a finished run of the reproduction) to ``run`` when its configuration is the one
    the frontier would train (every setting but where it lives: ``anpvs.jobs.reproduce.PLACES``; the
    evaluation settings too, since the copy is evaluated with them); its AutoAttack record comes along when
    it covers the same ``aa_limit`` test digits (the same seeded subset: same checkpoint, same data seed)."""
    from anpvs.io.atomic import write_json
    from anpvs.jobs.reproduce import PLACES, config_differences
    from anpvs.models.checkpoint import read_checkpoint

    ckpt = table_run / "checkpoint.pt"
    if not ckpt.is_file():
        print(f"reuse: {table_run} has no checkpoint; training it", flush=True)
        return
    method, epochs, *rest = asked
    printed = subprocess.run([sys.executable, "-m", "anpvs", "train", "--method", method, "--epochs", str(epochs),
                              *rest, "--out", str(run), "--print-config"], check=True, capture_output=True, text=True)
    saved = read_checkpoint(ckpt)
    want = yaml.safe_load(printed.stdout)
    differ = config_differences(saved["config"], want, ignore=PLACES)
    if differ or saved.get("epoch") != epochs:
        why = (f"{len(differ)} setting(s) differ, e.g. {next(iter(differ))}: {next(iter(differ.values()))}"
               if differ else f"it has {saved.get('epoch')} of {epochs} epochs")
        print(f"reuse: {table_run} is not the frontier's run ({why}); training it", flush=True)
        return
    run.mkdir(parents=True)
    for name in (".anpvs-run", "checkpoint.pt", "log.jsonl"):
        shutil.copy2(table_run / name, run / name)  # copy2 keeps the times: a copied record stays current
    own_config(run, table_run / "config.yaml", want)
    rec = table_run / "eval_autoattack.json"
    if aa_limit and rec.is_file() and json.loads(rec.read_text()).get("audit", {}).get("test_limit") == aa_limit:
        # the record names the checkpoint it evaluated: now the copy (the same bytes); its times are kept
        copied = write_json(run / rec.name, {**json.loads(rec.read_text()), "checkpoint": str(run / "checkpoint.pt")})
        shutil.copystat(rec, copied)
    print(f"reuse: {run} <- {table_run}", flush=True)


def own_config(run: Path, copied: Path, want: dict) -> None:
    """Write the config.yaml of a copied run: the table run's, with the folders the frontier gives it (``out``, and
    ``init``: the frontier's copy of the same Standard checkpoint), so that the frontier's records name its own
    runs, as if it had trained them."""
    from anpvs.io.atomic import write_text

    have = yaml.safe_load(copied.read_text())
    write_text(run / "config.yaml", yaml.safe_dump({**have, "out": want["out"], "init": want["init"]}, sort_keys=False))


def anpvs(*argv: str) -> None:
    print("+ anpvs", " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "anpvs", *argv], check=True)


def retime(out: Path, budget_s: float) -> None:
    """Median batch-256 latency of every run's compacted network (``runs/*/seed*/checkpoint.pt``) and of the
    unpruned masked network, timed in turn in one process (:func:`anpvs.metrics.latency.median_latency`), written
    to ``OUT/retime.json`` with each run's speed-up (unpruned / compacted)."""
    from anpvs.io.atomic import write_json
    from anpvs.metrics.latency import latency_device, median_latency
    from anpvs.models.checkpoint import load_model
    from anpvs.models.compact import compact_pair, deployable, example_shape

    nets, reference = {}, None
    for ckpt in sorted((out / "runs").glob("*/seed*/checkpoint.pt")):
        masked, net = compact_pair(load_model(ckpt)[0].eval())
        if reference is None:
            reference = masked  # a masked forward costs the same whatever the masks
        nets[ckpt.parent.relative_to(out / "runs").as_posix()] = deployable(net)
    if reference is None:
        raise SystemExit(f"--retime: no checkpoint under {out / 'runs'}")
    print(f"retime: {len(nets)} compacted networks and the unpruned one, ~{budget_s:g} s each", flush=True)
    ms = median_latency({"unpruned": reference, **nets}, example_shape(reference), batch_sizes=(256,),
                        budget_s=budget_s, max_repeats=1000)
    base = ms["unpruned"]["b256"]
    write_json(out / "retime.json", {
        "device": latency_device(next(reference.parameters()).device), "batch": 256, "budget_s": budget_s,
        "unpruned_ms": round(base, 4),
        "runs": {run: {"ms": round(ms[run]["b256"], 4), "speedup": round(base / ms[run]["b256"], 3)} for run in nets},
    })


def current(record: Path, checkpoint: Path) -> bool:
    return record.is_file() and record.stat().st_mtime >= checkpoint.stat().st_mtime


def compacted_units(ckpt: Path) -> list[int]:
    """Units per mask that compute: the widths of the compacted network (conv1, conv2, dense3's inputs, dense3),
    written to ``widths.json`` beside ``ckpt`` with the masks' own counts (recomputed when older than ``ckpt``)."""
    from anpvs.io.atomic import write_json

    path = ckpt.parent / "widths.json"
    if not current(path, ckpt):
        from anpvs.models.checkpoint import load_model
        from anpvs.models.compact import compact, compact_widths
        from anpvs.models.masks import active_units

        model, _ = load_model(ckpt)
        write_json(path, {"active_units": active_units(model),
                          "compacted_units": list(compact_widths(compact(model)).values())})
    return json.loads(path.read_text())["compacted_units"]


def evaluate(ckpt: Path, aa_limit: int) -> None:
    """PGD-40 on the whole test set with the efficiency columns (eval.json); AutoAttack and PGD-40 on
    ``aa_limit`` seeded test digits (eval_autoattack.json); the compacted widths (widths.json)."""
    compacted_units(ckpt)
    if not current(ckpt.parent / "eval.json", ckpt):
        anpvs("eval", str(ckpt), "--quiet")
    aa = ckpt.parent / "eval_autoattack.json"
    if aa_limit and not current(aa, ckpt):
        anpvs("eval", str(ckpt), "--attack", "pgd", "--attack", "autoattack", "--test-limit", str(aa_limit),
              "--out", str(aa), "--quiet", "--no-latency")


# -------------------------------------------------------------------------------------------------------------
# Table and figure
# -------------------------------------------------------------------------------------------------------------
LABELS = {"at": "AT (unpruned)", "anp_vs_sum": "ANP-VS", "anp_vs_mean": "ANP-VS (mean V)",
          "l1_sum": "L1 filters, ANP-VS's widths", "l1_mean": "L1 filters, mean-V ANP-VS's widths"}


def _label(family: str) -> str:
    base = family.removesuffix("_learn")
    return LABELS.get(base, base) + (" (KL only, 3 epochs, no cut)" if family.endswith("_learn") else "")


def _rows(out: Path) -> list[dict]:
    rows = []
    timed = json.loads((out / "retime.json").read_text())["runs"] if (out / "retime.json").is_file() else {}
    for rec_path in sorted((out / "runs").glob("*/seed*/eval.json")):
        run = rec_path.parent
        name = run.parent.name
        m = json.loads(rec_path.read_text())["metrics"]
        seed = yaml.safe_load((run / "config.yaml").read_text())["seed"]
        aa = run / "eval_autoattack.json"
        am = json.loads(aa.read_text())["metrics"] if aa.is_file() else {}
        widths = run / "widths.json"
        live = json.loads(widths.read_text())["compacted_units"] if widths.is_file() else None
        family = "at" if name == "at" else name if name.endswith("_learn") else name.rpartition("_")[0]
        tag = name.rpartition("_")[2]  # the target in percent, or u<widths> (ANP-VS and L1 at a target share it)
        rows.append({
            "method": _label(family), "family": family, "seed": seed, "target": float(tag) if tag.isdigit() else None,
            "target_units": [int(u) for u in tag[1:].split("-")] if tag.startswith("u") else None,
            "sparsity": m["unit_sparsity"], "units": m["active_units"], "compacted_units": live,
            "clean": m["clean_acc"], "pgd": m["pgd_acc"],
            "aa": am.get("autoattack_acc"), "pgd_1k": am.get("pgd_acc"), "vuln": m["pgd_vulnerability"],
            "flops": m["flops_speedup"], "counted": m["counted_flops_speedup"],
            "speedup": m.get("wallclock_speedup_b256"),
            "speedup_together": timed.get(f"{name}/{run.name}", {}).get("speedup"),
        })
    return sorted(rows, key=lambda r: (r["family"] != "at", r["family"], r["target"] or 0, r["target_units"] or [],
                                       r["seed"]))


def _f(v, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def write_table(out: Path, results: Path) -> None:
    rows = _rows(out)
    if not rows:
        return
    results.mkdir(parents=True, exist_ok=True)
    lines = ["| Model | Seed | Target (%) | Unit sparsity (%) | Active units | Compacted widths | Clean (%) | "
             "PGD-40 (%) | AutoAttack, 1000 (%) | PGD-40, same 1000 (%) | Vulnerability | FLOPs (x) | "
             "Counted FLOPs (x) | Measured speed-up, B=256 (x) | Timed together, B=256 (x) |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        target = "widths" if r.get("target_units") else _f(r["target"], ".0f")
        lines.append(f"| {r['method']} | {r['seed']} | {target} | {r['sparsity']:.2f} | {r['units']} | "
                     f"{r.get('compacted_units') or '-'} | {r['clean']:.2f} | {r['pgd']:.2f} | {_f(r['aa'])} | "
                     f"{_f(r['pgd_1k'])} | "
                     f"{r['vuln']:.3f} | {r['flops']:.2f} | {r['counted']:.2f} | {_f(r['speedup'])} | "
                     f"{_f(r['speedup_together'])} |")
    (results / "frontier.md").write_text("\n".join(lines) + "\n")
    (results / "frontier.json").write_text(json.dumps(rows, indent=1) + "\n")
    _figure(rows, results / "frontier.png")
    print(f"table: {results / 'frontier.md'}", flush=True)


def _figure(rows: list[dict], path: Path) -> None:
    """Robust accuracy against measured speed-up. Each family's seed-0 targets are joined in order of sparsity;
    other seeds (triangles) and the ``--units`` widths (diamonds) are their own points: a seed's masks give other
    widths at the same sparsity, so averaging their speed-ups would place a point no network has."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # x: the speed-ups timed together (--retime) when every row has one, else each evaluation's own
    speed = "speedup_together" if all(r.get("speedup_together") for r in rows) else "speedup"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharex=True)
    for ax, key, name in ((axes[0], "aa", "AutoAttack accuracy, 1,000 digits (%)"),
                          (axes[1], "pgd", "PGD-40 accuracy, 10,000 digits (%)")):
        for i, family in enumerate(dict.fromkeys(r["family"] for r in rows)):
            pts = [r for r in rows if r["family"] == family and r[key] is not None and r[speed] is not None]
            if not pts:
                continue
            color = f"C{i}"
            line = sorted((r for r in pts if r["seed"] == 0 and not r.get("target_units")),
                          key=lambda r: (r["target"] or 0, r["sparsity"]))
            ax.plot([r[speed] for r in line], [r[key] for r in line], "s" if family == "at" else "o-",
                    color=color, label=_label(family), alpha=0.85)
            for r in pts:
                if r in line:
                    text = f"{r['sparsity']:.0f}%"
                else:
                    marker, text = ("D", "paper's widths") if r.get("target_units") else ("^", f"seed {r['seed']}")
                    ax.plot([r[speed]], [r[key]], marker, color=color, alpha=0.85)
                    text = f"{r['sparsity']:.0f}%, {text}"
                ax.annotate(text, (r[speed], r[key]), textcoords="offset points", xytext=(3, 4), fontsize=7)
        ax.set_xlabel("measured speed-up of the compacted network, batch 256 (x)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    when = "all timed together" if speed == "speedup_together" else "each timed in its evaluation"
    fig.suptitle(f"MNIST, LeNet5-Caffe: robustness vs measured speed-up ({when}; labels: unit sparsity)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
