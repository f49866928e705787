"""Tests of the one training loop (:func:`anpvs.training.loop.fit`) on 128 tiny images, 4 steps per epoch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

import anpvs.training.loop
from anpvs.core.errors import TrainingError
from anpvs.data import BatchLoader, load_dataset
from anpvs.methods import build_method
from anpvs.models.checkpoint import load_model, read_checkpoint
from anpvs.nn.beta_bernoulli import total_kl
from anpvs.training.loop import build_model, fit
from anpvs.training.run_config import build_config, config_from_dict
from anpvs.training.step import lr_factor, split_parameters

pytestmark = pytest.mark.usefixtures("fake_git")


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture
def step_lrs():
    """The learning rate of every optimizer step taken while the fixture is active, per optimizer class."""
    seen: list[tuple[str, float]] = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append((type(opt).__name__, opt.param_groups[0]["lr"])))
    yield seen
    handle.remove()


def test_fit_writes_config_log_and_checkpoint(tiny_config, step_lrs) -> None:
    cfg = tiny_config(train__epochs=2)  # 128 images / batch 32: 4 steps per epoch, 8 in all
    summary = fit(cfg, progress=False)
    run = Path(cfg.out)
    assert summary["epoch"] == 2 and Path(summary["checkpoint"]) == run / "checkpoint.pt"

    assert config_from_dict(yaml.safe_load((run / "config.yaml").read_text())) == cfg
    log = _log(run)
    assert [r["epoch"] for r in log] == [1, 2]
    for r in log:
        assert {"epoch", "loss", "acc", "lr", "epoch_time_s"} <= set(r)
        assert r["loss"] > 0 and 0 <= r["acc"] <= 100
    assert log[-1] == {"epoch": 2, **summary["metrics"]}

    ckpt = read_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 2
    assert config_from_dict(ckpt["config"]) == cfg
    assert {"optimizers", "schedulers", "rng", "data"} <= set(ckpt)
    assert ckpt["data"]["n_train"] == 128 and ckpt["data"]["input_shape"] == [1, 28, 28]
    model, _ = load_model(run / "checkpoint.pt")
    assert model.model_name == "lenet5_caffe" and not model.training

    # Staircase schedule at 50% and 70% of the 8 steps (docs/reference.md §4): lr x0.1 from step 4, x0.01 from 6.
    lrs = [lr for _, lr in step_lrs]
    assert lrs == pytest.approx([1e-3] * 4 + [1e-4] * 2 + [1e-5] * 2)
    assert log[0]["lr"] == pytest.approx(1e-4)  # the lr in force after epoch 1, past the 50% milestone


def test_training_learns_the_tiny_classes(tiny_config) -> None:
    cfg = tiny_config(train__epochs=2, data__train_limit=None, train__schedule="constant", train__lr=3e-3)
    fit(cfg, progress=False)
    log = _log(Path(cfg.out))
    assert log[-1]["loss"] < log[0]["loss"]
    assert log[-1]["acc"] > 50  # 10 classes: chance is 10%


def test_validation_split_metrics_are_logged(tiny_config) -> None:
    cfg = tiny_config(train__epochs=1, data__train_limit=32, data__val_size=20, attack__steps=2)
    fit(cfg, progress=False)
    (row,) = _log(Path(cfg.out))
    assert 0 <= row["val_pgd2_acc"] <= row["val_clean_acc"] <= 100
    assert row["val_vulnerability"] > 0  # V of the test-mode network on the validation split, every epoch
    assert read_checkpoint(Path(cfg.out) / "checkpoint.pt")["data"]["n_train"] == 32


@pytest.mark.parametrize(("milestones", "total", "expected"), [
    ([0.5, 0.7], 100, {0: 1.0, 49: 1.0, 50: 0.1, 69: 0.1, 70: 0.01, 100: 0.01}),
    ([0.5, 0.8], 10, {4: 1.0, 5: 0.1, 7: 0.1, 8: 0.01}),
    ([], 10, {0: 1.0, 9: 1.0}),
])
def test_staircase_factor(milestones: list[float], total: int, expected: dict[int, float]) -> None:
    factor = lr_factor(build_config({"train.lr_milestones": milestones}), total)
    assert {step: factor(step) for step in expected} == pytest.approx(expected)


def test_cosine_and_constant_factors() -> None:
    cos = lr_factor(build_config({"train.schedule": "cosine"}), 10)
    assert cos(0) == pytest.approx(1.0) and cos(5) == pytest.approx(0.5) and cos(10) == pytest.approx(0.0)
    const = lr_factor(build_config({"train.schedule": "constant"}), 10)
    assert const(0) == const(9) == 1.0


# --------------------------------------------------------------------------------------------------
# Resume: an interrupted run continued with resume=True ends bitwise where an uninterrupted one does
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["standard", "at", "anp_vs"])
def test_resume_equivalence(tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    # 16 images in batches of 8: 2 steps per epoch, enough to carry optimizer, RNG and schedule state over
    small = {"method__name": method, "train__epochs": 3, "data__train_limit": 16, "train__batch_size": 8,
             "attack__steps": 1}
    cfg_a = tiny_config(**small, out=str(tmp_path / "a"))
    cfg_b = tiny_config(**small, out=str(tmp_path / "b"))
    fit(cfg_a, progress=False)

    # Run B is interrupted (Ctrl-C) in epoch 2, just before its checkpoint would be written.
    real_save = anpvs.training.loop.atomic_save
    calls = []

    def save_then_interrupt(obj, path):
        calls.append(obj["epoch"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save(obj, path)

    monkeypatch.setattr(anpvs.training.loop, "atomic_save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg_b, progress=False)
    monkeypatch.setattr(anpvs.training.loop, "atomic_save", real_save)
    assert read_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    assert [r["epoch"] for r in _log(tmp_path / "b")] == [1]

    fit(cfg_b, resume=True, progress=False)

    a = read_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert a["model_name"] == b["model_name"]
    if method == "anp_vs":
        assert a["model_name"] == "lenet5_caffe_bbd" and set(a["optimizers"]) == {"weights", "masks"}
        # both optimizers follow the same staircase (docs/reference.md §4: lr1 = 10 lr2 throughout)
        assert all(r["mask_lr"] == pytest.approx(10 * r["lr"]) for r in _log(tmp_path / "a"))
        assert _log(tmp_path / "a")[-1]["lr"] == pytest.approx(1e-5)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), f"{k} differs after resume"
    for name, opt in a["optimizers"].items():
        for pid, st in opt["state"].items():
            for key, v in st.items():
                assert torch.equal(v, b["optimizers"][name]["state"][pid][key]), f"{name} optimizer {key} differs"
    assert a["schedulers"] == b["schedulers"]
    log_a, log_b = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert [r["epoch"] for r in log_b] == [1, 2, 3]
    for ra, rb in zip(log_a, log_b, strict=True):
        assert ra["loss"] == rb["loss"] and ra["acc"] == rb["acc"]


def test_resume_of_a_finished_run_changes_nothing(tiny_config) -> None:
    cfg = tiny_config(train__epochs=1)
    fit(cfg, progress=False)
    path = Path(cfg.out) / "checkpoint.pt"
    before = path.read_bytes()
    summary = fit(cfg, resume=True, progress=False)
    assert summary["epoch"] == 1
    assert path.read_bytes() == before


def test_resume_with_more_epochs_extends_a_finished_run_exactly(tiny_config, tmp_path: Path) -> None:
    # constant learning rate: nothing depends on the total, so 1 epoch extended to 2 equals 2 from the start
    small = {"method__name": "anp_vs", "data__train_limit": 16, "train__batch_size": 8, "attack__steps": 1,
             "train__lr_milestones": []}
    straight = tiny_config(**small, train__epochs=2, out=str(tmp_path / "straight"))
    fit(straight, progress=False)
    fit(tiny_config(**small, train__epochs=1, out=str(tmp_path / "ext")), progress=False)
    summary = fit(tiny_config(**small, train__epochs=2, out=str(tmp_path / "ext")), resume=True, progress=False)
    assert summary["epoch"] == 2
    a, b = (read_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("straight", "ext"))
    assert b["config"]["train"]["epochs"] == 2
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), f"{k} differs after the extension"
    assert [r["loss"] for r in _log(tmp_path / "ext")] == [r["loss"] for r in _log(tmp_path / "straight")]
    # a schedule that depends on the total cannot be extended: one line, the run left as it was
    staircase = tiny_config(train__epochs=1, out=str(tmp_path / "stair"))
    fit(staircase, progress=False)
    before = (tmp_path / "stair" / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainingError, match="cannot be extended to 1 -> 3 epochs: its learning-rate schedule"):
        fit(tiny_config(train__epochs=3, out=str(tmp_path / "stair")), resume=True, progress=False)
    assert (tmp_path / "stair" / "checkpoint.pt").read_bytes() == before



def test_a_copied_run_folder_extends_where_it_is_now(tiny_config, tmp_path: Path) -> None:
    # a run copied to another folder (someone else's, or a table's run reused by another experiment) resumes
    # and extends there: nothing is written to the folder it was trained in, and its config names the new one
    small = {"method__name": "at", "data__train_limit": 16, "train__batch_size": 8, "attack__steps": 1,
             "train__lr_milestones": []}
    fit(tiny_config(**small, train__epochs=1, out=str(tmp_path / "a")), progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    summary = fit(tiny_config(**small, train__epochs=2, out=str(tmp_path / "b")), resume=True, progress=False)
    assert summary["epoch"] == 2 and len(_log(tmp_path / "b")) == 2
    assert read_checkpoint(tmp_path / "b" / "checkpoint.pt")["config"]["out"] == str(tmp_path / "b")
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["out"] == str(tmp_path / "b")
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before

def test_a_method_that_depends_on_the_epochs_cannot_be_extended(tiny_config, tmp_path: Path) -> None:
    # ADMM's phase is a fraction of train.epochs: extending its run would not equal a longer run from the start
    from anpvs.training.loop import _extended

    kw = {"method__name": "admm", "train__lr_milestones": [], "init": str(tmp_path / "at.pt")}
    saved, asked = tiny_config(**kw, train__epochs=2), tiny_config(**kw, train__epochs=4)
    with pytest.raises(TrainingError, match=r"cannot be extended to 2 -> 4 epochs: its method \(admm\) depends"):
        _extended(saved, asked, tmp_path)
    plain = {**kw, "method__name": "at", "init": None}
    assert _extended(tiny_config(**plain, train__epochs=2), tiny_config(**plain, train__epochs=4), tmp_path) is not None


# --------------------------------------------------------------------------------------------------
# ANP-VS: two optimizers, two losses (docs/decisions.md item 7; docs/reference.md §4)
# --------------------------------------------------------------------------------------------------


def _anp_vs_setup(tiny_config, **overrides):
    cfg = tiny_config(method__name="anp_vs", method__vs_weight=1.0, **overrides)
    data = load_dataset("mnist", cfg.data.dir, train_limit=cfg.data.train_limit)
    method = build_method(cfg, len(data.train))
    model = build_model(cfg, method, data.input_shape, data.num_classes)
    x, y = next(iter(BatchLoader(data.train, 16, shuffle=False)))
    return cfg, method, model.train(), x, y


def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [g if g is not None else torch.zeros_like(p)
            for g, p in zip(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params,
                            strict=True)]


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def test_anp_vs_losses_split_between_masks_and_weights(tiny_config) -> None:
    torch.manual_seed(0)
    cfg, method, model, x, y = _anp_vs_setup(tiny_config)
    masks, decay, no_decay = split_parameters(model)
    weights = decay + no_decay
    assert model.model_name == "lenet5_caffe_bbd" and len(masks) == 8
    assert {id(p) for p in masks}.isdisjoint({id(p) for p in weights})
    assert len(masks) + len(weights) == len(list(model.parameters()))

    out = method.loss(model, x, y)
    assert {"loss", "mask_loss", "logits", "logits_adv", "vulnerability", "kl"} <= set(out)
    ce_clean = F.cross_entropy(out["logits"], y)
    ce_adv = F.cross_entropy(out["logits_adv"], y)
    kl_term = cfg.method.beta * total_kl(model) / method.n_train

    # masks: CE_adv + beta * KL / N, nothing else
    g_mask = _grads(out["mask_loss"], masks)
    assert _flat(g_mask).abs().sum() > 0
    for g, ref in zip(g_mask, _grads(ce_adv + kl_term, masks), strict=True):
        torch.testing.assert_close(g, ref)
    # ... which leaves out terms that do depend on the masks: the clean CE and the VS term
    vs_term = out["loss"] - (ce_clean + 2 * ce_adv) / 3
    assert vs_term.item() == pytest.approx(cfg.method.vs_weight * out["vulnerability"].item(), rel=1e-4)
    assert vs_term.item() > 0
    assert _flat(_grads(ce_clean, masks)).abs().sum() > 0
    assert _flat(_grads(vs_term, masks)).abs().sum() > 0
    assert not torch.allclose(_flat(g_mask), _flat(_grads(out["loss"], masks)))

    # weights: the mixed loss plus lambda * V, with V's first layer included (docs/reference.md §7.2); KL has no
    # weight gradient
    assert _flat(_grads(kl_term, weights)).abs().sum() == 0
    assert model.conv1.weight.grad is None
    g_vs_conv1 = _grads(vs_term, [model.conv1.weight])[0]
    assert g_vs_conv1.abs().sum() > 0


def test_fit_routes_mask_loss_to_masks_and_loss_to_weights(tiny_config, monkeypatch: pytest.MonkeyPatch) -> None:
    """One step of ``fit``: the gradients the two Adam optimizers see are exactly those of the two losses."""
    expected: dict[str, torch.Tensor] = {}  # parameter name -> gradient the optimizer should see
    mask_grad_of_loss: dict[str, torch.Tensor] = {}
    initial: dict[str, torch.Tensor] = {}
    ids: dict[int, str] = {}
    real_build = anpvs.training.loop.build_method

    def spying_build(cfg, n_train):
        method = real_build(cfg, n_train)
        real_loss = method.loss

        def loss(model, x, y):
            ids.update({id(p): n for n, p in model.named_parameters()})
            initial.update({n: p.detach().clone() for n, p in model.named_parameters()})
            out = real_loss(model, x, y)
            masks, decay, no_decay = split_parameters(model)
            for p, g in zip(masks, _grads(out["mask_loss"], masks), strict=True):
                expected[ids[id(p)]] = g
            for p, g in zip(masks, _grads(out["loss"], masks), strict=True):
                mask_grad_of_loss[ids[id(p)]] = g
            for p, g in zip(decay + no_decay, _grads(out["loss"], decay + no_decay), strict=True):
                expected[ids[id(p)]] = g
            return out

        method.loss = loss
        return method

    seen: dict[str, torch.Tensor] = {}

    def capture(opt, args, kwargs):
        for group in opt.param_groups:
            for p in group["params"]:
                seen[ids[id(p)]] = p.grad.clone()

    monkeypatch.setattr(anpvs.training.loop, "build_method", spying_build)
    handle = register_optimizer_step_pre_hook(capture)
    try:
        torch.manual_seed(0)
        # 32 images in one batch: one step of each optimizer
        cfg = tiny_config(method__name="anp_vs", method__vs_weight=1.0, train__epochs=1, data__train_limit=32,
                          train__schedule="constant")
        fit(cfg, progress=False)
    finally:
        handle.remove()

    assert len(mask_grad_of_loss) == 8
    assert seen.keys() == expected.keys() == set(initial)
    for name, g in expected.items():
        torch.testing.assert_close(seen[name], g, rtol=1e-6, atol=1e-9, msg=name)
    # the routing matters: out["loss"] would have given the masks other gradients
    assert any(not torch.allclose(expected[n], g) for n, g in mask_grad_of_loss.items())

    # Adam's first step moves each mask parameter by lr * g / (|g| + eps), g = the gradient of mask_loss.
    state = read_checkpoint(Path(cfg.out) / "checkpoint.pt")["state_dict"]
    for name in mask_grad_of_loss:
        g = expected[name]
        torch.testing.assert_close(state[name], initial[name] - cfg.train.mask_lr * g / (g.abs() + 1e-8),
                                   rtol=1e-5, atol=1e-6, msg=name)


# --------------------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["loss", "mask_loss"])
def test_diverging_loss_stops_training_and_keeps_the_last_checkpoint(
        tiny_config, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    method_name = "standard" if key == "loss" else "anp_vs"
    cfg = tiny_config(method__name=method_name, train__epochs=2, data__train_limit=16, train__batch_size=8)
    run = Path(cfg.out)
    real_build = anpvs.training.loop.build_method
    saved: list[bytes] = []
    real_save = anpvs.training.loop.atomic_save

    def save_and_remember(obj, path):
        real_save(obj, path)
        saved.append(Path(path).read_bytes())

    def nan_in_epoch_2(cfg, n_train):
        method = real_build(cfg, n_train)
        real_loss, calls = method.loss, []

        def loss(model, x, y):
            out = real_loss(model, x, y)
            calls.append(1)
            if len(calls) > 2:  # 16 images / batch 8: epoch 2 starts at call 3
                out[key] = out[key] * float("nan")
            return out

        method.loss = loss
        return method

    monkeypatch.setattr(anpvs.training.loop, "build_method", nan_in_epoch_2)
    monkeypatch.setattr(anpvs.training.loop, "atomic_save", save_and_remember)
    with pytest.raises(TrainingError, match=f"{key} became nan") as info:
        fit(cfg, progress=False)
    assert str(run) in str(info.value)
    assert len(saved) == 1
    assert (run / "checkpoint.pt").read_bytes() == saved[0]
    assert read_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert [r["epoch"] for r in _log(run)] == [1]


# --------------------------------------------------------------------------------------------------
# Layer collapse guard
# --------------------------------------------------------------------------------------------------


def test_collapsed_layer_stops_training_and_keeps_the_last_good_checkpoint(
        tiny_config, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(method__name="anp_vs", train__epochs=3, data__train_limit=16, train__batch_size=8,
                      method__beta=4.0)
    run = Path(cfg.out)
    real_build = anpvs.training.loop.build_method

    def closes_mask2_in_epoch_2(cfg, n_train):
        method = real_build(cfg, n_train)

        def on_epoch_end(model, epoch):
            if epoch == 1:  # as if beta*KL/N had pushed every conv2 channel below the threshold
                with torch.no_grad():
                    model.mask2.a_uc.fill_(-10.0)

        method.on_epoch_end = on_epoch_end
        return method

    monkeypatch.setattr(anpvs.training.loop, "build_method", closes_mask2_in_epoch_2)
    with pytest.raises(TrainingError) as info:
        fit(cfg, progress=False)
    message = str(info.value)
    assert "'mask2'" in message and "0 active units" in message and "method.beta=4.0" in message
    assert "\n" not in message
    ckpt = read_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 1
    assert ckpt["state_dict"]["mask2.a_uc"].min() > -10.0  # the collapsed state was not saved


def test_validation_attack_runs_with_gradients() -> None:
    """The validation PGD must see input gradients (under no_grad it would stay at its random start)."""
    from anpvs.attacks import PGD
    from anpvs.models import create_model
    from anpvs.training.loop import validate

    torch.manual_seed(0)
    model = create_model("lenet5_caffe")
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    seen = []

    class Spy(PGD):
        def __call__(self, model, x, y):
            seen.append(torch.is_grad_enabled())
            return super().__call__(model, x, y)

    before = torch.get_rng_state()
    m = validate(model, x, y, Spy(eps=0.3, step_size=0.1, steps=2))
    assert seen == [True]
    assert torch.equal(torch.get_rng_state(), before), "validation must not move the training's random stream"
    assert 0 <= m["val_pgd2_acc"] <= m["val_clean_acc"] <= 100 and m["val_vulnerability"] > 0


# --------------------------------------------------------------------------------------------------------
# Subnormal weights (benchmarks/bench_subnormal.py: an AT step 7-18x slower with them on a CPU)
# --------------------------------------------------------------------------------------------------------


def test_flush_subnormals_zeroes_exactly_the_entries_below_1e_30() -> None:
    from anpvs.training.step import flush_subnormals_

    # float32: subnormals (below 1.18e-38) and the tiny normal numbers whose products are subnormal (below 1e-30)
    w = torch.tensor([1e-40, -1e-40, 1e-38, 2e-38, -5e-31, 2e-30, -1e-20, 0.5, 0.0, -3.0])
    steps = torch.tensor([3, 4])  # integer tensors are left alone
    d = torch.tensor([1e-300, 1e-30, 0.5], dtype=torch.float64)  # float64: only its own subnormals
    flush_subnormals_([w, steps, d])
    f32 = lambda v: torch.tensor(v).item()  # noqa: E731
    assert w.tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, f32(2e-30), f32(-1e-20), 0.5, 0.0, -3.0]
    assert steps.tolist() == [3, 4] and d.tolist() == [1e-300, 1e-30, 0.5]


def test_zeroing_subnormal_weights_leaves_the_logits_unchanged() -> None:
    from anpvs.models import create_model
    from anpvs.training.step import flush_subnormals_

    torch.manual_seed(0)
    model = create_model("lenet5_caffe").eval()
    with torch.no_grad():
        for w in (model.conv2.weight, model.dense3.weight):
            pick = torch.rand_like(w) < 0.3
            w[pick] = torch.sign(w[pick]) * torch.where(torch.rand_like(w[pick]) < 0.5, 1e-40, 1e-32)
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        flush_subnormals_(list(model.parameters()))
        after = model(x)
    assert not any(((p != 0) & (p.abs() < 1e-30)).any() for p in model.parameters())
    assert torch.equal(before, after)


def test_a_training_step_leaves_no_subnormal_parameter() -> None:
    from anpvs.training.step import TrainStep, build_optimizers

    # SGD at a learning rate of 1e-45 moves no normal weight and leaves a subnormal one subnormal: only the
    # flush can clear them
    cfg = build_config({"method.name": "anp_vs", "attack.steps": 1, "train.optimizer": "sgd", "train.lr": 1e-45,
                        "train.mask_lr": 1e-45})
    method = build_method(cfg, n_train=64)
    torch.manual_seed(0)
    model = build_model(cfg, method, (1, 28, 28), 10).train()
    with torch.no_grad():
        model.dense3.weight[:, :50] = 1e-41  # as weight decay leaves the weights of dead units
        model.dense3.weight[:, 50:100] = -1e-33
        kept = model.dense3.weight[:, 100:].clone()
    step = TrainStep(method, model, build_optimizers(cfg, model, total_steps=10))
    step(torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    subnormal = {n: int(((p != 0) & (p.abs() < 1e-30)).sum()) for n, p in model.named_parameters()}
    assert not any(subnormal.values()), subnormal
    assert torch.equal(model.dense3.weight[:, :100], torch.zeros_like(model.dense3.weight[:, :100]))
    assert torch.equal(model.dense3.weight[:, 100:], kept)
