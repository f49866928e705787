"""Tests of the remaining baselines of the paper's table: TRADES, AT BNN, Pretrained AT, ADMM."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from anpvs.attacks import PGD
from anpvs.methods import build_method, list_methods
from anpvs.methods.admm import keep_masks, prunable_weights
from anpvs.metrics.efficiency import weight_stats
from anpvs.models import create_model
from anpvs.models.checkpoint import (
    CheckpointError,
    atomic_save,
    head_parameter_names,
    load_model,
    load_weights,
    make_checkpoint,
)
from anpvs.nn.bayes import BayesConv2d, BayesLinear, bayes_layers, one_sample, set_sampling, total_bayes_kl
from anpvs.training.loop import fit, model_spec
from anpvs.training.run_config import build_config


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,))


def _method_and_model(name: str, **overrides):
    cfg = build_config({"method.name": name, "attack.steps": 2, "attack.step_size": 0.1, **overrides})
    method = build_method(cfg, n_train=1000)
    model_name, kwargs = model_spec(cfg, method, num_classes=10, in_channels=1)
    return method, create_model(model_name, **kwargs)


# --------------------------------------------------------------------------------------------------
# Every method (the registry: a new method is tested without editing this file): finite loss, finite
# gradients reaching the weights
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_methods())
def test_loss_and_gradients_are_finite(name: str) -> None:
    method, model = _method_and_model(name)
    model.train()
    x, y = _batch()
    out = method.loss(model, x, y)
    assert {"loss", "logits"} <= set(out)
    assert out["logits"].shape == (8, 10)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    assert model.training, "the method must leave the model in train mode"


def test_method_presets() -> None:
    assert build_config({"method.name": "at_bnn"}).train.weight_decay == 0.0
    c = build_config({"method.name": "pretrained_at"})
    t = c.train
    assert (t.optimizer, t.schedule, t.lr, t.weight_decay, t.batch_size, t.epochs) == ("sgd", "cosine", 1e-3, 5e-4,
                                                                                       128, 5)
    assert c.attack.steps == 10 and c.method.reinit_head
    assert build_config({"method.name": "admm"}).method.admm_sparsity == 0.8
    assert build_config({"method.name": "admm", "data.name": "cifar10"}).method.admm_sparsity == 0.75
    assert build_config({"method.name": "admm", "data.name": "cifar100"}).method.admm_sparsity == 0.75


# --------------------------------------------------------------------------------------------------
# TRADES
# --------------------------------------------------------------------------------------------------
def _kl(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor) -> float:
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        return float(torch.nn.functional.kl_div(torch.log_softmax(model(x_adv), 1), p, reduction="batchmean"))


def test_trades_inner_attack_increases_kl() -> None:
    method, model = _method_and_model("trades", **{"attack.steps": 5, "attack.step_size": 0.05})
    model.eval()
    x, y = _batch(16)
    full = method.attack
    start = PGD(eps=full.eps, step_size=full.step_size, steps=0, init=full.init, loss=full.loss)
    torch.manual_seed(1)
    x0 = start(model, x, y)  # the attack's starting point: x + 0.001 N(0, 1), projected
    torch.manual_seed(1)
    x_adv = full(model, x, y)  # same random start, then 5 ascent steps on the KL
    assert full.loss == "kl" and full.init == "normal"
    assert (x_adv - x).abs().max() <= full.eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    kl0, kl1 = _kl(model, x, x0), _kl(model, x, x_adv)
    assert kl1 > kl0 and kl1 > 10 * kl0 + 1e-6, (kl0, kl1)


# --------------------------------------------------------------------------------------------------
# Bayesian layers and the AT BNN models
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma_prior", [1.0, 0.1])
def test_bayes_kl_matches_closed_form(sigma_prior: float) -> None:
    conv = BayesConv2d(2, 3, 3, sigma_prior=sigma_prior, rho_init=-3.0).double()
    fc = BayesLinear(5, 4, sigma_prior=sigma_prior, rho_init=-5.0).double()
    for m in (conv, fc):
        with torch.no_grad():
            m.weight_rho.uniform_(-6, 1)
            m.bias_rho.uniform_(-6, 1)
        expected = torch.zeros((), dtype=torch.float64)
        expected_dist = torch.zeros((), dtype=torch.float64)
        for mu, rho in ((m.weight, m.weight_rho), (m.bias, m.bias_rho)):
            mu, sigma = mu.detach(), torch.log1p(torch.exp(rho.detach()))
            # KL(N(mu, s^2) || N(0, sp^2)) = log(sp / s) + (s^2 + mu^2) / (2 sp^2) - 1/2, by hand
            expected += (math.log(sigma_prior) - sigma.log() + (sigma**2 + mu**2) / (2 * sigma_prior**2) - 0.5).sum()
            expected_dist += kl_divergence(Normal(mu, sigma), Normal(torch.zeros_like(mu), sigma_prior)).sum()
        torch.testing.assert_close(m.kl().detach(), expected)
        torch.testing.assert_close(m.kl().detach(), expected_dist)
    torch.testing.assert_close(total_bayes_kl(nn.Sequential(conv, fc)), conv.kl() + fc.kl())


def test_bayes_sampling_switch() -> None:
    model = create_model("lenet5_caffe_bnn")
    x, _ = _batch(4)
    model.train()
    assert not torch.equal(model(x), model(x)), "train mode must sample new weights on every forward"
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)  # mean weights: deterministic
    assert set_sampling(model, True) == 4
    assert not torch.equal(model(x), model(x)), "set_sampling(True) must make eval-mode forwards stochastic"
    set_sampling(model, False)
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(("bnn", "plain", "shape"), [("lenet5_caffe_bnn", "lenet5_caffe", (2, 1, 28, 28)),
                                                     ("vgg16_bnn", "vgg16", (2, 3, 32, 32))])
def test_bnn_models_match_plain_architecture(bnn: str, plain: str, shape: tuple[int, ...]) -> None:
    model, ref = create_model(bnn).eval(), create_model(plain).eval()
    assert model.arch == ref.arch
    assert all(type(m) not in (nn.Conv2d, nn.Linear) for m in model.modules()), "every conv/linear is Bayesian"
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in ref.modules())
    assert len(bayes_layers(model)) == n_layers
    # efficiency.weight_stats counts the means (``weight``) of the Bayesian layers like ordinary weights
    assert weight_stats(model)["weights"] == weight_stats(ref)["weights"]
    x = torch.rand(*shape)
    (logits, latents), (_, ref_latents) = model.forward_intermediates(x), ref.forward_intermediates(x)
    assert logits.shape == (2, 10)
    assert [z.shape for z in latents] == [z.shape for z in ref_latents]
    assert model.latent_names() == ref.latent_names()
    sd = model.state_dict()
    assert all(k in sd for k in ref.state_dict()), "the means keep the plain model's parameter names"


def test_bnn_logits_have_no_relu() -> None:
    model = create_model("lenet5_caffe_bnn").eval()
    assert (model(torch.rand(16, 1, 28, 28)) < 0).any(), "logits must be able to go negative (docs/reference.md §7.7)"


def test_eot_pgd_on_sampled_bnn() -> None:
    model = create_model("lenet5_caffe_bnn").eval()
    set_sampling(model, True)
    x, y = _batch(4)
    x_adv = PGD(eps=0.3, step_size=0.1, steps=2, eot=3)(model, x, y)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not model.training and all(m.sample_in_eval for m in bayes_layers(model))


def test_at_bnn_loss_has_scaled_kl() -> None:
    method, model = _method_and_model("at_bnn", **{"method.kl_n": 500, "method.bnn_kl_weight": 10.0})
    model.train()
    x, y = _batch()
    out = method.loss(model, x, y)
    torch.testing.assert_close(out["bayes_kl"], total_bayes_kl(model).detach())
    mixed = (out["ce_clean"] + 2 * out["ce_adv"]) / 3
    torch.testing.assert_close(out["loss"].detach(), mixed + out["bayes_kl"] / (500 * 10.0))


def test_one_sample_shares_one_weight_draw_and_keeps_gradients() -> None:
    model = create_model("lenet5_caffe_bnn").train()
    x, _ = _batch(4)
    with one_sample(model):
        a, b = model(x), model(x)
        with one_sample(model):  # nested: the outer sample stays
            c = model(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert not torch.equal(model(x), model(x)), "outside the block every forward draws again"
    with pytest.raises(RuntimeError), one_sample(model):
        raise RuntimeError("boom")
    assert all(m._noise is None for m in bayes_layers(model)), "per-call draws come back after an error"
    with one_sample(model):
        model(x).sum().backward()
    assert all(m.weight.grad is not None and m.weight_rho.grad is not None for m in bayes_layers(model))


@pytest.mark.parametrize("shared", [True, False])
def test_at_bnn_clean_and_adversarial_pass_share_a_sample_like_the_reference(monkeypatch, shared: bool) -> None:
    method, model = _method_and_model("at_bnn", **{"method.bnn_shared_sample": shared})
    model.train()
    seen: list[torch.Tensor] = []
    first = bayes_layers(model)[0]
    real = type(first).sampled_parameters

    def spy(self):
        w, b = real(self)
        if self is first and self.sampling:
            seen.append(w.detach().clone())
        return w, b

    monkeypatch.setattr(type(first), "sampled_parameters", spy)
    method.loss(model, *_batch())
    assert len(seen) == 2  # the clean and the adversarial training pass (PGD used the mean weights)
    assert torch.equal(seen[0], seen[1]) == shared


def test_decay_scope_all_decays_biases_too() -> None:
    from anpvs.training.step import build_optimizers

    model = create_model("lenet5_caffe")
    groups = {}
    for scope in ("weights", "all"):
        cfg = build_config({"train.decay_scope": scope})
        opt = build_optimizers(cfg, model, 10).optimizers["weights"]
        groups[scope] = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    bias = model.fc1.bias if hasattr(model, "fc1") else next(p for p in model.parameters() if p.dim() == 1)
    assert groups["weights"][id(bias)] == 0.0 and groups["all"][id(bias)] == 1e-4
    assert set(groups["weights"]) == set(groups["all"]) == {id(p) for p in model.parameters()}
    with pytest.raises(Exception, match="train.decay_scope must be weights or all"):
        build_config({"train.decay_scope": "masks"})


# --------------------------------------------------------------------------------------------------
# ADMM
# --------------------------------------------------------------------------------------------------
def test_admm_projection_keeps_exactly_k() -> None:
    weights = {"a": torch.randn(20, 1, 5, 5), "b": torch.randn(10, 30), "c": torch.ones(7, 3)}  # "c": all ties
    s = 0.8
    per_layer = keep_masks(weights, s, "layer")
    for k, w in weights.items():
        assert per_layer[k].shape == w.shape and per_layer[k].dtype == torch.bool
        assert int(per_layer[k].sum()) == round((1 - s) * w.numel())
        kept, dropped = w.abs()[per_layer[k]], w.abs()[~per_layer[k]]
        assert kept.min() >= dropped.max()
    total = sum(w.numel() for w in weights.values())
    glob = keep_masks(weights, s, "global")
    assert sum(int(m.sum()) for m in glob.values()) == round((1 - s) * total)
    all_kept = torch.cat([w.abs()[glob[k]] for k, w in weights.items()])
    all_dropped = torch.cat([w.abs()[~glob[k]] for k, w in weights.items()])
    assert all_kept.min() >= all_dropped.max()
    filt = keep_masks(weights, 0.5, "filter")
    rows = filt["a"].flatten(1)
    assert (rows.all(1) | ~rows.any(1)).all(), "filter pruning keeps or drops whole filters"
    assert int(rows.all(1).sum()) == 10
    assert int(filt["b"].sum()) == 150  # linear layers: per-layer unstructured


def _tiny_cfg(tmp_path, name: str, **overrides):
    return build_config({"data.name": "mnist_sample", "data.train_limit": 128, "data.test_limit": 50,
                         "method.name": name, "train.epochs": 3, "train.batch_size": 64, "attack.steps": 1,
                         "attack.step_size": 0.3, "device": "cpu", "out": str(tmp_path / name), **overrides})


def test_admm_run_reaches_target_sparsity_and_keeps_masks(tmp_path) -> None:
    from anpvs.jobs.evaluate import evaluate_checkpoint

    cfg = _tiny_cfg(tmp_path, "admm", **{"method.admm_fraction": 0.34, "method.admm_update_every": 1})
    summary = fit(cfg, progress=False)  # 1 ADMM epoch, then 2 epochs of masked retraining
    model, ckpt = load_model(summary["checkpoint"])
    state = ckpt["method_state"]
    assert state["phase"] == "retrain"
    weights = prunable_weights(model)
    for k, w in weights.items():
        keep = state["masks"][k]
        assert int(keep.sum()) == round(0.2 * w.numel()), k
        assert (w[~keep] == 0).all(), f"{k}: pruned weights must stay exactly 0 after retraining"
        assert (w[keep] != 0).all()
    ws = weight_stats(model)
    assert ws["weight_sparsity"] == pytest.approx(80.0, abs=0.01)
    record = evaluate_checkpoint(summary["checkpoint"], steps=1, test_limit=20, device="cpu")
    assert record["metrics"]["weight_sparsity"] == pytest.approx(80.0, abs=0.01)


def test_admm_state_round_trip() -> None:
    method, model = _method_and_model("admm", **{"train.epochs": 4})
    (pruner,) = method.sparsifiers(model)
    model.train()
    method.loss(model, *_batch())
    pruner.penalty(model)  # the first step starts the ADMM phase
    assert pruner.phase == "admm" and set(pruner.Z) == set(prunable_weights(model))
    pruner.on_epoch_end(model, 0)  # a Z/U update
    state = method.state_dict()
    fresh, _ = _method_and_model("admm", **{"train.epochs": 4})
    fresh.load_state_dict(state)
    assert fresh.pruner.phase == "admm" and fresh.pruner.n_updates == 1
    for k in pruner.Z:
        torch.testing.assert_close(fresh.pruner.Z[k], pruner.Z[k])
        torch.testing.assert_close(fresh.pruner.U[k], pruner.U[k])
    pruner.on_epoch_end(model, 1)  # end of the ADMM phase (round(0.5 * 4) = 2 epochs): hard prune
    assert pruner.phase == "retrain" and not pruner.Z
    with torch.no_grad():
        model.conv1.weight.add_(1.0)
    pruner.on_step_end(model)
    assert (model.conv1.weight[~pruner.masks["conv1.weight"]] == 0).all()


# --------------------------------------------------------------------------------------------------
# Pretrained AT: init from a checkpoint with another number of classes
# --------------------------------------------------------------------------------------------------
def _save_init(tmp_path, num_classes: int):
    src = create_model("lenet5_caffe", num_classes=num_classes)
    path = tmp_path / f"init{num_classes}.pt"
    atomic_save(make_checkpoint(src, config={}, epoch=1), path)
    return src, path


def test_load_weights_reinitialises_mismatched_head(tmp_path) -> None:
    src, _ = _save_init(tmp_path, 5)
    model = create_model("lenet5_caffe", num_classes=10)
    head_before = model.dense4.weight.detach().clone()
    head = head_parameter_names(model)
    assert head == ["dense4.weight", "dense4.bias"]
    with pytest.raises(CheckpointError, match="reinit_head"):
        load_weights(model, src.state_dict())
    left = load_weights(model, src.state_dict(), reinit=head)
    assert sorted(left) == sorted(head)
    torch.testing.assert_close(model.conv1.weight, src.conv1.weight)
    torch.testing.assert_close(model.dense3.weight, src.dense3.weight)
    torch.testing.assert_close(model.dense4.weight, head_before)
    bad = {k: v for k, v in src.state_dict().items()}
    bad["conv1.weight"] = torch.zeros(20, 1, 3, 3)
    with pytest.raises(CheckpointError):  # only the head may differ
        load_weights(model, bad, reinit=head)


def test_pretrained_at_fit_with_other_class_count(tmp_path) -> None:
    src, path = _save_init(tmp_path, 5)
    overrides = {"init": str(path), "train.epochs": 1, "data.train_limit": 64}
    summary = fit(_tiny_cfg(tmp_path, "pretrained_at", **overrides), progress=False)
    model, _ = load_model(summary["checkpoint"])
    assert model.num_classes == 10
    with pytest.raises(CheckpointError, match="shape"):
        fit(_tiny_cfg(tmp_path / "off", "pretrained_at", **overrides, **{"method.reinit_head": False}),
            progress=False)


def test_admm_resume_matches_uninterrupted_run(tmp_path, monkeypatch) -> None:
    from anpvs.sparsifiers.admm import ADMMPruning as ADMM  # the pruning scheme whose epoch hook is cut

    overrides = {"method.admm_fraction": 0.67, "data.train_limit": 64}  # epochs: ADMM, ADMM + prune, retrain
    full = fit(_tiny_cfg(tmp_path / "full", "admm", **overrides), progress=False)
    original = ADMM.on_epoch_end

    def interrupted(self, model, epoch):
        if epoch == 1:
            raise KeyboardInterrupt  # before the checkpoint of epoch 2: the run restarts from epoch 1's
        original(self, model, epoch)

    cfg = _tiny_cfg(tmp_path / "cut", "admm", **overrides)
    monkeypatch.setattr(ADMM, "on_epoch_end", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, progress=False)
    monkeypatch.setattr(ADMM, "on_epoch_end", original)
    resumed = fit(cfg, resume=True, progress=False)
    a, ca = load_model(full["checkpoint"])
    b, cb = load_model(resumed["checkpoint"])
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, rtol=0, atol=0)
    for k, v in ca["method_state"]["masks"].items():
        assert torch.equal(cb["method_state"]["masks"][k], v)


# --------------------------------------------------------------------------------------------------
# Every method's settings: declared next to its code, all in the config, valid by default, checked
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_methods())
def test_method_settings_are_in_the_config_and_valid_by_default(name: str) -> None:
    import dataclasses

    from anpvs.methods import METHODS, Settings
    from anpvs.training.run_config import valid_keys

    method_cls = METHODS.get(name)
    assert issubclass(method_cls.settings, Settings) and dataclasses.is_dataclass(method_cls.settings)
    cfg = build_config({"method.name": name})
    for f in dataclasses.fields(method_cls.settings):
        assert hasattr(cfg.method, f.name), f"{name}: method.{f.name} is not a config key"
    method_cls.settings().validate()  # the defaults are valid
    assert set(method_cls.preset) <= set(valid_keys()), f"{name}: its preset sets unknown keys"


def test_each_method_validates_its_own_settings() -> None:
    from anpvs.core.config import ConfigError

    for key, bad in [("method.admm_rho", -1.0), ("method.bnn_kl_weight", 0.0), ("method.trades_beta", -1.0),
                     ("method.beta", -1.0), ("method.kl_n", -1), ("method.adv_loss", "huber")]:
        with pytest.raises(ConfigError, match=key.removeprefix("method.")):
            build_config({"method.name": "standard", key: bad})


@pytest.mark.parametrize("steps, warned", [(20, True), (30, False), (40, False)])
def test_trades_warns_when_its_attack_cannot_reach_the_ball(caplog, steps: int, warned: bool) -> None:
    """TRADES' attack starts next to x: 20 steps of 0.01 reach 0.2 of MNIST's eps 0.3 (a one-line warning
    naming the fix); 30 or more steps reach the edge."""
    cfg = build_config({"data.name": "mnist_sample", "method.name": "trades", "attack.steps": steps,
                        "attack.step_size": 0.01, "device": "cpu"})
    with caplog.at_level("WARNING", logger="anpvs.methods.trades"):
        build_method(cfg, 100)
    messages = [r.getMessage() for r in caplog.records if r.name == "anpvs.methods.trades"]
    assert bool(messages) == warned
    if warned:
        assert "reach at most 0.2 of eps 0.3" in messages[0] and "--pgd-steps 30" in messages[0]
