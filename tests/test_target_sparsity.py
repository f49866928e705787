"""Unit targets (docs/target_sparsity.md): the target-sparsity control of BP / ANP / ANP-VS (masks cut by E[pi] and
held) and the L1 filter-pruning baseline (``l1_prune``: fixed 0/1 gates), on tiny runs of a second or two."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import anpvs.training.loop
from anpvs.core.config import ConfigError
from anpvs.jobs.evaluate import evaluate_checkpoint
from anpvs.methods import build_method
from anpvs.methods.l1_prune import l1_keep
from anpvs.models import create_model
from anpvs.models.checkpoint import atomic_save, load_model, make_checkpoint, read_checkpoint
from anpvs.models.compact import compact, compact_widths
from anpvs.models.masks import active_units
from anpvs.nn.beta_bernoulli import UNIT_OFF, UNIT_ON, BetaBernoulliDropout, bbd_layers, kumaraswamy_mean
from anpvs.sparsifiers.budget import UnitBudget, kept_per_layer, top_units_global
from anpvs.training.loop import fit
from anpvs.training.run_config import build_config

pytestmark = pytest.mark.usefixtures("fake_git")

#: 64 bundled digits in 2 batches, PGD-1: the smallest real adversarial run
TINY = {"data.name": "mnist_sample", "data.train_limit": 64, "data.test_limit": 32, "train.batch_size": 32,
        "attack.steps": 1, "device": "cpu", "train.epochs": 2}
WIDTHS = [20, 50, 800, 500]  # LeNet5-Caffe's masks: 1,370 units


def _cfg(out: Path, method: str, **overrides):
    return build_config({**TINY, "method.name": method, "out": str(out), **overrides})


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _sparsity(units: list[int]) -> float:
    return 100.0 * (1 - sum(units) / sum(WIDTHS))


@pytest.fixture
def plain_init(tmp_path: Path) -> Path:
    """A LeNet5-Caffe checkpoint standing in for an AT model (the L1 baseline's init)."""
    torch.manual_seed(0)
    path = tmp_path / "at" / "checkpoint.pt"
    path.parent.mkdir()
    atomic_save(make_checkpoint(create_model("lenet5_caffe")), path)
    return path


# ----------------------------------------------------------------------------------------------------------
# The gates and the cross-layer ranking
# ----------------------------------------------------------------------------------------------------------
def test_unit_on_and_off_are_exact_gates() -> None:
    m = BetaBernoulliDropout(3)
    m.set_units(torch.tensor([True, False, False]), UNIT_OFF)
    m.set_units(torch.tensor([False, True, False]), UNIT_ON)
    assert m.expected_pi()[:2].tolist() == [0.0, 1.0]  # test mode: the unit is dropped / passed unscaled
    torch.manual_seed(0)
    z = m.sample_mask(20_000)  # training mode: every relaxed-Bernoulli sample is exactly 0 / 1 too
    assert bool((z[:, 0] == 0).all()) and bool((z[:, 1] == 1).all())


def test_global_ranking_is_one_threshold_that_never_empties_a_layer() -> None:
    scores = [torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0.05, 0.1]), torch.tensor([0.5, 0.5, 0.5])]
    keep = top_units_global(scores, 5)
    # one threshold would keep 0.9 0.8 0.7 0.6 0.5 and empty layer 2: its best unit (0.1) is kept, and the
    # total stays 5, so the threshold rises to 0.7 elsewhere; the 0.5 ties of layer 3 go to the lower index
    assert [k.tolist() for k in keep] == [[True, True, True, False], [False, True], [True, False, False]]
    keep = top_units_global(scores, 6)
    assert [k.tolist() for k in keep] == [[True, True, True, True], [False, True], [True, False, False]]
    with pytest.raises(ValueError, match="at least one"):
        top_units_global(scores, 2)


# ----------------------------------------------------------------------------------------------------------
# The target-sparsity control of the Beta-Bernoulli methods
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "target"), [("anp_vs", 0.84), ("anp", 0.5), ("bp", 0.9)])
def test_target_sparsity_is_hit_held_and_reported(tmp_path: Path, method: str, target: float) -> None:
    # masks learn for 1 epoch, are cut to the target, then held while the weights train a second epoch
    cfg = _cfg(tmp_path / "run", method, **{"method.target_sparsity": target, "method.target_epoch": 1})
    fit(cfg, progress=False)
    run = Path(cfg.out)
    log = _log(run)
    model, _ = load_model(run / "checkpoint.pt")
    units = active_units(model)
    assert abs(_sparsity(units) - 100 * target) <= 2.0  # the bar; in fact within 1/1370 of a unit
    assert min(units) >= 1
    for entry in log:  # the achieved sparsity is logged beside the asked one, after the cut and while held
        assert entry["target_sparsity"] == pytest.approx(100 * target) and entry["budget_cut"] is True
        assert entry["unit_sparsity"] == pytest.approx(_sparsity(units), abs=0.01)
        assert list(entry["active_units"].values()) == units
    if method == "anp_vs":
        rec = evaluate_checkpoint(run / "checkpoint.pt", test_limit=16, steps=1, device="cpu", latency=False)
        assert rec["target_sparsity"] == pytest.approx(100 * target)
        assert rec["metrics"]["unit_sparsity"] == pytest.approx(_sparsity(units), abs=0.01)
        assert json.loads((run / "eval.json").read_text())["metrics"]["active_units"] == units


def test_per_layer_target_units_are_kept_exactly(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "run", "anp_vs", **{"method.target_units": [2, 5, 40, 30], "method.target_epoch": 1})
    fit(cfg, progress=False)
    model, ckpt = load_model(Path(cfg.out) / "checkpoint.pt")
    assert active_units(model) == [2, 5, 40, 30]
    assert ckpt["metrics"]["target_units"] == [2, 5, 40, 30]


def test_units_the_kl_had_pruned_are_revived_to_meet_a_lower_target() -> None:
    cfg = build_config({**TINY, "method.name": "anp_vs", "method.target_units": [20, 50, 800, 450]})
    model = create_model("lenet5_caffe_bbd")
    m4 = model.mask4
    with torch.no_grad():
        m4.a_uc[:100] = -10.0  # E[pi] = 4.5e-5: 100 units the KL has pruned, 400 left
        m4.a_uc[100:] += torch.linspace(0, 1, 400)  # distinct E[pi], so the ranking is not a tie
    assert m4.n_active() == 400
    (budget,) = build_method(cfg, 64).sparsifiers(model)
    budget.cut(model)
    assert active_units(model) == [20, 50, 800, 450] and budget.revived == 50
    assert bool((m4.a_uc[:50] == m4.a_init).all())  # the best of the pruned (ties: lower index) restart at init
    assert bool((m4.a_uc[50:100] == UNIT_OFF[0]).all())


def test_cut_masks_are_held_and_a_resumed_run_is_bitwise_the_same(tiny_config, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    small = {"method__name": "anp_vs", "train__epochs": 3, "data__train_limit": 16, "train__batch_size": 8,
             "attack__steps": 1, "method__target_sparsity": 0.75, "method__target_epoch": 1}
    fit(tiny_config(**small, out=str(tmp_path / "a")), progress=False)
    real_save = anpvs.training.loop.atomic_save
    saved: list[dict] = []

    def save_then_interrupt(obj, path):  # run B stops in epoch 2, after the cut, before its checkpoint
        saved.append(obj)
        if len(saved) == 2:
            raise KeyboardInterrupt
        real_save(obj, path)

    monkeypatch.setattr(anpvs.training.loop, "atomic_save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(**small, out=str(tmp_path / "b")), progress=False)
    monkeypatch.setattr(anpvs.training.loop, "atomic_save", real_save)
    fit(tiny_config(**small, out=str(tmp_path / "b")), resume=True, progress=False)

    a, b = read_checkpoint(tmp_path / "a" / "checkpoint.pt"), read_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), f"{k} differs after resume"
    held = a["method_state"]["budget"]["held"]
    for i, (ha, hb) in enumerate(zip(held, b["method_state"]["budget"]["held"], strict=True)):
        assert torch.equal(ha[0], hb[0]) and torch.equal(ha[1], hb[1])
        # the masks of the last epoch are the ones cut after epoch 1: 2 more epochs of steps moved nothing
        assert torch.equal(a["state_dict"][f"mask{i + 1}.a_uc"], ha[0])
        assert torch.equal(saved[0]["state_dict"][f"mask{i + 1}.b_uc"], ha[1])


def test_impossible_targets_are_one_line_config_errors(tmp_path: Path, plain_init: Path) -> None:
    for bad in ({"method.target_sparsity": 1.0}, {"method.target_units": [0, 5, 5, 5]},
                {"method.target_sparsity": 0.5, "method.target_units": [1, 1, 1, 1]}, {"method.target_epoch": -1},
                {"method.target_epoch": 2}):  # a cut of nothing
        with pytest.raises(ConfigError, match="method.target"):
            build_config({"method.name": "anp_vs", **bad})
    cases = [
        ("anp_vs", {"method.target_sparsity": 0.5, "method.target_epoch": 3}, "after the last epoch"),
        ("anp_vs", {"method.target_units": [2, 5, 40]}, "does not fit the model's masks"),
        ("anp_vs", {"method.target_sparsity": 0.999}, "fewer than one per mask"),
        ("anp_vs", {"method.target_sparsity": 0.5}, "initial values"),  # nothing learned to rank by
        ("l1_prune", {"method.target_sparsity": 0.5, "method.target_epoch": 1}, "must be 0"),
        ("l1_prune", {"method.target_units_from": str(plain_init)}, "no Beta-Bernoulli masks"),
    ]
    for i, (method, overrides, message) in enumerate(cases):
        out = tmp_path / f"bad{i}"
        with pytest.raises(ConfigError, match=message):
            fit(_cfg(out, method, **overrides), progress=False)
        assert not (out / "checkpoint.pt").exists()  # stopped before any epoch


# ----------------------------------------------------------------------------------------------------------
# The L1 filter-pruning baseline
# ----------------------------------------------------------------------------------------------------------
def test_l1_keeps_the_filters_of_largest_l1_norm_hand_checked() -> None:
    model = create_model("lenet5_caffe_bbd")
    with torch.no_grad():
        for p in (model.conv1.weight, model.conv2.weight, model.dense3.weight):
            p.zero_()
        model.conv1.weight[3] = 1.0  # L1 25
        model.conv1.weight[7] = -2.0  # L1 50: the sign does not matter
        model.conv1.weight[11] = 0.5
        model.conv2.weight[20] = 3.0
        model.conv2.weight[[2, 4, 9]] = 1.0  # a three-way tie for the last two places: lower indices win
        model.dense3.weight[:, 5] = 10.0  # a position of conv2 channel 0, which is pruned: dead, never kept
        model.dense3.weight[:, 321] = 2.0  # positions 1 and 15 of the kept channel 20
        model.dense3.weight[:, 335] = 1.0
        model.dense3.weight[[10, 499], 700] = 5.0  # rows (dense3 units) with the largest incoming L1
    keep = l1_keep(model, [2, 3, 5, 4])
    assert torch.nonzero(keep[0]).flatten().tolist() == [3, 7]
    assert torch.nonzero(keep[1]).flatten().tolist() == [2, 4, 20]
    # mask3: the best position of each kept channel (2: 32 of the tied 32-47, 4: 64, 20: 321), then the best other
    # live ones (335, then 33, lowest of the ties); never 5. Ranked alone, the five would be 32-34, 321 and 335,
    # leaving channel 4 kept but feeding nothing.
    assert torch.nonzero(keep[2]).flatten().tolist() == [32, 33, 64, 321, 335]
    assert torch.nonzero(keep[3]).flatten().tolist() == [0, 1, 10, 499]


def test_l1_leaves_no_kept_channel_feeding_nothing_so_the_compacted_widths_are_the_counts() -> None:
    torch.manual_seed(0)
    model = create_model("lenet5_caffe_bbd").eval()
    with torch.no_grad():  # dense3's inputs from a few channels are far larger: ranked alone, they take every place
        model.dense3.weight.mul_(torch.arange(1, 51).pow(4.0).repeat_interleave(16))
    counts = [6, 37, 169, 130]  # ANP-VS's widths at 75% on full MNIST
    UnitBudget(lambda m: l1_keep(m, counts), switch_on=True).cut(model)
    assert active_units(model) == counts
    net = compact(model)
    assert compact_widths(net) == {"conv1": 6, "conv2": 37, "dense3_in": 169, "dense3": 130}
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)


def test_l1_prune_run_keeps_the_counts_asked_and_compacts_exactly(tmp_path: Path, plain_init: Path) -> None:
    counts = [3, 10, 100, 50]
    cfg = _cfg(tmp_path / "l1", "l1_prune", init=str(plain_init), **{"method.target_units": counts,
                                                                      "train.epochs": 1})
    fit(cfg, progress=False)
    model, _ = load_model(Path(cfg.out) / "checkpoint.pt")
    assert active_units(model) == counts
    init, _ = load_model(plain_init)
    kept = l1_keep(init, counts)  # the criterion applied by hand to the AT weights it started from
    for m, k in zip(bbd_layers(model), kept, strict=True):
        e = kumaraswamy_mean(m.a, m.b).detach()
        assert torch.equal(m.keep_mask(), k)
        assert set(e.unique().tolist()) == {0.0, 1.0}  # fixed 0/1 gates
    net = compact(model)
    assert compact_widths(net) == {"conv1": 3, "conv2": 10, "dense3_in": 100, "dense3": 50}
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)


def test_l1_prune_takes_its_widths_from_an_anp_vs_checkpoint(tmp_path: Path, plain_init: Path) -> None:
    src = _cfg(tmp_path / "anp_vs", "anp_vs", **{"method.target_sparsity": 0.84, "method.target_epoch": 1,
                                                  "train.epochs": 1})
    fit(src, progress=False)
    cfg = _cfg(tmp_path / "l1", "l1_prune", init=str(plain_init),
               **{"method.target_units_from": str(Path(src.out) / "checkpoint.pt"), "train.epochs": 1})
    fit(cfg, progress=False)
    anp_vs, _ = load_model(Path(src.out) / "checkpoint.pt")
    l1, ckpt = load_model(Path(cfg.out) / "checkpoint.pt")
    assert active_units(l1) == active_units(anp_vs)
    assert ckpt["metrics"]["target_units_from"] == str(Path(src.out) / "checkpoint.pt")


def test_l1_prune_with_a_global_sparsity_prunes_every_layer_alike(tmp_path: Path, plain_init: Path) -> None:
    cfg = _cfg(tmp_path / "l1", "l1_prune", init=str(plain_init),
               **{"method.target_sparsity": 0.75, "train.epochs": 1})
    fit(cfg, progress=False)
    model, _ = load_model(Path(cfg.out) / "checkpoint.pt")
    assert active_units(model) == [5, 12, 200, 125]  # round(0.25 n) per layer


def test_l1_gates_on_vgg16_compact_to_the_same_logits() -> None:
    torch.manual_seed(0)
    model = create_model("vgg16_bbd", width=0.125).eval()
    with torch.no_grad():  # BN statistics away from identity, so pruned channels leave constants behind
        for bn in model.bns:
            bn.running_mean.uniform_(-1, 1)
            bn.bias.uniform_(-1, 1)
    counts = kept_per_layer(0.5, [m.num_units for m in bbd_layers(model)])
    UnitBudget(lambda m: l1_keep(m, counts), switch_on=True).cut(model)
    assert active_units(model) == counts
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compact(model)(x), model(x), rtol=1e-5, atol=1e-5)
