"""ResNet-18 (CIFAR) with Beta-Bernoulli masks on its blocks' hidden channels: compaction reproduces the masked
network (logits and input gradients), exports, counts its FLOPs, and a short ANP-VS run on CIFAR-shaped data
prunes units, compacts and evaluates through the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from anpvs.evaluation.evaluate import efficiency
from anpvs.jobs.compact import EXPORT_ATOL, export_torchscript, reference_images
from anpvs.models import create_model
from anpvs.models.checkpoint import load_model
from anpvs.models.compact import compact, compact_from_state_dict, compact_stats, deployable, is_compact
from anpvs.nn.beta_bernoulli import UNIT_OFF, bbd_layers

sys.path.insert(0, str(Path(__file__).parent))
from _toys import run_cli  # noqa: E402
from test_cifar10 import _files, write_archive  # noqa: E402


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own decoded-array cache of the CIFAR-shaped JPEGs."""
    from anpvs.data.formats import cifar_jpeg

    monkeypatch.setenv(cifar_jpeg.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(cifar_jpeg, "_MEMO", {})


def pruned(name: str, **kwargs) -> torch.nn.Module:
    """A masked network with BN statistics from a few batches and hand-pruned hidden channels: every other one,
    and all of block 4's (its placeholder)."""
    torch.manual_seed(0)
    model = create_model(name, **kwargs).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, 32, 32))
    for i, mask in enumerate(bbd_layers(model)):
        off = torch.zeros(mask.num_units, dtype=torch.bool)
        off[::2] = True
        if i == 3:
            off[:] = True
        mask.set_units(off, UNIT_OFF)
    return model.eval()


def check_compacted_network(model: torch.nn.Module, tmp_path: Path) -> None:
    """The compacted network of ``model``: same logits, latents and input gradients (atol 1e-4), fewer units and
    counted FLOPs, a state dict that rebuilds it, and a TorchScript export that reproduces it."""
    small = compact(model, latents=True)
    assert is_compact(small) and list(small.widths().values()) == [m.n_active() or 1 for m in bbd_layers(model)]
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    logits, latents = model.forward_intermediates(x)
    logits_c, latents_c = small.forward_intermediates(x)
    torch.testing.assert_close(logits_c, logits, rtol=0, atol=1e-4)
    for z, zc in zip(latents, latents_c, strict=True):
        torch.testing.assert_close(zc, z, rtol=0, atol=1e-4)
    g = torch.autograd.grad(logits[:, 0].sum(), x)[0]
    g_c = torch.autograd.grad(logits_c[:, 0].sum(), x)[0]
    torch.testing.assert_close(g_c, g, rtol=0, atol=1e-4)
    stats = compact_stats(model)
    assert stats["counted_flops_speedup"] > 1.5
    assert stats["compact_params"] < sum(p.numel() for p in model.parameters())
    rebuilt = compact_from_state_dict(small.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), logits_c, rtol=0, atol=0)
    net = deployable(small)
    images = reference_images((3, 32, 32), n=4)
    assert export_torchscript(net, images, tmp_path / "net.ts") <= EXPORT_ATOL
    eff = efficiency(model, latency=False)
    assert eff["flops_speedup"] == round(stats["counted_flops_speedup"], 3) and 0 < eff["memory_pct"] < 100
    assert eff["unit_sparsity"] > 50


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_resnet18_compacts_to_the_masked_function(tmp_path: Path) -> None:
    check_compacted_network(pruned("resnet18_bbd", width=0.125), tmp_path)


def test_resnet18_unmasked_compacts_to_the_same_size() -> None:
    model = create_model("resnet18", width=0.125).eval()
    stats = compact_stats(model)
    assert stats["counted_flops_speedup"] == 1.0
    assert compact(model).widths() == {f"block{i + 1}": c for i, c in enumerate(model.unit_widths)}


def short_anp_vs_run(model: str, tmp_path: Path, **model_kwargs) -> None:
    """A few ANP-VS steps of ``model`` on CIFAR-shaped JPEGs, then half of every mask forced off: the checkpoint
    prunes units, ``anpvs compact`` writes a compacted checkpoint and a TorchScript file, and ``anpvs eval`` of
    the compacted checkpoint gives the masked source's accuracies."""
    from anpvs.models.checkpoint import atomic_save, make_checkpoint, read_checkpoint
    from anpvs.training.loop import fit
    from anpvs.training.run_config import build_config

    write_archive(tmp_path / "d" / "cifar10_jpeg.tar.gz", _files(n_train=2, n_test=1))
    cfg = build_config({"data.name": "cifar10", "data.dir": str(tmp_path / "d"), "model.name": model,
                        **{f"model.{k}": v for k, v in model_kwargs.items()}, "method.name": "anp_vs",
                        "train.epochs": 1, "data.train_limit": 8, "data.test_limit": 4, "train.batch_size": 4,
                        "attack.steps": 1, "out": str(tmp_path / "run"), "device": "cpu", "eval.latency": False})
    summary = fit(cfg, progress=False)
    masked, ckpt = load_model(summary["checkpoint"])
    assert masked.model_name == f"{model}_bbd" and bbd_layers(masked)
    for mask in bbd_layers(masked):
        mask.set_units(torch.arange(mask.num_units) % 2 == 0, UNIT_OFF)
    source = tmp_path / "pruned" / "checkpoint.pt"
    atomic_save(make_checkpoint(masked, config=ckpt["config"], epoch=1, data=ckpt.get("data")), source)
    assert run_cli(["compact", str(source)]) == 0
    small = source.with_name("checkpoint.compact.pt")
    assert read_checkpoint(small)["model_name"] == f"{masked.arch}_compact"
    net, _ = load_model(small)
    assert is_compact(net) and sum(net.widths().values()) < sum(masked.unit_widths)
    assert run_cli(["compact", str(small), "--export", "torchscript"]) == 0
    for path, out in ((source, "masked.json"), (small, "compact.json")):
        assert run_cli(["eval", str(path), "--device", "cpu", "--quiet", "--steps", "2",
                                "--no-latency", "--out", str(tmp_path / out)]) == 0
    m, c = (json.loads((tmp_path / f).read_text())["metrics"] for f in ("masked.json", "compact.json"))
    assert m["clean_acc"] == c["clean_acc"]
    assert m["unit_sparsity"] == c["unit_sparsity"] >= 50
    assert m["flops_speedup"] == c["flops_speedup"] > 1.5 and m["memory_pct"] == c["memory_pct"] < 70


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_resnet18_anp_vs_run_prunes_compacts_and_evaluates(tmp_path: Path, fake_git: str) -> None:
    del fake_git
    short_anp_vs_run("resnet18", tmp_path, width=0.0625)


def test_l1_prune_scores_the_hidden_channels() -> None:
    from anpvs.methods.l1_prune import l1_keep

    model = create_model("resnet18_bbd", width=0.125)
    keep = l1_keep(model, [2] * 8)
    assert [int(k.sum()) for k in keep] == [2] * 8
    assert [k.numel() for k in keep] == list(model.unit_widths)
