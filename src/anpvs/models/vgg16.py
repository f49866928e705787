"""VGG-16, CIFAR variant of the paper (docs/reference.md §3).

Each of the 13 blocks is conv3x3 (SAME, bias) -> mask -> BN -> ReLU -> dropout or maxpool 2x2;
the head is flatten (512) -> [dropout 0.5, plain model only] -> mask14 -> dense14 512->512 ->
BN14 -> ReLU -> [dropout 0.5, plain model only] -> mask15 -> dense15 512->C.

The masks sit *before* BN as in the reference (docs/decisions.md item 6): a pruned channel then outputs the
constant ``ReLU(beta - gamma * mu / sqrt(var + eps))``, which compaction folds into the next bias.
BN uses the reference's momentum 0.99 (PyTorch ``momentum=0.01``) and eps 1e-3. Normalization
with the CIFAR channel statistics is the first layer, so the model takes [0, 1] pixels.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ..nn.beta_bernoulli import BetaBernoulliDropout
from . import register_model
from .base import Classifier, InputNormalize, glorot_init_

#: widths of the 13 conv layers; what follows each block: a dropout rate or "M" (maxpool)
CONV_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
AFTER_BLOCK = (0.3, "M", 0.4, "M", 0.4, 0.4, "M", 0.4, 0.4, "M", 0.4, 0.4, "M")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def scaled_widths(width: float) -> tuple[int, ...]:
    """The 13 conv widths and the 512-unit head of VGG-16 times ``width`` (rounded, at least 1): the 15 unit
    counts of its masks. ``width`` 1 is the paper's network; CPU protocols use a narrower one."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 1 / 64 <= width <= 4:
        raise ValueError(f"width must be a number in [1/64, 4] (got {width!r})")
    return tuple(max(1, round(c * width)) for c in (*CONV_WIDTHS, 512, 512))


class VGG16(Classifier):
    arch = "vgg16"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, *, bbd: bool = False,
                 conv_mask_init: float = 2.0, head_mask_init: float = -1.0, width: float = 1.0,
                 dropout_scale: float = 1.0) -> None:
        super().__init__()
        if isinstance(dropout_scale, bool) or not isinstance(dropout_scale, (int, float)) \
                or not 0 <= dropout_scale <= 2:
            raise ValueError(f"dropout_scale must be a number in [0, 2] (got {dropout_scale!r})")
        #: what follows each conv block: its dropout rate (the paper's times ``dropout_scale``) or "M" (maxpool)
        self.after_block = tuple(a if a == "M" else min(0.9, a * dropout_scale) for a in AFTER_BLOCK)
        units = scaled_widths(width)
        #: unit counts behind the 15 masks (13 conv widths, dense14's inputs and outputs), in mask order
        self.unit_widths = units
        self.num_classes = num_classes
        mean, std = (CIFAR_MEAN, CIFAR_STD) if in_channels == 3 else ((0.5,) * in_channels, (0.25,) * in_channels)
        self.normalize = InputNormalize(mean, std)
        self.convs = nn.ModuleList()
        self.masks = nn.ModuleList()
        self.bns = nn.ModuleList()
        c_in = in_channels
        for c_out in units[:13]:
            self.convs.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            self.masks.append(BetaBernoulliDropout(c_out, a_init=conv_mask_init) if bbd else nn.Identity())
            self.bns.append(nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01))
            c_in = c_out
        hidden = units[14]
        # The head dropouts exist only in the plain ("base") network, as in the reference.
        self.head_dropout = 0.0 if bbd else min(0.9, 0.5 * dropout_scale)
        self.mask14 = BetaBernoulliDropout(c_in, a_init=head_mask_init) if bbd else nn.Identity()
        self.dense14 = nn.Linear(c_in, hidden)
        self.bn14 = nn.BatchNorm1d(hidden, eps=1e-3, momentum=0.01)
        self.mask15 = BetaBernoulliDropout(hidden, a_init=head_mask_init) if bbd else nn.Identity()
        self.dense15 = nn.Linear(hidden, num_classes)
        glorot_init_(self)

    def latent_names(self) -> list[str]:
        return [f"conv{i + 1}" for i in range(13)] + ["dense14_linear", "dense14"]

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        latents = []
        h = self.normalize(x)
        for conv, mask, bn, after in zip(self.convs, self.masks, self.bns, self.after_block, strict=True):
            h = F.relu(bn(mask(conv(h))))
            latents.append(h)
            h = F.max_pool2d(h, 2) if after == "M" else F.dropout(h, after, self.training)
        h = F.dropout(h.flatten(1), self.head_dropout, self.training)
        lin = self.dense14(self.mask14(h))
        latents.append(lin)  # the reference records dense14's pre-BN output as well (docs/reference.md §1)
        h = F.relu(self.bn14(lin))
        latents.append(h)
        h = F.dropout(h, self.head_dropout, self.training)
        return self.dense15(self.mask15(h)), latents


_VGG_KEYS = {"width": "width", "dropout_scale": "dropout_scale"}


@register_model("vgg16", config_keys=_VGG_KEYS)
def vgg16(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, dropout_scale: float = 1.0) -> VGG16:
    """VGG-16 (CIFAR) without masks: Standard, AT, TRADES, ... rows. ``width`` scales every layer's width,
    ``dropout_scale`` every dropout rate (1: the paper's; 0: none)."""
    return VGG16(num_classes, in_channels, width=width, dropout_scale=dropout_scale)


@register_model("vgg16_bbd", config_keys={"mask_init": "head_mask_init", "conv_mask_init": "conv_mask_init",
                                          **_VGG_KEYS})
def vgg16_bbd(num_classes: int = 10, in_channels: int = 3, conv_mask_init: float = 2.0,
              head_mask_init: float = -1.0, width: float = 1.0, dropout_scale: float = 1.0) -> VGG16:
    """VGG-16 with 15 Beta-Bernoulli masks (13 conv, 2 head): BP, ANP, ANP-VS rows."""
    return VGG16(num_classes, in_channels, bbd=True, conv_mask_init=conv_mask_init,
                 head_mask_init=head_mask_init, width=width, dropout_scale=dropout_scale)
