"""Mean-field Gaussian (Bayes-by-backprop) conv and linear layers for the AT BNN baseline.

Adv-BNN: Liu, Li, Chen, Hsieh, "Adv-BNN: Improved Adversarial Defense through Robust Bayesian
Neural Network" (ICLR 2019, https://arxiv.org/abs/1810.01279), as the ANP-VS reference implements
it (``ConvBayes`` / ``DenseBayes`` in ``divyam3897/ANP_VS``, docs/reference.md §8).

Every weight and bias entry has a posterior ``N(mu, sigma^2)`` with ``sigma = softplus(rho)`` and a
prior ``N(0, sigma_p^2)``. ``mu`` *is* the layer's ordinary ``weight`` / ``bias`` (the layers subclass
:class:`torch.nn.Conv2d` / :class:`torch.nn.Linear`), so weight statistics, checkpoints and pruning
metrics see the mean network; ``rho`` is stored in the extra parameters ``weight_rho`` / ``bias_rho``.

When weights are sampled:

* train mode: always, ``W = mu + softplus(rho) * eps`` with ``eps ~ N(0, I)``, one draw of ``eps``
  per forward call, shared by every example of the batch (no local reparameterisation);
* eval mode: the mean weights ``mu`` (deterministic, as the reference's ``train=False`` path) unless
  :func:`set_sampling` switched sampling on, for EOT attacks and sample ensembles.

The reference draws ``eps`` once per ``session.run``, so its clean and adversarial training passes
share one weight sample; :func:`one_sample` does the same here (AT BNN uses it unless
``method.bnn_shared_sample=False``, which draws a fresh sample for every forward call).

Defaults of the reference (docs/reference.md §8): LeNet5-Caffe ``sigma_p = 1.0``, ``rho = -3``
(sigma = 0.049); VGG-16 ``sigma_p = 0.1``, ``rho = -5`` (sigma = 0.0067).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fast import FastConv2d

__all__ = ["BayesConv2d", "BayesLinear", "bayes_layers", "bayesianize_", "gaussian_kl", "one_sample",
           "set_sampling", "total_bayes_kl"]


def gaussian_kl(mu: Tensor, sigma: Tensor, sigma_prior: float) -> Tensor:
    """Elementwise ``KL(N(mu, sigma^2) || N(0, sigma_prior^2))``.

    ``log(sigma_p / sigma) + (sigma^2 + mu^2) / (2 sigma_p^2) - 1/2``.
    """
    return math.log(sigma_prior) - torch.log(sigma) + (sigma.square() + mu.square()) / (2.0 * sigma_prior ** 2) - 0.5


class _BayesMixin:
    """Shared state and logic of the Bayesian layers (``weight`` / ``bias`` are the posterior means)."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    training: bool

    def _init_bayes(self, sigma_prior: float, rho_init: float) -> None:
        if sigma_prior <= 0:
            raise ValueError(f"sigma_prior must be > 0, got {sigma_prior}")
        self.sigma_prior = float(sigma_prior)
        self.rho_init = float(rho_init)
        #: sample weights in eval mode too (see :func:`set_sampling`); train mode always samples
        self.sample_in_eval = False
        self.weight_rho = nn.Parameter(torch.full_like(self.weight, self.rho_init))
        self.bias_rho = None if self.bias is None else nn.Parameter(torch.full_like(self.bias, self.rho_init))
        #: standard-normal noise of the weight and bias held fixed by :func:`one_sample` (None: draw per call)
        self._noise: tuple[Tensor, Tensor | None] | None = None

    def reset_mean_(self) -> None:
        """Reference init of the means: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases."""
        fan_in = self.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    @property
    def sampling(self) -> bool:
        return self.training or self.sample_in_eval

    def sampled_parameters(self) -> tuple[Tensor, Tensor | None]:
        """``(W, b)`` of this forward call: a fresh sample when :attr:`sampling`, the means otherwise."""
        if not self.sampling:
            return self.weight, self.bias
        noise_w, noise_b = self._noise or self.draw_noise()
        w = self.weight + F.softplus(self.weight_rho) * noise_w
        b = None
        if self.bias is not None:
            b = self.bias + F.softplus(self.bias_rho) * noise_b
        return w, b

    def draw_noise(self) -> tuple[Tensor, Tensor | None]:
        """Fresh ``eps ~ N(0, I)`` for the weight and the bias."""
        return torch.randn_like(self.weight), None if self.bias is None else torch.randn_like(self.bias)

    def kl(self) -> Tensor:
        """Sum over weights and biases of ``KL(q || prior)`` (closed form, differentiable in mu and rho)."""
        kl = gaussian_kl(self.weight, F.softplus(self.weight_rho), self.sigma_prior).sum()
        if self.bias is not None:
            kl = kl + gaussian_kl(self.bias, F.softplus(self.bias_rho), self.sigma_prior).sum()
        return kl

    def _bayes_repr(self) -> str:
        return f"sigma_prior={self.sigma_prior:g}, rho_init={self.rho_init:g}, sample_in_eval={self.sample_in_eval}"


class BayesConv2d(_BayesMixin, nn.Conv2d):
    """Conv2d with a mean-field Gaussian posterior over its weights and bias (Adv-BNN).

    Same constructor as :class:`torch.nn.Conv2d` plus ``sigma_prior`` and ``rho_init`` (keyword-only).

    Shape: as :class:`torch.nn.Conv2d`.

    >>> conv = BayesConv2d(1, 4, 3, sigma_prior=1.0, rho_init=-3.0)
    >>> y = conv(torch.rand(2, 1, 8, 8))          # train mode: sampled weights
    >>> _ = conv.eval(); y = conv(torch.rand(2, 1, 8, 8))   # eval: mean weights
    >>> conv.kl().shape
    torch.Size([])
    """

    def __init__(self, *args, sigma_prior: float = 1.0, rho_init: float = -3.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_bayes(sigma_prior, rho_init)

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.sampled_parameters()
        return self._conv_forward(x, w, b)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._bayes_repr()}"


class BayesLinear(_BayesMixin, nn.Linear):
    """Linear layer with a mean-field Gaussian posterior over its weights and bias (Adv-BNN).

    Same constructor as :class:`torch.nn.Linear` plus ``sigma_prior`` and ``rho_init`` (keyword-only).

    Shape: as :class:`torch.nn.Linear`.

    >>> fc = BayesLinear(8, 3, sigma_prior=1.0, rho_init=-3.0)
    >>> fc(torch.rand(2, 8)).shape
    torch.Size([2, 3])
    """

    def __init__(self, *args, sigma_prior: float = 1.0, rho_init: float = -3.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_bayes(sigma_prior, rho_init)

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.sampled_parameters()
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._bayes_repr()}"


def _bayes_copy(m: nn.Module, sigma_prior: float, rho_init: float) -> nn.Module:
    """A Bayesian layer with the hyperparameters of ``m`` and reference-initialised means."""
    if isinstance(m, nn.Conv2d):
        new: nn.Module = BayesConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                                     padding=m.padding, dilation=m.dilation, groups=m.groups,
                                     bias=m.bias is not None, padding_mode=m.padding_mode,
                                     sigma_prior=sigma_prior, rho_init=rho_init)
    else:
        new = BayesLinear(m.in_features, m.out_features, bias=m.bias is not None,
                          sigma_prior=sigma_prior, rho_init=rho_init)
    new.reset_mean_()
    return new.to(device=m.weight.device, dtype=m.weight.dtype)


def bayesianize_(model: nn.Module, *, sigma_prior: float, rho_init: float) -> nn.Module:
    """Replace every plain ``nn.Conv2d`` / ``nn.Linear`` of ``model`` (in place) by its Bayesian twin.

    Module names, and therefore the architecture's ``forward`` / ``forward_intermediates``, are kept;
    the means are re-initialised as the reference does (:meth:`_BayesMixin.reset_mean_`). Returns ``model``.
    """
    for name, child in list(model.named_children()):
        if isinstance(child, (BayesConv2d, BayesLinear)):
            continue
        if type(child) in (nn.Conv2d, FastConv2d, nn.Linear):
            setattr(model, name, _bayes_copy(child, sigma_prior, rho_init))
        else:
            bayesianize_(child, sigma_prior=sigma_prior, rho_init=rho_init)
    return model


def bayes_layers(model: nn.Module) -> list[BayesConv2d | BayesLinear]:
    """The Bayesian layers of ``model`` in module order."""
    return [m for m in model.modules() if isinstance(m, (BayesConv2d, BayesLinear))]


def set_sampling(model: nn.Module, enabled: bool) -> int:
    """Sample weights in eval mode too (``enabled=True``) or use the mean weights there (``False``).

    Train mode always samples. Use it for EOT attacks (``PGD(eot=n)``) and sample ensembles on an
    eval-mode model. Returns the number of Bayesian layers switched (0: ``model`` is not Bayesian).
    """
    layers = bayes_layers(model)
    for m in layers:
        m.sample_in_eval = bool(enabled)
    return len(layers)


@contextlib.contextmanager
def one_sample(model: nn.Module) -> Iterator[None]:
    """Inside the block, every sampling forward of ``model`` uses one weight sample drawn on entry.

    The reference's AT BNN draws its noise once per training step, so the clean and the adversarial
    pass see the same weights; wrap both forwards in this block to do the same. Gradients still flow
    to ``mu`` and ``rho`` through ``W = mu + softplus(rho) * eps``. Nested blocks keep the outer sample;
    the per-call draws come back on exit, also when the block raises.
    """
    layers = [m for m in bayes_layers(model) if m._noise is None]
    for m in layers:
        m._noise = m.draw_noise()
    try:
        yield
    finally:
        for m in layers:
            m._noise = None


def total_bayes_kl(model: nn.Module) -> Tensor:
    """Sum of the closed-form KL of every Bayesian layer of ``model`` (a 0-d tensor; 0 if none)."""
    layers = bayes_layers(model)
    if not layers:
        p = next(model.parameters(), None)
        return torch.zeros((), device=None if p is None else p.device)
    return torch.stack([m.kl() for m in layers]).sum()
