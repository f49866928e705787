"""``anpvs compact``: compacted checkpoints evaluate like their masked source; TorchScript / ONNX exports;
wall-clock latency in the evaluation records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from anpvs.evaluation.evaluate import efficiency
from anpvs.evaluation.tables import markdown_table
from anpvs.jobs.compact import EXPORT_ATOL, export_torchscript, reference_images
from anpvs.metrics.latency import median_latency
from anpvs.metrics.vulnerability import vulnerability
from anpvs.models import create_model
from anpvs.models.checkpoint import atomic_save, load_model, make_checkpoint, sha256_file
from anpvs.models.compact import compact, deployable, is_compact, max_pool2x2

sys.path.insert(0, str(Path(__file__).parent))
from _toys import run_cli  # noqa: E402
from test_compact import _pruned_lenet, _pruned_vgg  # noqa: E402

pytestmark = pytest.mark.usefixtures("fake_git")
torch.set_num_threads(1)


def assert_one_line_error(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anpvs: error: ") and "Traceback" not in err, err


# --------------------------------------------------------------------------- latent maps, pooling


@pytest.mark.parametrize("build,shape", [(lambda: _pruned_lenet()[0], (1, 28, 28)), (_pruned_vgg, (3, 32, 32))])
def test_latent_maps_give_the_masked_latents_and_vulnerability(build, shape) -> None:
    model = build()
    small = compact(model, latents=True)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, *shape, generator=gen)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        logits, latents = model.forward_intermediates(x)
        logits_c, latents_c = small.forward_intermediates(x)
        adv = model.forward_intermediates(x_adv)[1]
        adv_c = small.forward_intermediates(x_adv)[1]
    torch.testing.assert_close(logits_c, logits, rtol=1e-5, atol=1e-5)
    assert len(latents_c) == len(latents) == len(small.latent_names())
    for z_c, z in zip(latents_c, latents, strict=True):
        assert z_c.shape == z.shape
        torch.testing.assert_close(z_c, z, rtol=1e-5, atol=1e-5)
    v, per_layer = vulnerability(latents, adv)
    v_c, per_layer_c = vulnerability(latents_c, adv_c)
    assert float(v) > 0
    torch.testing.assert_close(torch.stack(per_layer_c), torch.stack(per_layer), rtol=1e-5, atol=1e-6)
    # the probes cost parameters but not time: the deployable network has none of them, same logits
    deploy = deployable(small)
    assert deploy.latent_maps is None
    assert sum(p.numel() for p in deploy.parameters()) < sum(p.numel() for p in small.parameters())
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), small(x), rtol=0, atol=0)


def test_strided_max_pool_equals_max_pool2d() -> None:
    gen = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 24, 24), (1, 2, 7, 9), (3, 1, 2, 2), (2, 4, 3, 5)):
        x = torch.randn(shape, generator=gen)
        assert torch.equal(max_pool2x2(x), F.max_pool2d(x, 2)), shape


# --------------------------------------------------------------------------- latency


def test_median_latency_times_every_model_at_every_batch_size() -> None:
    models = {"a": nn.Linear(8, 4).eval(), "b": nn.Sequential(nn.Linear(8, 64), nn.Linear(64, 4)).eval()}
    ms = median_latency(models, (8,), batch_sizes=(1, 3), budget_s=0.0, min_repeats=2, max_repeats=2)
    assert set(ms) == {"a", "b"} and all(set(v) == {"b1", "b3"} for v in ms.values())
    assert all(t > 0 for v in ms.values() for t in v.values())
    with pytest.raises(ValueError, match="min_repeats"):
        median_latency(models, (8,), min_repeats=0)


def test_efficiency_latency_fields_and_switch() -> None:
    model, _ = _pruned_lenet()
    off = efficiency(model, latency=False)
    assert "latency_ms" not in off and "wallclock_speedup_b256" not in off
    on = efficiency(model, latency_budget_s=0.0)
    assert {k: v for k, v in on.items() if k in off} == off
    ms = on["latency_ms"]
    assert set(ms) == {"masked", "compact"} and all(set(v) == {"b1", "b256"} for v in ms.values())
    for b in ("b1", "b256"):
        assert on[f"wallclock_speedup_{b}"] == pytest.approx(ms["masked"][b] / ms["compact"][b], rel=1e-2)
    assert on["latency_device"].startswith("cpu (")
    assert on["counted_flops_speedup"] > 1.0 and "measured_speedup" not in on


def test_table_measured_speed_up_column_next_to_flops() -> None:
    old = {"clean_acc": 99.0, "flops_speedup": 3.0}  # a record written before the latency fields
    new = {"clean_acc": 98.0, "flops_speedup": 3.0, "wallclock_speedup_b256": 2.5}
    md = markdown_table({"Old": [old], "New": [new]}).splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    i = header.index("FLOPs (x)")
    assert header[i + 1] == "Measured speed-up (x)"
    old_cells = [c.strip() for c in md[2].strip("|").split("|")]
    new_cells = [c.strip() for c in md[3].strip("|").split("|")]
    assert old_cells[i + 1] == "-" and new_cells[i + 1] == "2.50"


# --------------------------------------------------------------------------- compacted checkpoints


@pytest.fixture
def pruned_checkpoint(tiny_config, tmp_path: Path) -> Path:
    """A LeNet5-Caffe-BBD checkpoint with trained weights (a short Standard run) and hand-pruned masks:
    whole conv1 / conv2 channels, a conv2 channel whose positions mask3 all prunes, dense3 units."""
    from anpvs.training.loop import fit

    cfg = tiny_config(method__name="standard", train__epochs=6, data__train_limit=256)
    std = load_model(fit(cfg, progress=False)["checkpoint"])
    model = create_model("lenet5_caffe_bbd")
    model.load_state_dict(std[0].state_dict(), strict=False)
    with torch.no_grad():
        for mask, pruned in ((model.mask1, [0, 3, 7, 11]), (model.mask2, list(range(0, 50, 3))),
                             (model.mask3, list(range(16, 32)) + list(range(100, 400, 3))),
                             (model.mask4, list(range(0, 500, 2)))):
            mask.a_uc.fill_(8.0)
            mask.a_uc[torch.tensor(pruned)] = -10.0
    config = cfg.to_dict()
    config["method"]["name"] = "anp_vs"
    path = tmp_path / "anp" / "checkpoint.pt"
    atomic_save(make_checkpoint(model, config=config, epoch=1, data=std[1]["data"]), path)
    return path


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())["metrics"]


def test_compacted_checkpoint_evaluates_like_its_masked_source(pruned_checkpoint: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["compact", str(pruned_checkpoint)]) == 0
    out = capsys.readouterr().out
    small = pruned_checkpoint.with_name("checkpoint.compact.pt")
    assert small.is_file() and str(small) in out
    ckpt = torch.load(small, weights_only=True)
    assert ckpt["format"] == "anpvs-checkpoint" and ckpt["model_name"] == "lenet5_caffe_compact"
    info = ckpt["compact"]
    assert info["source_sha256"] == sha256_file(pruned_checkpoint) and info["latent_maps"]
    assert info["source_model_name"] == "lenet5_caffe_bbd" and info["source_active_units"] == [16, 33, 684, 250]
    assert info["widths"]["conv1"] == 16 and info["widths"]["dense3"] == 250
    assert info["widths"]["conv2"] == 32  # channel 1 (positions 16..31) is dead: removed
    assert ckpt["config"]["method"]["name"] == "anp_vs" and "data" in ckpt
    model, _ = load_model(small)
    assert is_compact(model) and model.model_name == "lenet5_caffe_compact"

    common = ["--steps", "5", "--seed", "3", "--device", "cpu", "--quiet", "--no-latency"]
    runs = {"masked": (pruned_checkpoint, []), "compact": (small, []),
            "bb_masked": (pruned_checkpoint, ["--attack-source", str(pruned_checkpoint)]),
            "bb_compact": (pruned_checkpoint, ["--attack-source", str(small)])}
    for name, (ckpt_path, extra) in runs.items():
        assert run_cli(["eval", str(ckpt_path), *common, *extra, "--out", str(tmp_path / f"{name}.json")]) == 0
    capsys.readouterr()
    m, c = _metrics(tmp_path / "masked.json"), _metrics(tmp_path / "compact.json")
    assert m["clean_acc"] > 20 and m["pgd_vulnerability"] > 0  # a trained model, a real attack
    assert (c["n"], c["clean_acc"], c["pgd_acc"]) == (m["n"], m["clean_acc"], m["pgd_acc"])
    assert c["pgd_vulnerability"] == pytest.approx(m["pgd_vulnerability"], abs=2e-5)
    assert c["pgd_vulnerability_per_layer"] == pytest.approx(m["pgd_vulnerability_per_layer"], abs=2e-5)
    for key in ("active_units", "unit_sparsity", "flops_speedup", "memory_pct", "compact_params", "compact_flops",
                "dense_flops", "counted_flops_speedup"):
        assert c[key] == m[key], key
    assert c["params"] == c["compact_params"] < m["params"]
    bm, bc = _metrics(tmp_path / "bb_masked.json"), _metrics(tmp_path / "bb_compact.json")
    assert bc["bb_pgd_acc"] == bm["bb_pgd_acc"]
    assert bc["bb_pgd_vulnerability"] == pytest.approx(bm["bb_pgd_vulnerability"], abs=2e-5)

    # with latency (the default): the printout and the record carry the measured cost
    # (written beside the compacted checkpoint as eval_compact.json: the source's eval.json is left alone)
    (small.parent / "eval.json").write_text("{}")
    assert run_cli(["eval", str(small), "--steps", "1", "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "latency masked -> compacted" in printed and "counted (FlopCounterMode)" in printed
    assert (small.parent / "eval.json").read_text() == "{}"
    lat = _metrics(small.parent / "eval_compact.json")
    assert lat["latency_ms"]["compact"]["b256"] > 0 and lat["wallclock_speedup_b256"] > 0

    assert run_cli(["check", str(small), "--test-limit", "32", "--steps", "2", "--device", "cpu", "--quiet",
                    "--eps-sweep", "0,0.3,1.0"]) == 0
    assert "eps" in capsys.readouterr().out and (small.parent / "check_compact.json").is_file()
    assert not (small.parent / "check.json").exists()


def test_compact_rejects_bad_input(pruned_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["compact", str(pruned_checkpoint), "--out", str(pruned_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "overwrite the input" in err
    assert run_cli(["compact", str(tmp_path / "missing.pt")]) == 1
    assert_one_line_error(capsys.readouterr().err)
    small = tmp_path / "small.pt"
    assert run_cli(["compact", str(pruned_checkpoint), "--out", str(small)]) == 0
    capsys.readouterr()
    assert run_cli(["compact", str(small)]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "already a compacted checkpoint" in err


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_takes_images_and_returns_the_logits(pruned_checkpoint: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["compact", str(pruned_checkpoint), "--export", "torchscript"]) == 0
    assert "max |logit difference|" in capsys.readouterr().out
    path = pruned_checkpoint.with_name("checkpoint.compact.ts")
    scripted = torch.jit.load(str(path))
    model, _ = load_model(pruned_checkpoint)
    x = reference_images((1, 28, 28), n=7)  # real digits, an odd batch size (the batch is not fixed)
    assert x.shape == (7, 1, 28, 28) and 0 <= float(x.min()) < float(x.max()) <= 1
    with torch.no_grad():
        diff = (scripted(x) - model(x)).abs().max()
    assert float(diff) <= EXPORT_ATOL
    # a compacted checkpoint exports too
    assert run_cli(["compact", str(pruned_checkpoint)]) == 0
    assert run_cli(["compact", str(pruned_checkpoint.with_name("checkpoint.compact.pt")), "--export", "torchscript",
                    "--out", str(path.with_name("again.ts"))]) == 0


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_of_vgg_keeps_normalization_inside(tmp_path: Path) -> None:
    net = deployable(compact(_pruned_vgg(), latents=True))
    x = reference_images((3, 32, 32), n=4)
    assert export_torchscript(net, x, tmp_path / "vgg.ts") <= EXPORT_ATOL
    loaded = torch.jit.load(str(tmp_path / "vgg.ts"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=EXPORT_ATOL)


def test_onnx_export_agrees_with_onnxruntime(pruned_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    assert run_cli(["compact", str(pruned_checkpoint), "--export", "onnx"]) == 0
    assert "max |logit difference|" in capsys.readouterr().out
    path = pruned_checkpoint.with_name("checkpoint.compact.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model, _ = load_model(pruned_checkpoint)
    x = reference_images((1, 28, 28), n=5)
    out = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    with torch.no_grad():
        assert float((out - model(x)).abs().max()) <= EXPORT_ATOL


def test_onnx_export_without_onnx_names_the_extra(pruned_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert run_cli(["compact", str(pruned_checkpoint), "--export", "onnx"]) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert "pip install 'anpvs[onnx]'" in err
    assert not pruned_checkpoint.with_name("checkpoint.compact.onnx").exists()


def test_eval_latency_false_in_the_config_skips_the_timing(pruned_checkpoint: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = torch.load(pruned_checkpoint, weights_only=True)
    ckpt["config"]["eval"]["latency"] = False
    quiet = tmp_path / "quiet.pt"
    atomic_save(ckpt, quiet)
    assert run_cli(["eval", str(quiet), "--steps", "1", "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    m = _metrics(tmp_path / "eval.json")
    assert "latency_ms" not in m and "wallclock_speedup_b256" not in m and "latency masked" not in printed
    assert m["counted_flops_speedup"] > 1.0 and "compacted: params" in printed
