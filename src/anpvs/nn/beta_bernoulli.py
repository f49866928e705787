"""Beta-Bernoulli dropout (BBD): the unit-pruning masks of ANP-VS.

BBD is from Lee et al. 2018, "Adaptive Network Sparsification with Dependent Variational
Beta-Bernoulli Dropout" (https://arxiv.org/abs/1805.10896); ANP-VS (Madaan, Shin, Hwang, ICML 2020,
"Adversarial Neural Pruning with Latent Vulnerability Suppression", https://arxiv.org/abs/1908.04355)
uses it unchanged as its pruning mask. Formulas and constants follow docs/reference.md §2.

Each unit k has a keep probability pi_k with prior Beta(alpha, 1) and variational posterior
Kumaraswamy(a_k, b_k). Training multiplies activations by a relaxed Bernoulli(pi_k) sample; evaluation
multiplies them by E[pi_k], zeroed where it is at most ``threshold`` (those units count as pruned).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "UNIT_OFF",
    "UNIT_ON",
    "BetaBernoulliDropout",
    "bbd_layers",
    "kumaraswamy_icdf",
    "kumaraswamy_mean",
    "mask_parameters",
    "total_kl",
]

EULER_GAMMA = 0.577215664901532
# Bounds of the uniform noise used to sample pi (reference: u ~ U(1e-10, 1 - 1e-10)).
_U_EPS = 1e-10
# Additive guard inside the logs of ``_logit`` (reference ``layers.py:logit``).
_LOGIT_EPS = 1e-20
#: ``(a_uc, b_uc)`` of a unit switched off for good: a = 4.5e-5, b = 50, so E[pi] (pruned at any threshold), every
#: training sample pi and hence every relaxed-Bernoulli mask are exactly 0 in float32.
UNIT_OFF = (-10.0, 50.0)
#: ``(a_uc, b_uc)`` of a unit switched on for good: a = 1e8, b = 1, so E[pi] and the training masks are exactly 1
#: in float32 (a fixed 0/1 gate together with :data:`UNIT_OFF`; tests/test_target_sparsity.py checks both).
UNIT_ON = (1e8, 0.5413)


def kumaraswamy_mean(a: Tensor, b: Tensor) -> Tensor:
    """Mean of Kumaraswamy(a, b): ``b * B(1 + 1/a, b)``, computed through ``lgamma`` for stability.

    Elementwise and differentiable in ``a`` and ``b`` (both must be positive).
    """
    inv_a = 1.0 / a
    return b * torch.exp(torch.lgamma(1.0 + inv_a) + torch.lgamma(b) - torch.lgamma(1.0 + inv_a + b))


def kumaraswamy_icdf(u: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Inverse CDF of Kumaraswamy(a, b) at ``u`` in (0, 1): ``(1 - u^(1/b))^(1/a)``.

    ``1 - u^(1/b)`` is computed as ``-expm1(log(u) / b)``, which stays positive for every ``u < 1``. The direct
    form rounds to exactly 0 in float32 when ``u`` is within ``~b * 3e-8`` of 1 (``torch.rand`` draws up to
    ``1 - 2^-24``), and where ``a > 1`` the gradient of ``0^(1/a)`` is then ``inf * 0`` = NaN in ``b``: a long
    ANP-VS run on full MNIST died of it at epoch 15 (docs/decisions.md). Same values elsewhere, to rounding.
    """
    return torch.pow(-torch.expm1(torch.log(u) / b), 1.0 / a)


def _logit(x: Tensor) -> Tensor:
    """The reference code's guarded logit, finite at 0 and 1."""
    return torch.log(x + _LOGIT_EPS) - torch.log(1.0 - x + _LOGIT_EPS)


class BetaBernoulliDropout(nn.Module):
    """Beta-Bernoulli dropout with one learnable keep probability per unit.

    "Adaptive Network Sparsification with Dependent Variational Beta-Bernoulli Dropout"
    [https://arxiv.org/abs/1805.10896], as used by ANP-VS [https://arxiv.org/abs/1908.04355].

    Prior pi ~ Beta(alpha, 1); posterior q(pi) = Kumaraswamy(a, b) with ``a = softplus(max(a_uc, -10))``
    and ``b = softplus(clip(b_uc, -10, 50))``. ``a_uc`` and ``b_uc`` are the mask parameters that
    ANP-VS trains with their own optimizer (see :func:`mask_parameters`).

    Args:
        num_units: number of units (channels of a conv input, features of a dense input).
        a_init: initial ``a_uc``; -1.0 gives a = 0.313, E[pi] = 0.239; 2.0 (VGG conv masks) gives
            a = 2.127, E[pi] = 0.680.
        b_init: initial ``b_uc``; 0.5413 gives b = 1.0.
        alpha: prior Beta(alpha, 1) parameter (paper: 1e-4).
        temperature: temperature of the relaxed Bernoulli used in training (paper: 0.1).
        threshold: units with E[pi] <= threshold are pruned at evaluation (paper: 1e-3).

    Shape:
        input (B, num_units, *) (e.g. (B, F) or (B, C, H, W)); output has the same shape and dtype.
        The mask is shared over all trailing (spatial) positions of a unit.

    Train mode draws one pi per unit per call and an independent relaxed-Bernoulli mask per example;
    eval mode is deterministic: ``x * expected_pi()``.

    >>> bbd = BetaBernoulliDropout(16)
    >>> y = bbd(torch.randn(8, 16, 5, 5))        # stochastic, gradients reach a_uc and b_uc
    >>> _ = bbd.eval(); y = bbd(torch.randn(8, 16, 5, 5))   # deterministic, scaled by E[pi]
    >>> bbd.n_active()
    16
    """

    def __init__(
        self,
        num_units: int,
        *,
        a_init: float = -1.0,
        b_init: float = 0.5413,
        alpha: float = 1e-4,
        temperature: float = 0.1,
        threshold: float = 1e-3,
    ) -> None:
        super().__init__()
        if num_units <= 0:
            raise ValueError(f"num_units must be positive, got {num_units}")
        if alpha <= 0 or temperature <= 0:
            raise ValueError(f"alpha and temperature must be positive, got {alpha}, {temperature}")
        self.num_units = int(num_units)
        self.a_init = float(a_init)
        self.b_init = float(b_init)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.threshold = float(threshold)
        self.a_uc = nn.Parameter(torch.empty(self.num_units))
        self.b_uc = nn.Parameter(torch.empty(self.num_units))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set ``a_uc`` and ``b_uc`` back to their constant initial values."""
        with torch.no_grad():
            self.a_uc.fill_(self.a_init)
            self.b_uc.fill_(self.b_init)

    # -- posterior parameters ----------------------------------------------------------------------
    def _ab(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        a_uc, b_uc = self.a_uc, self.b_uc
        if dtype is not None:
            a_uc, b_uc = a_uc.to(dtype), b_uc.to(dtype)
        a = F.softplus(torch.clamp(a_uc, min=-10.0))
        b = F.softplus(torch.clamp(b_uc, min=-10.0, max=50.0))
        return a, b

    @property
    def a(self) -> Tensor:
        """Kumaraswamy ``a`` per unit (differentiable)."""
        return self._ab()[0]

    @property
    def b(self) -> Tensor:
        """Kumaraswamy ``b`` per unit (differentiable)."""
        return self._ab()[1]

    def _expected_pi(self, dtype: torch.dtype | None = None) -> Tensor:
        a, b = self._ab(dtype)
        e = kumaraswamy_mean(a, b)
        return torch.where(e > self.threshold, e, torch.zeros_like(e))

    def expected_pi(self) -> Tensor:
        """E_q[pi] per unit, set to 0 where it is <= ``threshold``; shape (num_units,)."""
        return self._expected_pi()

    def keep_mask(self) -> Tensor:
        """Boolean mask (num_units,) of the units kept at evaluation: E[pi] > threshold."""
        with torch.no_grad():
            a, b = self._ab()
            return kumaraswamy_mean(a, b) > self.threshold

    def n_active(self) -> int:
        """Number of units kept at evaluation."""
        return int(self.keep_mask().sum().item())

    @torch.no_grad()
    def set_units(self, units: Tensor, value: tuple[float, float]) -> None:
        """Set ``(a_uc, b_uc)`` of the units where the boolean ``units`` (num_units,) is true, e.g. to
        :data:`UNIT_OFF` or :data:`UNIT_ON` (a unit budget cut, :mod:`anpvs.sparsifiers.budget`)."""
        self.a_uc[units] = value[0]
        self.b_uc[units] = value[1]

    # -- regulariser ---------------------------------------------------------------------------------
    def kl(self) -> Tensor:
        """Scalar sum over units of KL(Kumaraswamy(a, b) || Beta(alpha, 1)).

        Closed form of Nalisnick & Smyth (2017), exact for a Beta(alpha, 1) prior:
        ``(1 - alpha/a)(-gamma - digamma(b) - 1/b) + log(a b / alpha) - (b - 1)/b``.
        """
        a, b = self._ab()
        kl = (1.0 - self.alpha / a) * (-EULER_GAMMA - torch.digamma(b) - 1.0 / b) + torch.log(
            a * b / self.alpha
        ) - (b - 1.0) / b
        return kl.sum()

    # -- forward ---------------------------------------------------------------------------------
    def sample_pi(self, *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """One reparameterised draw pi ~ Kumaraswamy(a, b) per unit (inverse CDF), shape (num_units,)."""
        a, b = self._ab(dtype)
        device = a.device if device is None else device
        u = torch.rand(self.num_units, device=device, dtype=a.dtype)
        u = torch.clamp(u * (1.0 - 2.0 * _U_EPS) + _U_EPS, _U_EPS, 1.0 - _U_EPS)
        return kumaraswamy_icdf(u, a, b)

    def sample_mask(self, batch_size: int, *, device: torch.device | None = None,
                    dtype: torch.dtype | None = None) -> Tensor:
        """Training mask (batch_size, num_units): relaxed Bernoulli(pi) at ``temperature``, pi shared."""
        pi = self.sample_pi(device=device, dtype=dtype)
        u = torch.rand(batch_size, self.num_units, device=pi.device, dtype=pi.dtype)
        return torch.sigmoid((_logit(u) + _logit(pi)) / self.temperature)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_units:
            raise ValueError(
                f"expected input of shape (B, {self.num_units}, ...), got {tuple(x.shape)}"
            )
        # Half-precision inputs: the 1e-20 guards and u-bounds need at least float32.
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        if self.training:
            z = self.sample_mask(x.shape[0], device=x.device, dtype=compute_dtype)
        else:
            z = self._expected_pi(compute_dtype).unsqueeze(0)
        z = z.reshape(z.shape[0], self.num_units, *([1] * (x.dim() - 2))).to(x.dtype)
        return x * z

    def extra_repr(self) -> str:
        return (
            f"num_units={self.num_units}, active={self.n_active()}, alpha={self.alpha:g}, "
            f"temperature={self.temperature:g}, threshold={self.threshold:g}"
        )


def bbd_layers(model: nn.Module) -> list[BetaBernoulliDropout]:
    """All :class:`BetaBernoulliDropout` submodules of ``model`` in module order (``model`` included)."""
    return [m for m in model.modules() if isinstance(m, BetaBernoulliDropout)]


def total_kl(model: nn.Module) -> Tensor:
    """Sum of :meth:`BetaBernoulliDropout.kl` over all BBD layers; a zero scalar if there are none."""
    layers = bbd_layers(model)
    if not layers:
        p = next(model.parameters(), None)
        return torch.zeros((), device=None if p is None else p.device)
    kl = layers[0].kl()
    for m in layers[1:]:
        kl = kl + m.kl()
    return kl


def mask_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The mask parameters ``[a_uc, b_uc]`` of every BBD layer, in module order."""
    return [p for m in bbd_layers(model) for p in (m.a_uc, m.b_uc)]
