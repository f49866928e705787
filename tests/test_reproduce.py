"""Tests of ``anpvs reproduce``: table writers, protocols, interrupt + resume, figures."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from anpvs.evaluation.paper_results import PAPER_KEYS, PAPER_ROWS, TABLES, paper_table
from anpvs.evaluation.tables import TABLE_COLUMNS, summarize, write_tables
from anpvs.jobs import reproduce as rp
from anpvs.jobs.reproduce import run as rp_run  # the module whose evaluate_checkpoint the runs call

HEADERS = ["Clean acc (%)", "White-box PGD acc (%)", "Black-box acc (%)", "White-box vuln.", "Black-box vuln.",
           "Memory (%)", "FLOPs (x)", "Measured speed-up (x)", "Sparsity (%)", "Weight sparsity (%)"]
SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "docs" / "SPEC.md"


def _metrics(clean: float, **kw: float) -> dict[str, float]:
    base = {"clean_acc": clean, "pgd_acc": 10.0, "bb_pgd_acc": 20.0, "pgd_vulnerability": 0.1,
            "bb_pgd_vulnerability": 0.05, "memory_pct": 100.0, "flops_speedup": 1.0, "unit_sparsity": 0.0,
            "weight_sparsity": 0.0}
    return {**base, **kw}


# --------------------------------------------------------------------------------------------------------
# tables


def test_table_writers_paper_layout_and_mean_std(tmp_path: Path) -> None:
    rows = {"Standard": [_metrics(99.0), _metrics(98.0, pgd_acc=12.0)], "AT": [_metrics(97.0)], "Empty": []}
    paper = {"Standard": paper_table("mnist")["standard"]}
    paths = write_tables(tmp_path, rows, paper=paper, row_keys={"Standard": "standard", "AT": "at"},
                         caption="cap", footnotes=["note one"], meta={"seeds": [0, 1]})

    md = paths["md"].read_text().splitlines()
    header = next(ln for ln in md if ln.startswith("| Model"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Model", *HEADERS]
    std_row = next(ln for ln in md if ln.startswith("| Standard"))
    cells = [c.strip() for c in std_row.strip("|").split("|")]
    assert cells[1] == "98.50 ± 0.71" and cells[2] == "11.00 ± 1.41" and cells[3] == "20.00 ± 0.00"
    assert next(ln for ln in md if ln.startswith("| AT"))  # single seed: no ± part
    assert "| AT | 97.00 | 10.00 |" in "\n".join(md)
    paper_row = md[md.index(std_row) + 1]
    assert paper_row.startswith("| *↳ paper* | *99.29* | *0.00* | *8.02* | *0.129* |")
    assert "| Empty | - |" in "\n".join(md)
    assert md[0] == "cap" and md[-1] == "1. note one"

    reader = list(csv.reader(io.StringIO(paths["csv"].read_text())))
    assert reader[0][:3] == ["Model", "Source", "Seeds"]
    assert reader[0][3::2] == HEADERS and reader[0][4::2] == [f"{h} std" for h in HEADERS]
    assert reader[1][:3] == ["Standard", "ours", "2"]
    assert float(reader[1][3]) == pytest.approx(98.5) and float(reader[1][4]) == pytest.approx(math.sqrt(0.5))
    assert reader[2][:4] == ["Standard", "paper", "5", "99.29"]

    data = json.loads(paths["json"].read_text())
    assert [c["header"] for c in data["columns"]] == HEADERS
    assert [c["key"] for c in data["columns"]] == [k for _, k, _ in TABLE_COLUMNS]
    st = data["rows"][0]["metrics"]["clean_acc"]
    assert st["mean"] == pytest.approx(98.5) and st["std"] == pytest.approx(math.sqrt(0.5)) and st["n"] == 2
    assert data["rows"][1]["metrics"]["clean_acc"]["std"] is None and data["rows"][1]["paper"] is None
    assert data["rows"][0]["key"] == "standard" and data["seeds"] == [0, 1]


def test_summarize_ignores_missing_values() -> None:
    assert summarize([1.0, None, float("nan"), 3.0]) == {"mean": 2.0, "std": math.sqrt(2.0), "n": 2,
                                                          "values": [1.0, 3.0]}
    assert summarize([])["mean"] is None


@pytest.mark.skipif(not SPEC.is_file(), reason="shared/docs/SPEC.md not beside the checkout")
def test_paper_results_are_the_spec_tables_verbatim() -> None:
    text = SPEC.read_text()
    sections = re.split(r"\*\*(MNIST|CIFAR-10|CIFAR-100),", text.split("## 9.")[1].split("## 10.")[0])
    names = {"MNIST": "mnist", "CIFAR-10": "cifar10", "CIFAR-100": "cifar100"}
    found = {}
    for name, body in zip(sections[1::2], sections[2::2], strict=True):
        rows = {}
        for line in body.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and cells[0] in PAPER_ROWS:
                rows[PAPER_ROWS[cells[0]]] = dict(zip(PAPER_KEYS, map(float, cells[1:]), strict=True))
        found[names[name]] = rows
    assert set(found) == set(TABLES)
    for table in TABLES:
        assert paper_table(table) == found[table]


def test_shipped_protocols_load_and_plan(tmp_path: Path) -> None:
    shipped = {(t, s) for t in TABLES for s in rp.available_scales(t)}
    assert {("mnist", "paper"), ("mnist", "full"), ("mnist", "sample"), ("cifar10", "cpu")} <= shipped
    for table in TABLES:
        assert rp.protocol_path(table) == rp.protocol_path(table, rp.DEFAULT_SCALE[table])
        for scale in rp.available_scales(table):
            proto = rp.load_protocol(rp.protocol_path(table, scale))
            assert proto["table"] == table and list(proto["rows"])[:2] == ["standard", "bp"]
            jobs, shown, skipped = rp.plan(proto, seeds=[0, 1], out=tmp_path, device="cpu")
            src = next(j for j in jobs if j.name == "source")  # the source comes before every row (its
            assert src.cfg.method.name == "at"                # pre-training, if any, before it)
            assert all(j.kind == "pretrain" for j in jobs[:jobs.index(src)])
            assert set(shown) | set(skipped) == set(proto["rows"])
            by_name = {j.name: j for j in jobs}
            if "anp_vs/seed1" in by_name:  # ANP-VS starts from the Standard run of the same seed
                assert by_name["anp_vs/seed1"].cfg.init == str(tmp_path / "runs/standard/seed1/checkpoint.pt")
    with pytest.raises(rp.ProtocolError, match="unknown row"):
        rp.plan(rp.load_protocol(rp.protocol_path("mnist", "sample")), seeds=[0], out=tmp_path, rows=["nope"])
    with pytest.raises(rp.ProtocolError, match="now --scale sample"):  # the old name of the 4,000-digit protocol
        rp.protocol_path("mnist", "cpu")


def test_protocol_errors(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("table: mnist\nsource: {seed: 1}\nrows: {bp: {init: standard}}\n")
    with pytest.raises(rp.ProtocolError, match="not another row"):
        rp.load_protocol(p)
    p.write_text("table: mnist\nsource: {seed: 1}\nrows: {at: {overrides: {train.epoch: 1}}}\n")
    with pytest.raises(rp.ConfigError, match="unknown config key"):
        rp.plan(rp.load_protocol(p), seeds=[0], out=tmp_path)


# --------------------------------------------------------------------------------------------------------
# a tiny reproduction, interrupted and resumed

TINY = """
table: mnist
scale: tiny
description: two rows on 64 digits.
common:
  data.name: mnist_sample
  data.train_limit: 64
  data.test_limit: 32
  train.batch_size: 16
  train.lr_milestones: []
  attack.steps: 1
  attack.step_size: 0.3
  eval.steps: 2
  eval.step_size: 0.15
  eval.latency: false  # wall-clock timings differ between runs; the resumed table must equal the first
source: {seed: 1000, method: at, overrides: {train.epochs: 1}}
rows:
  standard: {label: Standard, overrides: {train.epochs: 1}}
  at: {label: AT, overrides: {train.epochs: 2}}
  ghost: {label: Ghost, method: no_such_method}
figures: {n_images: 16, eps_factors: [0.0, 1.0]}
"""


def _table(out: Path) -> dict:
    data = json.loads((out / "table.json").read_text())
    return {r["label"]: r["metrics"] for r in data["rows"]}


def test_reproduce_interrupted_then_resumed_matches_uninterrupted(tmp_path: Path, monkeypatch) -> None:
    from anpvs.cli import main
    from anpvs.methods.adversarial import AT

    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(TINY)
    try:
        import matplotlib  # noqa: F401

        figures = []
    except ImportError:
        figures = ["--no-figures"]

    # A: uninterrupted, through the command line
    a = tmp_path / "a"
    assert main(["reproduce", "--protocol", str(protocol), "--seeds", "1", "--out", str(a), "--device", "cpu",
                 "--quiet", *figures]) == 0
    assert (a / "runs/source/checkpoint.pt").is_file() and (a / "runs/at/seed0/eval_bb.json").is_file()
    md = (a / "table.md").read_text()
    assert "Ghost: row skipped, method 'no_such_method' is not registered" in md
    assert "Black-box source: `runs/source` (at, seed 1000" in md

    # B: Ctrl-C in the second epoch of the AT row, after the Standard row was trained and evaluated
    b = tmp_path / "b"
    calls = {"n": 0}
    real_loss = AT.loss

    def flaky_loss(self, model, x, y):
        if self.cfg.out.endswith("at/seed0"):
            calls["n"] += 1
            if calls["n"] == 6:  # 4 batches per epoch: epoch 1 is checkpointed, epoch 2 is cut
                raise KeyboardInterrupt
        return real_loss(self, model, x, y)

    monkeypatch.setattr(AT, "loss", flaky_loss)
    with pytest.raises(KeyboardInterrupt):
        rp.reproduce(protocol=protocol, seeds=1, out=b, device="cpu", figures=False, progress=False)
    assert torch.load(b / "runs/at/seed0/checkpoint.pt", weights_only=True)["epoch"] == 1
    assert (b / "runs/standard/seed0/eval_bb.json").is_file() and not (b / "table.md").exists()
    std_ckpt_mtime = (b / "runs/standard/seed0/checkpoint.pt").stat().st_mtime_ns
    std_eval = (b / "runs/standard/seed0/eval_bb.json").read_text()

    # resume: the same call finishes the AT row only (training from epoch 2, then its evaluation)
    evaluated: list[str] = []
    real_eval = rp_run.evaluate_checkpoint

    def counting_eval(ckpt, **kw):
        evaluated.append(str(ckpt))
        return real_eval(ckpt, **kw)

    monkeypatch.setattr(rp_run, "evaluate_checkpoint", counting_eval)
    summary = rp.reproduce(protocol=protocol, seeds=1, out=b, device="cpu", figures=False, progress=False)
    assert evaluated == [str(b / "runs/at/seed0/checkpoint.pt")]
    assert (b / "runs/standard/seed0/checkpoint.pt").stat().st_mtime_ns == std_ckpt_mtime
    assert (b / "runs/standard/seed0/eval_bb.json").read_text() == std_eval
    assert [json.loads(ln)["epoch"] for ln in (b / "runs/at/seed0/log.jsonl").read_text().splitlines()] == [1, 2]
    assert summary["skipped"] == {"ghost": "method 'no_such_method' is not registered in this version of anpvs"}

    # same numbers, same table
    assert _table(b) == _table(a)
    assert (b / "table.md").read_text() == md

    # a third run changes nothing
    evaluated.clear()
    rp.reproduce(protocol=protocol, seeds=1, out=b, device="cpu", figures=False, progress=False)
    assert evaluated == []

    if not figures:  # matplotlib is there: A drew the figures (PNG files)
        pngs = {p.name for p in (a / "figures").glob("*.png")}
        assert {"training_curves.png", "vulnerability_histograms.png", "input_distortion.png",
                "accuracy_vs_eps.png", "loss_surface.png"} <= pngs
        for name in pngs:
            assert (a / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads((a / "figures" / "accuracy_vs_eps.json").read_text())["at"]["eps"] == [0.0, 0.3]


def test_figures_command_needs_a_reproduction_folder(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    from anpvs.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["figures", str(tmp_path)])
    assert exc.value.code == 1
    assert "not a reproduction folder" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------
# figures from synthetic inputs


def test_figure_functions_write_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from anpvs import create_model
    from anpvs.attacks import PGD
    from anpvs.jobs import figures as fg

    torch.manual_seed(0)
    model = create_model("lenet5_caffe_bbd").eval()
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    attack = PGD(eps=0.3, step_size=0.1, steps=2)
    vuln = fg.feature_vulnerability(model, x, y, attack)
    assert [tuple(v.shape) for v in vuln] == [(20, 24, 24), (50, 8, 8), (500,)]
    heat = fg.input_distortion(model, x[:1], y[:1], attack)
    assert heat.shape == (24, 24)
    acc = fg.accuracy_vs_eps(model, x, y, [0.0, 0.3], steps=2, step_per_eps=0.3)
    assert len(acc) == 2 and all(0 <= v <= 100 for v in acc)
    a, b, z = fg.loss_surface(model, x[:1], y[:1], 0.3, n=5)
    assert z.shape == (5, 5) and a.min() == pytest.approx(-0.3)
    logs = {"ANP-VS": [{"epoch": e, "loss": 1.0 / e, "active_units": {"mask1": 20 - e, "mask2": 50 - e}}
                       for e in (1, 2)], "AT": [{"epoch": 1, "loss": 1.0}]}
    path = fg.plot_active_units(logs, tmp_path / "u.png")  # the other drawings run in the reproduce test
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fg.plot_active_units({"AT": logs["AT"]}, tmp_path / "none.png") is None


# --------------------------------------------------------------------------------------------------------
# anpvs audit


def test_audit_of_a_tiny_reproduction(tmp_path: Path, capsys) -> None:
    from anpvs.cli import main
    from anpvs.jobs.audit import audit

    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(TINY)
    out = tmp_path / "r"
    with pytest.raises(SystemExit) as exc:  # not a reproduction (yet)
        main(["audit", str(out), "--no-autoattack"])
    assert exc.value.code == 1
    assert "not a reproduction folder (no reproduce.json); run anpvs reproduce" in capsys.readouterr().err
    rp.reproduce(protocol=protocol, seeds=1, out=out, device="cpu", figures=False, progress=False)

    # interrupted in the second model: the report holds the first one
    import anpvs.jobs.check  # where anpvs check's job lives (the audit imports it at call time)

    real_check, calls = anpvs.jobs.check.check_checkpoint, []

    def interrupted(ckpt, **kw):
        calls.append(ckpt)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_check(ckpt, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(anpvs.jobs.check, "check_checkpoint", interrupted)
        with pytest.raises(KeyboardInterrupt):
            audit(out, test_limit=32, autoattack=False, device="cpu", progress=False)
    assert "(partial audit: 1 of 3 models so far)" in (out / "audit.md").read_text()
    assert not json.loads((out / "audit.json").read_text())["complete"]

    summary = audit(out, test_limit=32, autoattack=False, device="cpu", progress=False)
    assert summary["complete"] and json.loads((out / "audit.json").read_text())["complete"]
    assert [m["run"] for m in summary["models"]] == ["source", "standard/seed0", "at/seed0"]
    for m in summary["models"]:
        assert m["sweep_eps"] == 1.0 and m["sweep_ok"] == (m["sweep_acc"] <= 5.0)  # 1-epoch models may be flat
        assert m["deterministic"] and m["aa"] is None
    table = json.loads((out / "runs/at/seed0/eval_bb.json").read_text())["metrics"]
    at = summary["models"][2]
    assert (at["pgd"], at["black_box"]) == (table["pgd_acc"], table["bb_pgd_acc"])
    assert at["bb_ge_wb"] == (table["bb_pgd_acc"] >= table["pgd_acc"])
    assert summary["models"][0]["black_box"] is None and summary["models"][0]["bb_ge_wb"] is None
    md = (out / "audit.md").read_text()
    assert md.count("\n| ") == 4 and "| at/seed0 |" in md  # header + 3 models

    # a second audit reuses the records; a black-box accuracy below the white-box one fails it
    check = out / "runs/standard/seed0/check.json"
    mtime = check.stat().st_mtime_ns
    rec = json.loads((out / "runs/standard/seed0/eval_bb.json").read_text())
    rec["metrics"]["bb_pgd_acc"] = rec["metrics"]["pgd_acc"] - 1.0
    (out / "runs/standard/seed0/eval_bb.json").write_text(json.dumps(rec))
    assert main(["audit", str(out), "--test-limit", "32", "--no-autoattack", "--strict", "--device", "cpu",
                 "--quiet"]) == 1
    assert check.stat().st_mtime_ns == mtime
    printed = capsys.readouterr().out
    assert "standard/seed0: black-box accuracy below white-box" in printed.split("**Failed:**")[1]

    # a different --test-limit redoes the sweep
    audit(out, test_limit=16, autoattack=False, device="cpu", progress=False)
    assert json.loads(check.read_text())["metrics"]["n"] == 16


def test_audit_runs_autoattack_beside_pgd(tmp_path: Path) -> None:
    pytest.importorskip("pyautoattack")
    from anpvs.jobs.audit import audit

    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(TINY.replace("  at: {label: AT, overrides: {train.epochs: 2}}\n", ""))
    rp.reproduce(protocol=protocol, seeds=1, out=tmp_path, device="cpu", figures=False, progress=False)
    tables = {p: p.read_bytes() for p in tmp_path.glob("runs/**/eval*.json")}
    summary = audit(tmp_path, test_limit=16, device="cpu", progress=False, seeds=[0])
    assert {p: p.read_bytes() for p in tmp_path.glob("runs/**/eval*.json") if p.name != "eval_autoattack.json"} \
        == tables  # the reproduction's own records are left alone
    for m in summary["models"]:
        assert m["aa_n"] == 16 and m["aa"] <= m["aa_pgd"] and m["aa_ok"]
        assert (tmp_path / m["dir"] / "eval_autoattack.json").is_file()


def test_training_panels_keep_trades_kl_out_of_the_mask_kl_panel() -> None:
    from anpvs.jobs.figures import training_panels

    logs = {"ANP-VS": [{"epoch": 1, "loss": 2.0, "adv_acc": 10.0, "kl": 9000.0, "active_units": {"mask1": 19}}],
            "TRADES": [{"epoch": 1, "loss": 2.0, "adv_acc": 12.0, "kl": 0.03}],
            "Standard": [{"epoch": 1, "loss": 1.0}], "empty": []}
    panels = {title: labels for title, _, labels in training_panels(logs)}
    assert panels == {"training loss": ["ANP-VS", "TRADES", "Standard"],
                      "training adversarial accuracy (%)": ["ANP-VS", "TRADES", "Standard"],
                      "KL (masks)": ["ANP-VS"]}
    assert "KL (masks)" not in {t for t, _, _ in training_panels({"TRADES": logs["TRADES"]})}


def test_training_panels_keep_the_validation_vulnerability_out_of_the_accuracy_panel() -> None:
    from anpvs.jobs.figures import training_panels

    logs = {"AT": [{"epoch": 1, "loss": 1.0, "val_clean_acc": 98.0, "val_pgd20_acc": 80.0,
                    "val_vulnerability": 0.05}]}
    panels = {title: keys for title, keys, _ in training_panels(logs)}
    assert panels["validation accuracy (%)"] == ["val_clean_acc", "val_pgd20_acc"]
    assert panels["validation vulnerability"] == ["val_vulnerability"]


def test_autoattack_column_beside_pgd_on_one_subset_and_reused_by_the_audit(tmp_path: Path) -> None:
    pytest.importorskip("pyautoattack")
    from anpvs.jobs.audit import audit

    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(TINY.replace("  at: {label: AT, overrides: {train.epochs: 2}}\n", "")
                        + "autoattack: {test_limit: 12, seeds: [0]}\n")
    out = tmp_path / "out"
    rp.reproduce(protocol=protocol, seeds=1, out=out, device="cpu", figures=False, progress=False)
    data = json.loads((out / "table.json").read_text())
    keys = [c["key"] for c in data["columns"]]
    assert keys[-2:] == ["autoattack_acc", "aa_pgd_acc"]
    assert "AutoAttack acc, 12 images (%)" in (out / "table.md").read_text()
    assert "one seeded, class-stratified subset of 12 test images" in data["caption"]
    rec_path = out / "runs/standard/seed0/eval_autoattack.json"
    rec = json.loads(rec_path.read_text())
    assert rec["metrics"]["n"] == 12 and rec["audit"] == {"test_limit": 12}
    row = data["rows"][0]["metrics"]
    assert row["autoattack_acc"]["values"] == [rec["metrics"]["autoattack_acc"]]
    assert row["aa_pgd_acc"]["values"] == [rec["metrics"]["pgd_acc"]]
    assert row["autoattack_acc"]["mean"] <= row["aa_pgd_acc"]["mean"]
    # a rerun and the audit at the same subset size reuse the record instead of attacking again
    before = rec_path.stat().st_mtime_ns
    rp.reproduce(protocol=protocol, seeds=1, out=out, device="cpu", figures=False, progress=False)
    audit(out, test_limit=12, aa_limit=12, device="cpu", progress=False, seeds=[0])
    assert rec_path.stat().st_mtime_ns == before


@pytest.mark.parametrize("block, message", [
    ("{test_limit: 0}", "autoattack.test_limit must be an integer >= 1"),
    ("{test_limit: 10, seeds: []}", "autoattack.seeds must be a non-empty list"),
    ("{test_limit: 10, subset: 3}", "autoattack: unknown key"),
])
def test_autoattack_block_errors(tmp_path: Path, block: str, message: str) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(f"table: mnist\nsource: {{seed: 1}}\nrows: {{at: {{}}}}\nautoattack: {block}\n")
    with pytest.raises(rp.ProtocolError, match=message):
        rp.load_protocol(p)


def test_full_mnist_protocol_is_the_papers_data_and_training_attack(tmp_path: Path) -> None:
    proto = rp.load_protocol(rp.protocol_path("mnist", "full"))
    assert proto["scale"] == "full" and proto["autoattack"] == {"test_limit": 1000, "seeds": [0]}
    assert [k for k in proto["rows"] if proto["rows"][k]["aa_sampled"]] == ["at_bnn"]
    jobs, shown, _ = rp.plan(proto, seeds=[0, 1], out=tmp_path, device="cpu", data_dir="/data/mnist")
    assert shown == ["standard", "bp", "at", "at_bnn", "pretrained_at", "admm", "trades", "anp_vs", "at_vs", "anp",
                     "anp_vs_sum"]
    by_name = {j.name: j.cfg for j in jobs}
    # the extra row differs from ANP-VS only in the form of V
    assert by_name["anp_vs_sum/seed0"].method.name == "anp_vs"
    assert by_name["anp_vs_sum/seed0"].method.vs_reduction == "sum"
    assert by_name["anp_vs/seed0"].method.vs_reduction == "mean"
    assert by_name["anp_vs_sum/seed1"].method.vs_weight == by_name["anp_vs/seed1"].method.vs_weight
    for job in jobs:
        c = job.cfg
        # TRADES starts its attack next to x: 40 steps of 0.01 (its official MNIST recipe) reach eps 0.3
        steps = 40 if job.name.startswith("trades/") else 20
        assert (c.attack.steps, c.attack.step_size, c.attack.eps) == (steps, 0.01, 0.3), job.name
        assert (c.eval.steps, c.eval.step_size) == (40, 0.01) and c.train.lr_milestones == []
        if not job.name.startswith("pretrain."):
            assert c.data.name == "mnist" and c.data.dir == "/data/mnist", job.name
            assert c.data.train_limit is None and c.data.test_limit is None and c.data.val_size == 0, job.name
    assert {j.name: j.cfg.data.name for j in jobs}["pretrain.fashion_at"] == "fashion_mnist"


def test_the_manifest_keeps_the_runs_of_earlier_calls_so_the_audit_sees_every_model(tmp_path: Path) -> None:
    from anpvs.jobs.audit import _models

    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(TINY)
    out = tmp_path / "out"
    kw = {"protocol": protocol, "seeds": 1, "out": out, "device": "cpu", "figures": False, "progress": False}
    rp.reproduce(rows=["standard"], **kw)
    rp.reproduce(rows=["at"], **kw)  # a second call with other rows adds to the folder
    runs = json.loads((out / "reproduce.json").read_text())["runs"]
    assert runs == {"source": "runs/source", "standard/seed0": "runs/standard/seed0", "at/seed0": "runs/at/seed0"}
    assert [name for name, _ in _models(out, seeds=[0])] == ["source", "standard/seed0", "at/seed0"]
    shutil.rmtree(out / "runs/standard/seed0")  # a run deleted by hand leaves the manifest with the next call
    rp.reproduce(rows=["at"], **kw)
    assert set(json.loads((out / "reproduce.json").read_text())["runs"]) == {"source", "at/seed0"}


def test_tables_only_writes_the_finished_rows_and_trains_nothing(tmp_path: Path, monkeypatch) -> None:
    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(TINY)
    out = tmp_path / "out"
    with pytest.raises(rp.ProtocolError, match="holds no reproduction yet"):
        rp.reproduce(protocol=protocol, seeds=1, out=out, device="cpu", progress=False, train=False)
    # a reproduction cut after the Standard row: the AT row has no checkpoint yet
    rp.reproduce(protocol=protocol, seeds=1, out=out, rows=["standard"], device="cpu", figures=False, progress=False)
    full = _table(out)
    manifest = (out / "reproduce.json").read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("--tables-only must not train or evaluate")

    monkeypatch.setattr(rp_run, "fit", no_training)
    monkeypatch.setattr(rp_run, "evaluate_checkpoint", no_training)
    summary = rp.reproduce(protocol=protocol, seeds=1, out=out, device="cpu", progress=False, train=False)
    table = _table(out)
    assert table["Standard"] == full["Standard"]  # the finished row, from its records
    assert table["AT"]["clean_acc"]["n"] == 0
    assert "AT: seed(s) 0 missing (not trained yet)." in summary["markdown"]
    assert (out / "reproduce.json").read_bytes() == manifest  # the reproduction's manifest is left alone


def test_the_table_record_carries_the_autoattack_records_warnings() -> None:
    # AutoAttack's own checks live in the AutoAttack record; the table's footnotes read the merged record
    rec = {"metrics": {"n": 10, "clean_acc": 90.0, "pgd_acc": 50.0}, "warnings": ["pgd: a check"]}
    aa = {"metrics": {"n": 4, "pgd_acc": 50.0, "autoattack_acc": 25.0},
          "warnings": ["pgd: a check", "autoattack: AutoAttack's check: batch 0: Square Attack has decreased ..."]}
    merged = rp_run._with_autoattack(rec, aa)
    assert merged["warnings"] == aa["warnings"] and merged["metrics"]["autoattack_acc"] == 25.0
    assert rec["warnings"] == ["pgd: a check"]  # the table's own record is left as it was


def test_a_moved_reproduction_keeps_its_evaluations_until_its_source_is_retrained(tmp_path: Path, monkeypatch) -> None:
    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(TINY)
    out = tmp_path / "out"
    rp.reproduce(protocol=protocol, seeds=1, out=out, rows=["standard"], device="cpu", figures=False, progress=False)
    full = _table(out)
    moved = tmp_path / "elsewhere" / "out"
    moved.parent.mkdir()
    shutil.move(out, moved)  # records name the old absolute paths; the layout inside the folder is the same

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a moved folder must not be evaluated again")

    monkeypatch.setattr(rp_run, "evaluate_checkpoint", no_evaluation)
    rp.reproduce(protocol=protocol, seeds=1, out=moved, rows=["standard"], device="cpu", figures=False, progress=False)
    assert _table(moved)["Standard"] == full["Standard"]
    # a source retrained after the record was written makes its black-box numbers stale
    src = moved / "runs/source/checkpoint.pt"
    later = (moved / "runs/standard/seed0/eval_bb.json").stat().st_mtime_ns + 10**9
    os.utime(src, ns=(later, later))
    summary = rp.reproduce(protocol=protocol, seeds=1, out=moved, device="cpu", progress=False, train=False)
    assert "Standard: seed(s) 0 missing (its black-box source is not finished)." in summary["markdown"]
    assert "source: not evaluated yet." in summary["markdown"]


def test_tables_only_with_a_finished_pretraining_and_its_row_not_evaluated(tmp_path: Path) -> None:
    # the pre-training has no evaluation record; it must not stand in for a row's record in the caption
    protocol = tmp_path / "tiny.yaml"
    pretrain = ("pretrain:\n  base: {seed: 7, method: standard, overrides: {train.epochs: 1}}\n"
                "rows:\n  pre: {label: Pre, method: standard, init: pretrain.base, overrides: {train.epochs: 1}}\n")
    protocol.write_text(TINY.replace("rows:\n", pretrain))
    out = tmp_path / "out"
    rp.reproduce(protocol=protocol, seeds=1, out=out, rows=["pre"], device="cpu", figures=False, progress=False)
    (out / "runs/pre/seed0/eval_bb.json").unlink()
    summary = rp.reproduce(protocol=protocol, seeds=1, out=out, device="cpu", progress=False, train=False)
    assert "Pre: seed(s) 0 missing (not evaluated yet)." in summary["markdown"]
    assert "Standard: seed(s) 0 missing (not trained yet)." in summary["markdown"]


# --------------------------------------------------------------------------------------------------------
# --tables-only and a row evaluated a second time with sampled weights (sampled_eval)

SAMPLED_ROW = "  at_bnn: {label: AT BNN, sampled_eval: true, overrides: {train.epochs: 1}}\n"


@pytest.fixture(scope="module")
def _sampled_repro(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny reproduction of one AT BNN row with ``sampled_eval`` (1 epoch, 32 test images): its protocol and
    its folder, trained and evaluated once for the tests below, which copy it."""
    tmp = tmp_path_factory.mktemp("sampled")
    protocol = tmp / "tiny.yaml"
    protocol.write_text(TINY.replace("rows:\n", "rows:\n" + SAMPLED_ROW))
    out = tmp / "out"
    rp.reproduce(protocol=protocol, seeds=1, out=out, rows=["at_bnn"], device="cpu", figures=False, progress=False)
    return protocol, out


def _tables_only_copy(sampled_repro: tuple[Path, Path], tmp_path: Path, monkeypatch) -> tuple[Path, Path, dict]:
    protocol, trained = sampled_repro
    out = tmp_path / "out"
    shutil.copytree(trained, out)  # with the files' times: the records stay current for their checkpoints

    def no_training(*args, **kwargs):
        raise AssertionError("--tables-only must not train or evaluate")

    monkeypatch.setattr(rp_run, "fit", no_training)
    monkeypatch.setattr(rp_run, "evaluate_checkpoint", no_training)
    for name in ("table.md", "table.csv", "table.json"):
        (out / name).unlink()
    return protocol, out, {"protocol": protocol, "seeds": 1, "out": out, "rows": ["at_bnn"], "device": "cpu",
                           "progress": False, "train": False}


def test_tables_only_keeps_the_sampled_weights_row_of_its_record(_sampled_repro, tmp_path: Path, monkeypatch) -> None:
    _, trained = _sampled_repro
    assert (trained / "runs/at_bnn/seed0/eval_bb_sampled.json").is_file()
    assert "AT BNN (sampled weights, EOT)" in _table(trained)
    _, out, kw = _tables_only_copy(_sampled_repro, tmp_path, monkeypatch)
    summary = rp.reproduce(**kw)
    assert summary["failed"] == {}
    for name in ("table.md", "table.csv", "table.json"):  # the training run's tables, byte for byte
        assert (out / name).read_bytes() == (trained / name).read_bytes(), name

    # without the checkpoints (a results folder keeps none) the records alone give the same tables
    for ckpt in out.rglob("checkpoint.pt"):
        ckpt.unlink()
    rp.reproduce(**kw)
    for name in ("table.md", "table.csv", "table.json"):
        assert (out / name).read_bytes() == (trained / name).read_bytes(), name


def test_tables_only_footnotes_a_sampled_weights_record_missing_or_stale(_sampled_repro, tmp_path: Path,
                                                                        monkeypatch) -> None:
    _, trained = _sampled_repro
    _, out, kw = _tables_only_copy(_sampled_repro, tmp_path, monkeypatch)
    record = out / "runs/at_bnn/seed0/eval_bb_sampled.json"
    note = "AT BNN (sampled weights, EOT): seed(s) 0 missing (not evaluated yet)."
    made = record.stat().st_mtime_ns

    rec = json.loads(record.read_text())
    record.write_text(json.dumps({**rec, "attack": {**rec["attack"], "sampled_weights": False}}))  # another attack
    os.utime(record, ns=(made, made))
    summary = rp.reproduce(**kw)
    assert summary["failed"] == {"at_bnn (sampled weights, EOT)/seed0": "not evaluated yet"}
    assert note in summary["markdown"]
    assert set(_table(out)) == {"AT BNN"} and _table(out)["AT BNN"] == _table(trained)["AT BNN"]

    record.write_text(json.dumps(rec))  # the record again, but older than its (retrained) checkpoint
    os.utime(record, ns=(made, made))
    ckpt = out / "runs/at_bnn/seed0/checkpoint.pt"
    main_rec = out / "runs/at_bnn/seed0/eval_bb.json"
    later = made + 10**9
    os.utime(ckpt, ns=(later, later))
    os.utime(main_rec, ns=(later + 1, later + 1))  # its main record made after it
    assert note in rp.reproduce(**kw)["markdown"]

    record.unlink()  # deleted
    summary = rp.reproduce(**kw)
    assert note in summary["markdown"] and set(_table(out)) == {"AT BNN"}
    for ckpt in out.rglob("checkpoint.pt"):  # the same without checkpoints
        ckpt.unlink()
    summary = rp.reproduce(**kw)
    assert note in summary["markdown"] and set(_table(out)) == {"AT BNN"}


def test_tables_only_reads_each_checkpoint_once(_sampled_repro, tmp_path: Path, monkeypatch) -> None:
    from collections import Counter

    _, trained = _sampled_repro
    _, out, kw = _tables_only_copy(_sampled_repro, tmp_path, monkeypatch)
    reads: Counter[str] = Counter()
    real_read = rp_run.read_checkpoint

    def counting_read(path, *args, **kwargs):
        reads[str(path)] += 1
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(rp_run, "read_checkpoint", counting_read)
    rp.reproduce(**kw)
    assert (out / "table.md").read_bytes() == (trained / "table.md").read_bytes()
    assert reads == Counter({str(out / f"runs/{run}/checkpoint.pt"): 1 for run in ("source", "at_bnn/seed0")})
    # an unreadable checkpoint is tried once too, and footnoted as before
    (out / "runs/at_bnn/seed0/checkpoint.pt").write_bytes(b"not a checkpoint")
    reads.clear()
    summary = rp.reproduce(**kw)
    assert summary["failed"] == {"at_bnn/seed0": "its checkpoint cannot be read"}
    assert max(reads.values()) == 1 and len(reads) == 2
