"""The fast engine changes speed, not results: fast kernels, compacted attacks, frozen parameters, the shared
training step and bf16 autocast."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.nn import functional as F

import anpvs.methods.adversarial as adversarial_module
import anpvs.training.step as step_module
from anpvs.attacks import PGD
from anpvs.core.config import ConfigError
from anpvs.data import load_dataset
from anpvs.evaluation.evaluate import evaluate
from anpvs.methods import build_method
from anpvs.models import create_model
from anpvs.models.compact import attack_network
from anpvs.nn.fast import conv2d, fast_kernels, max_pool2d
from anpvs.training.loop import build_model, fit
from anpvs.training.run_config import build_config
from anpvs.training.step import TrainStep, build_optimizers

PAPER_WIDTHS = [4, 23, 61, 129]


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("mnist_sample", test_limit=128)
    return data.test.images.float().div(255), data.test.labels


def _prune(model, widths):
    with torch.no_grad():
        for m, w in zip([model.mask1, model.mask2, model.mask3, model.mask4], widths, strict=True):
            m.a_uc.fill_(-10.0)
            m.a_uc[:w] = 5.0


def _input_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)[0]


@pytest.mark.parametrize(("cin", "padding"), [(1, 0), (3, 1), (2, 2)])
def test_fast_conv2d_matches_f_conv2d_values_and_gradients(cin, padding):
    torch.manual_seed(0)
    x = torch.rand(4, cin, 12, 12, requires_grad=True)
    w = torch.randn(6, cin, 5, 5, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    g = torch.randn(4, 6, 12 + 2 * padding - 4, 12 + 2 * padding - 4)
    ref = F.conv2d(x, w, b, padding=padding)
    ref_grads = torch.autograd.grad(ref, (x, w, b), g)
    out = conv2d(x, w, b, padding=padding)
    grads = torch.autograd.grad(out, (x, w, b), g)
    assert torch.equal(out, ref)
    for a, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, r, rtol=1e-5, atol=1e-5)
    # only the input gradient: the weight and bias gradients are not computed at all
    (gx,) = torch.autograd.grad(conv2d(x, w.detach(), b.detach(), padding=padding), (x,), g)
    assert torch.allclose(gx, ref_grads[0], rtol=1e-5, atol=1e-5)


def test_fast_max_pool_is_exact():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, 8, requires_grad=True)
    g = torch.randn(3, 5, 4, 4)
    out = max_pool2d(x, 2)
    assert torch.equal(out, F.max_pool2d(x, 2))
    assert torch.equal(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(F.max_pool2d(x, 2), x, g)[0])


def test_lenet_with_fast_kernels_has_the_same_logits_and_input_gradients(digits):
    x, y = digits
    model = create_model("lenet5_caffe").eval()
    with fast_kernels(False):
        ref_logits, ref_grad = model(x), _input_grad(model, x, y)
    logits, grad = model(x), _input_grad(model, x, y)
    assert torch.allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert (grad - ref_grad).abs().max() <= 1e-5 * ref_grad.abs().max()
    assert torch.equal(grad.sign(), ref_grad.sign())


@pytest.mark.parametrize("widths", [None, PAPER_WIDTHS])
def test_attack_on_the_compacted_network_is_the_attack_on_the_masked_one(digits, widths):
    x, y = digits
    torch.manual_seed(0)
    model = create_model("lenet5_caffe_bbd").eval()
    if widths:
        _prune(model, widths)
    net = attack_network(model)
    assert net is not model and not any(p.requires_grad for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) <= sum(p.numel() for p in model.parameters())
    with fast_kernels(False):
        ref_grad = _input_grad(model, x, y)
    grad = _input_grad(net, x, y)
    # The same gradient up to float rounding. Rounding can flip which of two nearly equal values a 2x2
    # max-pool picks (or which side of 0 a pre-activation falls), which moves that path's gradient to a
    # neighbouring pixel: measured, 1 of 128 random-init examples, 34 of its 784 pixels; none at the paper's
    # widths. So: every pixel of almost every example agrees to 1e-5 of the largest gradient.
    close = (grad - ref_grad).abs() <= 1e-5 * ref_grad.abs().max()
    assert close.float().mean() >= 0.999
    assert close.flatten(1).all(1).float().mean() >= 0.98
    if widths:
        assert close.all()

    one_step = PGD(eps=0.3, step_size=0.05, steps=1)
    torch.manual_seed(1)
    with fast_kernels(False):
        a = one_step(model, x, y)
    torch.manual_seed(1)
    b = one_step(net, x, y)
    same = (a - b).abs() <= 1e-5  # the same adversarial examples, pixel for pixel
    assert same.float().mean() >= 0.999 and same.flatten(1).all(1).float().mean() >= 0.98
    if widths:
        assert same.all()

    # Over many sign steps a rounding-level difference can flip the sign of a near-zero gradient
    # component; the examples still agree on almost every pixel and in what the model predicts.
    pgd = PGD(eps=0.3, step_size=0.05, steps=10)
    torch.manual_seed(2)
    with fast_kernels(False):
        a = pgd(model, x, y)
    torch.manual_seed(2)
    b = pgd(net, x, y)
    assert ((a - b).abs() <= 1e-5).float().mean() >= 0.98
    with torch.no_grad():
        assert (model(a).argmax(1) == model(b).argmax(1)).float().mean() >= 0.97


def test_unmasked_models_are_attacked_as_they_are():
    for name in ("lenet5_caffe", "lenet5_caffe_bnn"):
        model = create_model(name)
        assert attack_network(model) is model


def test_attacks_leave_parameters_untouched(digits):
    x, y = digits
    model = create_model("lenet5_caffe").train()
    model.dense4.weight.requires_grad_(False)  # a frozen layer stays frozen
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    PGD(eps=0.3, step_size=0.05, steps=3)(model, x[:8], y[:8])
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_evaluation_of_a_masked_model_attacks_its_compacted_network(digits, monkeypatch):
    x, y = digits
    model = create_model("lenet5_caffe_bbd").eval()
    _prune(model, PAPER_WIDTHS)
    seen = []

    class Spy:
        def __call__(self, net, xb, yb):
            seen.append(type(net).__name__)
            return PGD(eps=0.3, step_size=0.01, steps=5)(net, xb, yb)

    fast = evaluate(model, x, y, {"pgd": Spy()}, batch_size=64)
    assert seen == ["CompactLeNet5Caffe", "CompactLeNet5Caffe"]
    evaluate_module = importlib.import_module("anpvs.evaluation.evaluate")  # the package exports the function as well
    monkeypatch.setattr(evaluate_module, "attack_network", lambda m: m)
    with fast_kernels(False):
        slow = evaluate(model, x, y, {"pgd": Spy()}, batch_size=64)
    assert seen[2:] == ["LeNet5Caffe", "LeNet5Caffe"]
    assert fast["clean_acc"] == slow["clean_acc"]
    assert abs(fast["pgd_acc"] - slow["pgd_acc"]) <= 100 * 2 / len(y)  # at most two examples flip
    assert fast["pgd_vulnerability"] == pytest.approx(slow["pgd_vulnerability"], rel=0.02)


def test_fit_runs_the_shared_training_step(tmp_path, monkeypatch):
    calls = []

    class CountingStep(TrainStep):
        def __call__(self, x, y):
            calls.append(len(y))
            return super().__call__(x, y)

    overrides = {"method.name": "anp_vs", "data.train_limit": 96, "data.test_limit": 16, "train.batch_size": 32,
                 "train.epochs": 1, "attack.steps": 1, "out": str(tmp_path / "spied")}
    monkeypatch.setattr("anpvs.training.loop.TrainStep", CountingStep)
    spied = fit(build_config(overrides), progress=False)
    monkeypatch.undo()
    plain = fit(build_config({**overrides, "out": str(tmp_path / "plain")}), progress=False)
    assert calls == [32, 32, 32]
    a = torch.load(spied["checkpoint"], weights_only=True)["state_dict"]
    b = torch.load(plain["checkpoint"], weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_step_keeps_masks_losses_and_optimizer_in_fp32(digits):
    x, y = digits
    cfg = build_config({"method.name": "anp_vs", "attack.steps": 2, "train.precision": "bf16"})
    method = build_method(cfg, 60000)
    model = build_model(cfg, method, (1, 28, 28), 10).train()
    opt = build_optimizers(cfg, model, 100)
    step = TrainStep(method, model, opt, precision="bf16")
    for _ in range(2):
        out = step(x[:32], y[:32])
    for k in ("loss", "mask_loss", "kl", "vulnerability"):
        assert out[k].dtype == torch.float32 and torch.isfinite(out[k])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for o in opt.optimizers.values():
        for st in o.state.values():
            assert all(v.dtype == torch.float32 for v in st.values() if v.is_floating_point())


def test_precision_settings_are_checked():
    with pytest.raises(ConfigError, match="train.precision must be fp32 or bf16"):
        build_config({"train.precision": "fp16"})
    with pytest.raises(ConfigError, match="eval.precision must be fp32 or bf16"):
        build_config({"eval.precision": "half"})
    with pytest.raises(ValueError, match="unknown precision"):
        step_module.autocast("fp8", "cpu")


def test_training_attack_of_masked_methods_uses_the_snapshot(monkeypatch, digits):
    x, y = digits
    built = []
    real = adversarial_module.attack_network
    monkeypatch.setattr(adversarial_module, "attack_network", lambda m: built.append(1) or real(m))
    cfg = build_config({"method.name": "anp_vs", "attack.steps": 1})
    method = build_method(cfg, 60000)
    model = build_model(cfg, method, (1, 28, 28), 10).train()
    step = TrainStep(method, model, build_optimizers(cfg, model, 10))
    for _ in range(3):
        step(x[:16], y[:16])
    assert len(built) == 3  # rebuilt every step: the masks move every step


@pytest.mark.slow
def test_bf16_adversarial_training_is_as_robust_as_fp32(tmp_path):
    """PGD-40 accuracy of AT trained in bf16 is within 1 point of fp32 training (same data, seed, budget)."""
    from anpvs.jobs.evaluate import evaluate_checkpoint

    acc = {}
    for precision in ("fp32", "bf16"):
        cfg = build_config({"method.name": "at", "train.epochs": 3, "attack.steps": 10, "attack.step_size": 0.05,
                            "train.schedule": "constant", "train.precision": precision,
                            "out": str(tmp_path / precision)})
        summary = fit(cfg, progress=False)
        rec = evaluate_checkpoint(summary["checkpoint"], device="cpu")
        acc[precision] = rec["metrics"]["pgd_acc"]
    assert acc["fp32"] > 30  # the models did learn to resist the attack
    assert abs(acc["bf16"] - acc["fp32"]) <= 1.0, acc


def test_inference_conv2d_uses_nnpack_only_for_the_narrowest_convs_on_one_thread(monkeypatch) -> None:
    """NNPACK is slower than oneDNN from 6 output channels on, and with more than one torch thread (its thread pool
    fights OpenMP's; docs in anpvs.nn.fast): those convs take conv(x), with the same values."""
    from anpvs.nn import fast

    calls = []
    real = torch.ops.aten._nnpack_spatial_convolution

    class Spy:
        def __call__(self, *args):
            calls.append(args[1].shape[0])
            return real(*args)

    monkeypatch.setattr(torch.ops.aten, "_nnpack_spatial_convolution", Spy())
    x = torch.rand(8, 1, 28, 28)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                for c in (4, 20):
                    conv = fast.FastConv2d(1, c, 5).eval()
                    torch.testing.assert_close(fast.inference_conv2d(conv, x), conv(x), rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(threads)
    if torch.backends.nnpack.is_available():
        assert calls == [4]  # 4 output channels on one thread; not 20, not on two threads


@pytest.mark.parametrize("cin,cout,k,size", [(1, 4, 5, 28), (1, 20, 5, 28), (3, 7, 3, 32), (2, 5, 4, 18), (1, 2, 5, 6)])
def test_conv2d_maxpool2x2_is_conv_then_pool(cin, cout, k, size) -> None:
    """The phase-decomposed conv + 2x2 pool of the compacted networks gives F.max_pool2d(conv(x), 2)."""
    from anpvs.nn import fast

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, k).eval()
    x = torch.rand(5, cin, size, size)
    with torch.no_grad():
        out = fast.conv2d_maxpool2x2(conv, x)
        assert out is not None
        torch.testing.assert_close(out, F.max_pool2d(conv(x), 2), rtol=1e-5, atol=1e-5)


def test_phase_weight_by_hand() -> None:
    """A 3x3 kernel of taps 1..9 on a 1-channel input: phase (0, 0) of the output reads input phase (0, 0) at
    offsets (0,0),(0,1),(1,0),(1,1) with taps w[0,0], w[0,2], w[2,0], w[2,2], and input phase (1, 1) at (0, 0)
    with tap w[1,1]; phase (1, 1) reads phase (0, 0) at (1, 1) with tap w[1,1] (output row 2I+1 reads input row
    2I+1+u; u = 1 is phase 0 at offset 1)."""
    from anpvs.nn import fast

    w = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    pw, pb = fast.phase_weight(w, torch.tensor([0.5]))
    assert pw.shape == (4, 4, 2, 2) and pb.tolist() == [0.5] * 4
    assert pw[0, 0].tolist() == [[1.0, 3.0], [7.0, 9.0]]  # output phase (0,0) from input phase (0,0)
    assert pw[3, 0].tolist() == [[0.0, 0.0], [0.0, 5.0]]  # output phase (1,1) from input phase (0,0)
    assert pw[0, 3].tolist() == [[5.0, 0.0], [0.0, 0.0]]  # output phase (0,0) from input phase (1,1)
    assert pw[3, 3].tolist() == [[1.0, 3.0], [7.0, 9.0]]  # output phase (1,1) from input phase (1,1)
    assert float(pw.sum()) == 4 * float(w.sum())  # every tap lands once in each output phase


def test_conv2d_maxpool2x2_declines_and_follows_weight_changes() -> None:
    """No phase path with a gradient to record, for an odd input, or for a wide input; an in-place change of
    the weights (a new checkpoint loaded into the same module) rebuilds the cached phase kernel."""
    from anpvs.nn import fast

    conv = torch.nn.Conv2d(1, 4, 5).eval()
    x = torch.rand(2, 1, 28, 28)
    assert fast.conv2d_maxpool2x2(conv, x) is None  # conv.weight requires grad and grad mode is on
    with torch.no_grad():
        assert fast.conv2d_maxpool2x2(conv, torch.rand(2, 1, 27, 27)) is None
        assert fast.conv2d_maxpool2x2(torch.nn.Conv2d(8, 4, 5), torch.rand(2, 8, 28, 28)) is None
        with fast.fast_kernels(False):
            assert fast.conv2d_maxpool2x2(conv, x) is None
        before = fast.conv2d_maxpool2x2(conv, x)
        conv.weight.mul_(-1.0)
        after = fast.conv2d_maxpool2x2(conv, x)
        torch.testing.assert_close(after, F.max_pool2d(conv(x), 2), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(before, after)


def test_conv2d_maxpool2x2_of_a_model_built_under_inference_mode() -> None:
    """Inference tensors have no version counter; the phase kernel is then rebuilt, not cached."""
    from anpvs.nn import fast

    with torch.inference_mode():
        conv = torch.nn.Conv2d(1, 4, 5)
        x = torch.rand(2, 1, 28, 28)
        torch.testing.assert_close(fast.conv2d_maxpool2x2(conv, x), F.max_pool2d(conv(x), 2), rtol=1e-5, atol=1e-5)
