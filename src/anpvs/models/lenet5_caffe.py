"""LeNet5-Caffe (20-50-800-500), the MNIST network of the paper (docs/reference.md §3).

conv1 5x5 1->20 -> mask1 -> ReLU -> maxpool2 -> conv2 5x5 20->50 -> mask2 -> ReLU -> maxpool2
-> flatten 800 -> mask3 -> dense3 800->500 -> ReLU -> mask4 -> dense4 500->C.

In the plain model the masks are identities; in ``lenet5_caffe_bbd`` they are Beta-Bernoulli
dropout layers (4 masks: 20 conv1 channels, 50 conv2 channels, the 800 flattened inputs and the
500 hidden units). Both share parameter names, so a Standard checkpoint loads into the masked one.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ..nn.beta_bernoulli import BetaBernoulliDropout
from ..nn.fast import FastConv2d, max_pool2d
from . import register_model
from .base import Classifier, glorot_init_


class LeNet5Caffe(Classifier):
    arch = "lenet5_caffe"
    widths = (20, 50, 800, 500)

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, bbd: bool = False,
                 mask_init: float = -1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = FastConv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.dense3 = nn.Linear(800, 500)
        self.dense4 = nn.Linear(500, num_classes)

        def mask(n: int) -> nn.Module:
            return BetaBernoulliDropout(n, a_init=mask_init) if bbd else nn.Identity()

        self.mask1, self.mask2, self.mask3, self.mask4 = (mask(n) for n in self.widths)
        glorot_init_(self)

    def latent_names(self) -> list[str]:
        return ["conv1", "conv2", "dense3"]

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        z1 = F.relu(self.mask1(self.conv1(x)))
        z2 = F.relu(self.mask2(self.conv2(max_pool2d(z1, 2))))
        h = self.mask3(max_pool2d(z2, 2).flatten(1))
        z3 = F.relu(self.dense3(h))
        logits = self.dense4(self.mask4(z3))
        return logits, [z1, z2, z3]


@register_model("lenet5_caffe")
def lenet5_caffe(num_classes: int = 10, in_channels: int = 1) -> LeNet5Caffe:
    """LeNet5-Caffe without masks (Standard, AT, TRADES, ... rows)."""
    return LeNet5Caffe(num_classes, in_channels)


@register_model("lenet5_caffe_bbd", config_keys={"mask_init": "mask_init"})
def lenet5_caffe_bbd(num_classes: int = 10, in_channels: int = 1, mask_init: float = -1.0) -> LeNet5Caffe:
    """LeNet5-Caffe with 4 Beta-Bernoulli dropout masks (BP, ANP, ANP-VS rows).

    ``mask_init`` is the initial ``a_uc`` of every mask (reference: -1.0, i.e. E[pi] = 0.24).
    """
    return LeNet5Caffe(num_classes, in_channels, bbd=True, mask_init=mask_init)
