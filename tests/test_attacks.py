"""Tests of the attacks (STYLE rule 9: attacks leave no trace).

Most tests use a tiny conv net on 8x8 images (milliseconds per attack); the last one trains
LeNet5-Caffe briefly on the bundled real digits and checks clean >= FGSM >= PGD accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from anpvs.attacks import ATTACK_LOSSES, FGSM, PGD, eval_mode

EPS = {"linf": 0.1, "l2": 0.5}
STEP = {"linf": 0.03, "l2": 0.2}


class TinyNet(nn.Module):
    """Conv -> BN -> ReLU -> dropout -> linear on 1x8x8 images: BN and dropout make train != eval."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@pytest.fixture
def net() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # non-trivial BN running statistics, so eval != train
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    x[:, :, 0, :] = 0.0  # pixels on the box boundary: the [0, 1] clipping must hold there too
    x[:, :, -1, :] = 1.0
    y = torch.randint(0, 10, (16,), generator=g)
    return x, y


def _attacks() -> list:
    cases = []
    for norm in ("linf", "l2"):
        for restarts in (1, 3):
            for init in ("uniform", "normal", "none"):
                cases.append(pytest.param(
                    PGD(eps=EPS[norm], step_size=STEP[norm], steps=5, init=init, restarts=restarts, norm=norm),
                    id=f"pgd-{norm}-r{restarts}-{init}"))
        cases.append(pytest.param(PGD(eps=EPS[norm], step_size=STEP[norm], steps=3, eot=2, norm=norm),
                                  id=f"pgd-{norm}-eot2"))
        cases.append(pytest.param(PGD(eps=EPS[norm], step_size=STEP[norm], steps=3, loss="kl", init="normal",
                                      restarts=2, norm=norm), id=f"pgd-{norm}-kl"))
        cases.append(pytest.param(FGSM(EPS[norm], norm=norm), id=f"fgsm-{norm}"))
    return cases


def _check_in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    delta = x_adv - x
    if norm == "linf":
        assert delta.abs().max().item() <= eps + 1e-6
    else:
        assert delta.flatten(1).norm(dim=1).max().item() <= eps + 1e-5
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


@pytest.mark.parametrize("attack", _attacks())
def test_output_is_detached_in_box_and_within_eps(attack: PGD, net: TinyNet, batch) -> None:
    x, y = batch
    x_in = x.clone().requires_grad_(True)  # a caller's tensor that is part of a graph
    x_adv = attack(net, x_in, y)
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert torch.equal(x_in.detach(), x), "the attack modified its input in place"
    assert x_in.grad is None
    _check_in_ball(x_adv, x, attack.eps, attack.norm)
    assert not torch.equal(x_adv, x), "the attack did not move"
    assert all(p.grad is None for p in net.parameters()), "the attack left gradients on the model"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_float64_inputs_stay_float64(norm: str, net: TinyNet, batch) -> None:
    x, y = batch
    x_adv = PGD(eps=EPS[norm], step_size=STEP[norm], steps=2, restarts=2, norm=norm)(net.double(), x.double(), y)
    assert x_adv.dtype == torch.float64
    _check_in_ball(x_adv, x.double(), EPS[norm], norm)


@pytest.mark.parametrize("init", ["uniform", "none"])
def test_eot_on_a_deterministic_model_changes_nothing(init: str, net: TinyNet, batch) -> None:
    # EOT averages gradients over forwards; for a deterministic (eval-mode) model they are all equal.
    x, y = batch
    torch.manual_seed(2)
    one = PGD(eps=0.1, step_size=0.03, steps=3, init=init, eot=1)(net, x, y)
    torch.manual_seed(2)
    three = PGD(eps=0.1, step_size=0.03, steps=3, init=init, eot=3)(net, x, y)
    assert torch.equal(one, three)


@pytest.mark.parametrize("attack", [PGD(eps=0.1, step_size=0.03, steps=2), FGSM(0.1)], ids=["pgd", "fgsm"])
def test_attack_runs_in_eval_mode_and_restores_every_flag(attack: PGD, net: TinyNet, batch) -> None:
    x, y = batch
    seen: list[bool] = []
    hooks = [m.register_forward_pre_hook(lambda m, inp: seen.append(m.training)) for m in net.modules()]
    net.train()
    net.features[1].eval()  # a submodule whose flag differs from its parent's (e.g. frozen BN)
    before = {name: m.training for name, m in net.named_modules()}
    attack(net, x, y)
    assert seen and not any(seen), "some module ran in train mode during the attack"
    assert {name: m.training for name, m in net.named_modules()} == before

    net.eval()
    attack(net, x, y)
    assert not any(m.training for m in net.modules())
    for h in hooks:
        h.remove()


def test_eval_mode_restores_flags_after_an_exception(net: TinyNet) -> None:
    net.train()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(net):
        assert not net.training
        raise RuntimeError("boom")
    assert all(m.training for m in net.modules())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("init", ["uniform", "normal", "none"])
def test_eps_zero_returns_the_input(norm: str, init: str, net: TinyNet, batch) -> None:
    x, y = batch
    assert torch.equal(PGD(eps=0.0, step_size=0.01, steps=3, init=init, norm=norm)(net, x, y), x)
    assert torch.equal(FGSM(0.0, norm=norm)(net, x, y), x)


@pytest.mark.parametrize("kwargs", [
    {"eps": -0.1}, {"step_size": -0.01}, {"steps": -1}, {"restarts": 0}, {"eot": 0},
    {"norm": "l1"}, {"init": "gaussian"},
])
def test_invalid_arguments_raise_value_error(kwargs: dict) -> None:
    args = {"eps": 0.1, "step_size": 0.01, "steps": 2, **kwargs}
    with pytest.raises(ValueError):
        PGD(**args)


def test_invalid_fgsm_and_unknown_loss() -> None:
    with pytest.raises(ValueError):
        FGSM(-0.1)
    with pytest.raises(ValueError):
        FGSM(0.1, norm="l1")
    # unknown names fail like every registry lookup: KeyError listing the valid names (STYLE rule 6)
    with pytest.raises(KeyError, match="ce.*kl"):
        PGD(eps=0.1, step_size=0.01, loss="hinge")
    assert set(ATTACK_LOSSES.names()) >= {"ce", "kl"}


def _kl(net: nn.Module, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ATTACK_LOSSES.get("kl")(net(x_adv), torch.zeros(len(x), dtype=torch.long), net(x))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_kl_loss_increases_the_kl_from_its_start(norm: str, net: TinyNet, batch) -> None:
    # TRADES' inner maximisation: start at x + 0.001 N(0, 1), ascend KL(f(x) || f(x')).
    x, y = batch
    kwargs = {"eps": EPS[norm], "step_size": STEP[norm], "init": "normal", "loss": "kl", "norm": norm}
    torch.manual_seed(5)
    start = PGD(steps=0, **kwargs)(net, x, y)
    torch.manual_seed(5)
    x_adv = PGD(steps=10, **kwargs)(net, x, y)
    kl_start, kl_adv = _kl(net, x, start), _kl(net, x, x_adv)
    assert (kl_start >= -1e-6).all() and (kl_adv >= -1e-6).all()  # KL >= 0 up to float32 rounding
    assert kl_adv.mean() > 10 * kl_start.mean()
    assert (kl_adv > kl_start).float().mean() > 0.9
    # the KL attack does not use the labels (TRADES is label-free)
    torch.manual_seed(5)
    assert torch.equal(PGD(steps=10, **kwargs)(net, x, (y + 1) % 10), x_adv)


def test_restarts_keep_the_per_example_worst_case(net: TinyNet, batch) -> None:
    # One short step from a random start leaves much to chance, so restarts must find worse points.
    # With the same seed, the first restart replays the single run; the kept point per example is
    # then at least as bad: misclassified if any restart was, and of higher loss otherwise.
    x, y = batch
    x, y = x.repeat(4, 1, 1, 1), y.repeat(4)
    kwargs = {"eps": 0.1, "step_size": 0.01, "steps": 1}
    torch.manual_seed(3)
    single = PGD(restarts=1, **kwargs)(net, x, y)
    torch.manual_seed(3)
    multi = PGD(restarts=5, **kwargs)(net, x, y)
    with torch.no_grad():
        out_single, out_multi = net(single), net(multi)
    wrong_single, wrong_multi = out_single.argmax(1) != y, out_multi.argmax(1) != y
    assert (wrong_multi | ~wrong_single).all(), "a restart lost an example the single run had broken"
    same = wrong_single == wrong_multi
    ce_single = F.cross_entropy(out_single, y, reduction="none")[same]
    ce_multi = F.cross_entropy(out_multi, y, reduction="none")[same]
    assert (ce_multi >= ce_single - 1e-6).all()
    assert (ce_multi > ce_single + 1e-6).float().mean() > 0.5
    assert wrong_multi.sum() >= wrong_single.sum()


def test_kl_restarts_keep_the_highest_kl(net: TinyNet, batch) -> None:
    x, y = batch
    kwargs = {"eps": 0.1, "step_size": 0.01, "steps": 1, "loss": "kl", "init": "uniform"}
    torch.manual_seed(4)
    single = PGD(restarts=1, **kwargs)(net, x, y)
    torch.manual_seed(4)
    multi = PGD(restarts=5, **kwargs)(net, x, y)
    kl_single, kl_multi = _kl(net, x, single), _kl(net, x, multi)
    assert (kl_multi >= kl_single - 1e-7).all()
    assert kl_multi.mean() > kl_single.mean()


# ------------------------------------------------------------------------------------------------
# A briefly trained LeNet5-Caffe on real digits
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_lenet(tmp_path_factory: pytest.TempPathFactory):
    """LeNet5-Caffe trained with the Standard method for 2 epochs on 1000 bundled digits (~60 steps)."""
    import anpvs.models.checkpoint
    from anpvs.data import load_dataset
    from anpvs.models.checkpoint import load_model
    from anpvs.training.loop import fit
    from anpvs.training.run_config import build_config

    out = tmp_path_factory.mktemp("standard") / "run"
    cfg = build_config({"data.name": "mnist_sample", "data.train_limit": 1000, "train.epochs": 2,
                        "train.batch_size": 32, "train.schedule": "constant", "method.name": "standard",
                        "device": "cpu", "out": str(out)})
    with pytest.MonkeyPatch.context() as mp:  # no `git rev-parse` on the developer's checkout
        mp.setattr(anpvs.models.checkpoint, "git_commit", lambda: None)
        summary = fit(cfg, progress=False)
    model, _ = load_model(Path(summary["checkpoint"]))
    test = load_dataset("mnist_sample", test_limit=64).test
    return model, test.images.float() / 255, test.labels


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_trained_model_clean_fgsm_pgd_ordering(trained_lenet) -> None:
    model, x, y = trained_lenet
    torch.manual_seed(0)
    clean = _accuracy(model, x, y)
    fgsm = _accuracy(model, FGSM(0.3)(model, x, y), y)
    pgd = _accuracy(model, PGD(eps=0.3, step_size=0.03, steps=20)(model, x, y), y)
    assert clean >= 0.8, f"the briefly trained model should classify the digits (clean {clean:.2f})"
    assert clean >= fgsm >= pgd
    assert pgd < clean
    assert not model.training


def test_pgd_under_no_grad_is_the_same_attack() -> None:
    """Callers inside torch.no_grad() get the real attack, not its random start."""
    from anpvs.models import create_model

    model = create_model("lenet5_caffe").eval()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    atk = PGD(eps=0.3, step_size=0.05, steps=3)
    torch.manual_seed(1)
    ref = atk(model, x, y)
    torch.manual_seed(1)
    with torch.no_grad():
        got = atk(model, x, y)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
