"""Pretrained AT: Hendrycks, Lee, Mazeika, "Using Pre-Training Can Improve Model Robustness and
Uncertainty" (ICML 2019, https://arxiv.org/abs/1901.09960). Paper row "Pretrained AT".

Official recipe (``hendrycks/pre-training``, ``robustness/adversarial``): adversarially pre-train a
WRN-28-10 on downsampled (32x32) ImageNet, replace the classifier head, then *adversarially
fine-tune* on CIFAR-10/100 for 5 epochs with SGD-Nesterov (momentum 0.9), lr 1e-3 with a cosine
schedule, weight decay 5e-4, batch 128, PGD-10 (eps 8/255, step 2/255) on the Madry loss.

This method is the fine-tuning stage: the loss of the AT row (mixed ``(CE + 2 CE_adv) / 3`` by
default as every adversarial row of this project; ``method.adv_loss=madry`` is the official
adversarial-only loss) with the ``pretrained_at`` preset giving the recipe above
(``train.optimizer=sgd``, ``train.schedule=cosine``, ``train.lr=1e-3``, ``train.weight_decay=5e-4``,
``train.batch_size=128``, ``train.epochs=5``, ``attack.steps=10``; eps and step size stay the
dataset's). The pre-training is a separate run given by ``init``.

There is no downsampled ImageNet here (and no ImageNet counterpart of MNIST at all), and how the
ANP-VS authors pre-trained LeNet5-Caffe / VGG-16 is unknown (docs/reference.md §8). Two adaptations,
chosen by the ``init`` checkpoint:

(a) pre-training on a *different* dataset of the same input shape: Fashion-MNIST -> MNIST,
    CIFAR-100 -> CIFAR-10 and CIFAR-10 -> CIFAR-100, with AT (the official choice) or Standard
    training. A head trained for another number of classes is re-initialised (``method.reinit_head``,
    on by this preset; off, a mismatched head is an error). Heads of the same shape (Fashion-MNIST
    -> MNIST, 10 -> 10) are loaded and re-learned by the fine-tuning;
(b) pre-training on the *same* data: an ``at`` (or ``standard``) run on the target dataset, then
    the 5-epoch fine-tuning.

On MNIST note that PGD-10 with the preset's step 0.01 cannot travel across the eps = 0.3 ball;
the official step is 2.5 eps / steps (``--set attack.step_size=0.075``).

Example, adaptation (a) on MNIST::

    anpvs train --dataset fashion_mnist --data-dir /usr/share/datasets/fashion-mnist --method at --out runs/fm_at
    anpvs train --dataset mnist --method pretrained_at --init runs/fm_at/checkpoint.pt --out runs/pre_at
"""

from __future__ import annotations

from .adversarial import Adversarial
from .base import register_method


@register_method("pretrained_at")
class PretrainedAT(Adversarial):
    """Adversarial fine-tuning of a pre-trained checkpoint (``init``) with the Hendrycks et al. recipe."""

    wants_init = True
    # the fine-tuning recipe of Hendrycks et al. 2019 (SGD-Nesterov, cosine, 5 epochs, PGD-10)
    preset = {"train.optimizer": "sgd", "train.schedule": "cosine", "train.lr": 1e-3, "train.weight_decay": 5e-4,
              "train.batch_size": 128, "train.epochs": 5, "attack.steps": 10, "method.reinit_head": True}
