"""Bayesian (mean-field Gaussian) LeNet5-Caffe and VGG-16 for the AT BNN row (docs/reference.md §8).

Each is the plain architecture (:class:`LeNet5Caffe`, :class:`VGG16`) with every conv / linear layer
swapped for its :mod:`anpvs.nn.bayes` twin, so ``arch``, parameter names of the means, ``forward``
and the latents of ``forward_intermediates`` are those of the plain model. BN layers stay
deterministic.

Differences from the reference ``LeNetConvBayes`` / ``VGGBayes``:

* no ReLU on the logits (the reference applies one, docs/reference.md §7.7, which caps the logits at >= 0);
* VGG's BN affine parameters are ordinary (point-estimate) parameters; the reference makes them
  Bayesian too (``BatchNormBayes``, whose ``gamma`` means start at U(0, 1)) and adds their KL.
"""

from __future__ import annotations

from ..nn.bayes import bayesianize_
from . import register_model
from .lenet5_caffe import LeNet5Caffe
from .vgg16 import VGG16


@register_model("lenet5_caffe_bnn")
def lenet5_caffe_bnn(num_classes: int = 10, in_channels: int = 1, sigma_prior: float = 1.0,
                     rho_init: float = -3.0) -> LeNet5Caffe:
    """LeNet5-Caffe with Gaussian weights (AT BNN row): prior N(0, 1), sigma = softplus(-3) at init."""
    return bayesianize_(LeNet5Caffe(num_classes, in_channels), sigma_prior=sigma_prior, rho_init=rho_init)


@register_model("vgg16_bnn", config_keys={"width": "width", "dropout_scale": "dropout_scale"})
def vgg16_bnn(num_classes: int = 10, in_channels: int = 3, sigma_prior: float = 0.1,
              rho_init: float = -5.0, width: float = 1.0, dropout_scale: float = 1.0) -> VGG16:
    """VGG-16 with Gaussian conv / dense weights (AT BNN row): prior N(0, 0.1^2), sigma = softplus(-5)."""
    return bayesianize_(VGG16(num_classes, in_channels, width=width, dropout_scale=dropout_scale),
                        sigma_prior=sigma_prior, rho_init=rho_init)
