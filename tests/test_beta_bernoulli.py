"""Tests of Beta-Bernoulli dropout (docs/reference.md §2; Lee et al. 2018, arXiv 1805.10896)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from anpvs.nn import BetaBernoulliDropout, bbd_layers, kumaraswamy_icdf, kumaraswamy_mean, mask_parameters, total_kl


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _inv_softplus(v: float) -> float:
    return math.log(math.expm1(v))


def _bbd_with(a: float, b: float, num_units: int = 1, **kwargs: float) -> BetaBernoulliDropout:
    """A float64 layer whose units all have Kumaraswamy parameters (a, b)."""
    m = BetaBernoulliDropout(num_units, a_init=_inv_softplus(a), b_init=_inv_softplus(b), **kwargs).double()
    torch.testing.assert_close(m.a, torch.full((num_units,), a, dtype=torch.float64))
    torch.testing.assert_close(m.b, torch.full((num_units,), b, dtype=torch.float64))
    return m


# ---------------------------------------------------------------------------------------------------
# Formulas
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1e-4, 0.5])
@pytest.mark.parametrize("b", [1.0, 2.0])
@pytest.mark.parametrize("a", [0.3, 1.0, 2.1])
def test_kl_matches_monte_carlo(a: float, b: float, alpha: float) -> None:
    n = 1_000_000
    g = torch.Generator().manual_seed(1234)
    u = torch.rand(n, generator=g, dtype=torch.float64).clamp_min(1e-300)
    # Inverse CDF of Kumaraswamy(a, b): pi = (1 - (1 - u)^(1/b))^(1/a). Work in logs so that tiny pi
    # (a = 0.3 puts much mass near 0) stays exact; note 1 - pi^a = (1 - u)^(1/b).
    log1m_pi_a = torch.log1p(-u) / b
    log_pi = torch.log(-torch.expm1(log1m_pi_a)) / a
    log_q = math.log(a * b) + (a - 1) * log_pi + (b - 1) * log1m_pi_a
    log_p = math.log(alpha) + (alpha - 1) * log_pi  # Beta(alpha, 1) density: alpha * pi^(alpha - 1)
    diff = log_q - log_p  # log(alpha) is a constant shift: it moves the mean, not the standard error
    mc, se = diff.mean().item(), (diff.std() / math.sqrt(n)).item()

    kl = _bbd_with(a, b, alpha=alpha).kl().item()
    assert math.isfinite(kl)
    assert abs(kl - mc) < 5 * se + 1e-9, (kl, mc, se)


def test_kl_sums_over_units() -> None:
    m = _bbd_with(0.7, 1.3, num_units=5)
    one = _bbd_with(0.7, 1.3, num_units=1)
    torch.testing.assert_close(m.kl(), 5 * one.kl())
    assert m.kl().shape == ()


@pytest.mark.parametrize("b", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("a", [0.313, 1.0, 2.127, 5.0])
def test_kumaraswamy_mean_matches_quadrature(a: float, b: float) -> None:
    # E[pi] = int_0^1 (1 - F(p)) dp with survival function (1 - p^a)^b; a fine trapezoid grid is
    # accurate to ~1e-8 even with the p^a cusp at 0 and the (1 - p)^b cusp at 1.
    p = torch.linspace(0.0, 1.0, 2_000_001, dtype=torch.float64)
    numeric = torch.trapezoid((1.0 - p**a) ** b, p).item()
    ours = kumaraswamy_mean(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert ours.item() == pytest.approx(numeric, rel=1e-6, abs=1e-8)
    if a == 1.0:  # Kumaraswamy(1, b) = Beta(1, b)
        assert ours.item() == pytest.approx(1.0 / (1.0 + b), rel=1e-12)


def test_kumaraswamy_mean_gradcheck() -> None:
    a = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.7, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kumaraswamy_mean, (a, b))


@pytest.mark.parametrize(
    ("a_init", "a", "epi"), [(-1.0, 0.3133, 0.2385), (2.0, 2.1269, 0.6802)]
)
def test_init_values(a_init: float, a: float, epi: float) -> None:
    m = BetaBernoulliDropout(7, a_init=a_init)
    assert m.a_uc.shape == m.b_uc.shape == (7,)
    torch.testing.assert_close(m.a, torch.full((7,), a), atol=1e-4, rtol=0)
    torch.testing.assert_close(m.b, torch.ones(7), atol=1e-4, rtol=0)
    torch.testing.assert_close(m.expected_pi(), torch.full((7,), epi), atol=1e-4, rtol=0)
    assert m.n_active() == 7 and m.keep_mask().all()


def test_parameter_clamps() -> None:
    m = BetaBernoulliDropout(3)
    with torch.no_grad():
        m.a_uc.copy_(torch.tensor([-50.0, -10.0, 0.0]))
        m.b_uc.copy_(torch.tensor([-50.0, 60.0, 50.0]))
    sp = nn.functional.softplus
    torch.testing.assert_close(m.a, sp(torch.tensor([-10.0, -10.0, 0.0])))
    torch.testing.assert_close(m.b, sp(torch.tensor([-10.0, 50.0, 50.0])))
    assert torch.isfinite(m.kl())


def test_sample_pi_is_kumaraswamy() -> None:
    # One sample per unit; 200k identical units give 200k i.i.d. draws of pi ~ Kumaraswamy(a, b).
    a, b, n = 0.6, 1.8, 200_000
    m = _bbd_with(a, b, num_units=n)
    pi = m.sample_pi()
    assert pi.shape == (n,) and pi.dtype == torch.float64
    mean = kumaraswamy_mean(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert abs(pi.mean() - mean).item() < 5 * (pi.std() / math.sqrt(n)).item()
    for x in (0.01, 0.1, 0.3, 0.7):
        cdf = 1.0 - (1.0 - x**a) ** b
        assert abs((pi <= x).double().mean().item() - cdf) < 5 * math.sqrt(cdf * (1 - cdf) / n)


def test_pi_and_its_gradient_stay_finite_for_a_draw_next_to_one() -> None:
    # float32 u = 1 - 2^-24 (the largest torch.rand draws): 1 - u^(1/b) is exactly 0 in the direct form, and with
    # a > 1 the gradient in b was NaN (it killed a 20-epoch ANP-VS run; unit a = 13.8, b = 2.29)
    a_uc = torch.tensor([13.81, 5.0, -3.0], requires_grad=True)
    b_uc = torch.tensor([2.183, 5.0, 3.0], requires_grad=True)
    a, b = nn.functional.softplus(a_uc), nn.functional.softplus(b_uc)
    u = torch.full((3,), 1.0 - 2.0**-24)
    direct = torch.pow(1.0 - torch.pow(u, 1.0 / b), 1.0 / a)
    assert direct[1] == 0  # the failure the stable form avoids
    pi = kumaraswamy_icdf(u, a, b)
    assert pi[0] > 0 and pi[1] > 0 and torch.all((pi >= 0) & (pi < 1))  # a < 1 may underflow to 0, as exact
    # the value in float64 from the direct formula (exact enough there)
    exact = torch.pow(1.0 - torch.pow(u.double(), 1.0 / b.double()), 1.0 / a.double())
    torch.testing.assert_close(pi.double(), exact, rtol=1e-4, atol=1e-30)
    torch.sigmoid(torch.log(pi + 1e-20) / 0.1).sum().backward()  # the mask's logit, as in sample_mask
    assert torch.isfinite(a_uc.grad).all() and torch.isfinite(b_uc.grad).all()


def test_stable_inverse_cdf_equals_the_direct_one_away_from_the_edge() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(10_000, generator=g) * 0.999 + 1e-4
    a, b = torch.rand(10_000, generator=g) * 5 + 0.05, torch.rand(10_000, generator=g) * 20 + 0.05
    torch.testing.assert_close(kumaraswamy_icdf(u, a, b), torch.pow(1.0 - torch.pow(u, 1.0 / b), 1.0 / a),
                               rtol=1e-4, atol=1e-6)


def test_pathwise_gradient_of_pi_is_unbiased() -> None:
    # All units share (a_uc, b_uc), so sum_k d mean(pi)/d a_uc_k estimates dE[pi]/d a_uc.
    n = 200_000
    m = _bbd_with(0.8, 1.5, num_units=n)
    m.sample_pi().mean().backward()
    a_uc = torch.tensor(_inv_softplus(0.8), dtype=torch.float64, requires_grad=True)
    b_uc = torch.tensor(_inv_softplus(1.5), dtype=torch.float64, requires_grad=True)
    exact_a, exact_b = torch.autograd.grad(
        kumaraswamy_mean(nn.functional.softplus(a_uc), nn.functional.softplus(b_uc)), (a_uc, b_uc)
    )
    for grad, exact in ((m.a_uc.grad, exact_a), (m.b_uc.grad, exact_b)):
        est, se = grad.sum().item(), (grad.std() * math.sqrt(n)).item()
        assert abs(est - exact.item()) < 5 * se, (est, exact.item(), se)


# ---------------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 4, 3)])
def test_eval_forward_is_deterministic_expectation(shape: tuple[int, ...]) -> None:
    m = BetaBernoulliDropout(5, a_init=0.5).eval()
    with torch.no_grad():
        m.a_uc.add_(torch.randn(5))
    x = torch.randn(shape)
    y1, y2 = m(x), m(x)
    assert y1.shape == x.shape
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    view = (1, 5) + (1,) * (len(shape) - 2)
    torch.testing.assert_close(y1, x * m.expected_pi().view(view))


def test_threshold_prunes_units() -> None:
    m = BetaBernoulliDropout(6, a_init=-1.0).eval()
    with torch.no_grad():
        m.a_uc[[1, 4]] = -30.0  # a = softplus(-10) = 4.5e-5, b = 1 -> E[pi] = a / (1 + a) < 1e-3
    epi = m.expected_pi()
    assert (epi[[1, 4]] == 0).all() and (epi[[0, 2, 3, 5]] > 1e-3).all()
    assert m.keep_mask().tolist() == [True, False, True, True, False, True]
    assert m.n_active() == 4
    y = m(torch.randn(3, 6, 2, 2))
    assert (y[:, [1, 4]] == 0).all() and (y[:, [0, 2, 3, 5]] != 0).all()
    assert "num_units=6" in repr(m) and "active=4" in repr(m)


def test_expected_pi_differentiable_where_kept() -> None:
    m = BetaBernoulliDropout(4)
    with torch.no_grad():
        m.a_uc[0] = -30.0
    m.expected_pi().sum().backward()
    assert m.a_uc.grad[0] == 0 and (m.a_uc.grad[1:] != 0).all()
    assert (m.b_uc.grad[1:] != 0).all()


@pytest.mark.parametrize("shape", [(64, 8), (64, 8, 4, 3)])
def test_train_forward_stochastic_bounded_and_shaped(shape: tuple[int, ...]) -> None:
    m = BetaBernoulliDropout(8, a_init=1.0).train()
    x = torch.randn(shape)
    y1, y2 = m(x), m(x)
    assert y1.shape == x.shape and y1.dtype == x.dtype
    assert not torch.equal(y1, y2)
    z = y1 / x  # the mask, elementwise
    assert (z >= 0).all() and (z <= 1 + 1e-6).all()
    if len(shape) == 4:  # one mask value per (example, channel), shared over positions
        assert torch.allclose(z, z[:, :, :1, :1].expand_as(z), atol=1e-6)
    # Different examples get different masks (per-example relaxed Bernoulli).
    assert not torch.allclose(z[0], z[1])


def test_train_forward_respects_manual_seed() -> None:
    m = BetaBernoulliDropout(8)
    x = torch.randn(4, 8)
    torch.manual_seed(7)
    y1 = m(x)
    torch.manual_seed(7)
    y2 = m(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)


def test_train_gradients_reach_mask_parameters() -> None:
    m = BetaBernoulliDropout(8).train()
    x = torch.randn(64, 8, 3, 3)
    (m(x) * torch.randn_like(x)).sum().backward()
    for p in (m.a_uc, m.b_uc):
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert (p.grad != 0).any()


def test_kl_is_differentiable() -> None:
    m = BetaBernoulliDropout(5, a_init=0.3)
    m.kl().backward()
    for p in (m.a_uc, m.b_uc):
        assert p.grad is not None and torch.isfinite(p.grad).all() and (p.grad != 0).all()


@pytest.mark.parametrize("train", [True, False])
def test_dtype_follows_input(train: bool) -> None:
    m = BetaBernoulliDropout(4).train(train)  # float32 parameters
    for dtype in (torch.float64, torch.bfloat16):
        x = torch.randn(3, 4, 2, 2, dtype=dtype)
        y = m(x)
        assert y.dtype == dtype and y.device == x.device and torch.isfinite(y).all()
    x64 = torch.randn(3, 4, dtype=torch.float64)
    m(x64).sum().backward()
    assert m.a_uc.grad is not None and m.a_uc.grad.dtype == torch.float32
    assert m.double()(x64).dtype == torch.float64


def test_rejects_wrong_shape() -> None:
    m = BetaBernoulliDropout(4)
    with pytest.raises(ValueError):
        m(torch.randn(2, 5))
    with pytest.raises(ValueError):
        m(torch.randn(4))


# ---------------------------------------------------------------------------------------------------
# Model helpers
# ---------------------------------------------------------------------------------------------------
def test_model_helpers() -> None:
    first, second = BetaBernoulliDropout(4), BetaBernoulliDropout(3, a_init=2.0)
    model = nn.Sequential(nn.Linear(2, 4), first, nn.ReLU(), nn.Sequential(nn.Linear(4, 3), second))
    assert bbd_layers(model) == [first, second]
    params = mask_parameters(model)
    assert [id(p) for p in params] == [id(first.a_uc), id(first.b_uc), id(second.a_uc), id(second.b_uc)]
    kl = total_kl(model)
    torch.testing.assert_close(kl, first.kl() + second.kl())
    kl.backward()
    assert all(p.grad is not None for p in params)
    assert bbd_layers(first) == [first]


def test_total_kl_without_bbd_is_zero() -> None:
    kl = total_kl(nn.Linear(2, 2))
    assert kl.shape == () and kl.item() == 0.0
    assert mask_parameters(nn.Linear(2, 2)) == [] and bbd_layers(nn.ReLU()) == []
