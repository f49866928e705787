"""ResNet-18, the CIFAR variant of the robustness literature (the Adversarial Pruning Benchmark's base network
beside VGG-16, arXiv 2409.01249; He et al. 2016 with a 3x3 stem).

normalize -> conv3x3 (C -> 64, stride 1) -> BN -> ReLU -> 4 stages of 2 BasicBlocks (64, 128, 256, 512
channels; stride 2 at the first block of stages 2-4) -> global average pool -> linear 512 -> C. A BasicBlock is
``ReLU(BN(conv3x3(mask(ReLU(BN(conv3x3(x)))))) + shortcut(x))``, the shortcut an identity or, where the
shape changes, a 1x1 strided conv + BN. Convs have no bias. ``width`` scales every layer (CPU runs use narrow
networks).

Masks (``resnet18_bbd``): one Beta-Bernoulli mask per block on its *hidden* channels, the outputs of its first
conv after BN + ReLU, i.e. the input channels of its second conv (8 masks: 64, 64, 128, 128, 256, 256, 512,
512 units). A pruned hidden channel is exactly 0, so compaction removes it from the first conv, its BN and the
second conv without touching the residual stream, and folds E[pi] of a kept one into the second conv. The
residual-stream channels (stem, block outputs, shortcuts) carry no mask: a mask there would have to be one
mask shared by every tensor that the additions of a stage tie together (stem or shortcut conv, every block's
second conv and BN), a group whose pruning is not what the paper's per-layer masks are; without it the
stream keeps its width, so at most the hidden half of each block's convs shrinks: with every hidden channel
pruned ResNet-18 still costs the stem, the second convs' outputs and the shortcuts (see docs/architecture.md,
"Residual networks").

Latents (the vulnerability, docs/reference.md §1): the 8 block outputs (after the residual addition and ReLU),
full width whatever is pruned, so the compacted network computes them exactly and needs no latent maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from ..nn.beta_bernoulli import BetaBernoulliDropout
from . import register_model
from .base import Classifier, InputNormalize, scaled_width
from .compaction import CompactNetwork, Layout, plain_state, remove_hidden_channels, residual_layout
from .vgg16 import CIFAR_MEAN, CIFAR_STD

#: channels of the 4 stages; 2 BasicBlocks each, stride 2 at the first block of stages 2-4
STAGES = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
    """conv3x3 (stride) -> BN -> ReLU -> mask -> conv3x3 -> BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, hidden: int, c_out: int, stride: int, mask: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, hidden, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.mask = mask
        self.conv2 = nn.Conv2d(hidden, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        h = self.mask(F.relu(self.bn1(self.conv1(x))))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet18(Classifier):
    """CIFAR ResNet-18 with stage widths ``stages`` (4) and block hidden widths ``hidden`` (8, default: the
    stage widths; a compacted network has fewer)."""

    arch = "resnet18"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, *, stages: Sequence[int] = STAGES,
                 hidden: Sequence[int] | None = None, bbd: bool = False, mask_init: float = 2.0) -> None:
        super().__init__()
        outs = [c for c in stages for _ in range(BLOCKS_PER_STAGE)]
        hidden = list(outs if hidden is None else hidden)
        if len(stages) != len(STAGES) or len(hidden) != len(outs):
            raise ValueError(f"expected {len(STAGES)} stage and {len(outs)} hidden widths")
        self.num_classes = num_classes
        self.input_shape = (in_channels, 32, 32)
        #: unit counts behind the 8 masks (each block's hidden channels), in mask order
        self.unit_widths = tuple(hidden)
        mean, std = (CIFAR_MEAN, CIFAR_STD) if in_channels == 3 else ((0.5,) * in_channels, (0.25,) * in_channels)
        self.normalize = InputNormalize(mean, std)
        self.stem = nn.Conv2d(in_channels, stages[0], 3, 1, 1, bias=False)
        self.bn_stem = nn.BatchNorm2d(stages[0])
        self.blocks = nn.ModuleList()
        c_in = stages[0]
        for i, (mid, c_out) in enumerate(zip(hidden, outs, strict=True)):
            stride = 2 if i > 0 and i % BLOCKS_PER_STAGE == 0 else 1
            mask = BetaBernoulliDropout(mid, a_init=mask_init) if bbd else nn.Identity()
            self.blocks.append(BasicBlock(c_in, mid, c_out, stride, mask))
            c_in = c_out
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def unit_weights(self) -> list[tuple[Tensor, int, int | None]]:
        """Per mask: the weight whose slice ``k`` along ``dim`` makes (or, for inputs no layer of their own makes,
        uses) unit ``k``, and the mask of the conv channels those units are positions of (L1 pruning's scores)."""
        return [(block.conv1.weight, 0, None) for block in self.blocks]

    def latent_names(self) -> list[str]:
        return [f"block{i + 1}" for i in range(len(self.blocks))]

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = F.relu(self.bn_stem(self.stem(self.normalize(x))))
        latents = []
        for block in self.blocks:
            h = block(h)
            latents.append(h)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1)), latents

    def compact_state(self, latents: bool = False) -> dict[str, Tensor]:
        """:class:`CompactResNet18`'s state: each block's pruned hidden channels removed, E[pi] folded into its
        second conv. The latents (block outputs) keep their width, so ``latents`` adds nothing."""
        state = plain_state(self)
        for i, block in enumerate(self.blocks):
            remove_hidden_channels(state, block.mask, f"blocks.{i}.conv1", f"blocks.{i}.bn1", f"blocks.{i}.conv2")
        return state


class CompactResNet18(CompactNetwork, ResNet18):
    """A compacted ResNet-18: the same network without masks, with the hidden widths read from its state dict."""

    signature = "bn_stem.weight"

    def widths(self) -> dict[str, int]:
        return {f"block{i + 1}": b.conv1.out_channels for i, b in enumerate(self.blocks)}

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> CompactResNet18:
        n = len(STAGES) * BLOCKS_PER_STAGE
        stages = [state_dict[f"blocks.{i}.conv2.weight"].shape[0] for i in range(0, n, BLOCKS_PER_STAGE)]
        hidden = [state_dict[f"blocks.{i}.conv1.weight"].shape[0] for i in range(n)]
        net = cls(state_dict["fc.weight"].shape[0], state_dict["stem.weight"].shape[1], stages=stages, hidden=hidden)
        net.load_state_dict(state_dict)
        return net

    @classmethod
    def layout(cls, state_dict: Mapping[str, Tensor], source: nn.Module) -> Layout:
        return residual_layout(state_dict, source, "stem.weight", "fc.weight",
                               [b.conv2.out_channels for b in source.blocks])


ResNet18.compact_class = CompactResNet18


def _stages(width: float) -> tuple[int, ...]:
    return tuple(scaled_width(c, width) for c in STAGES)


@register_model("resnet18", config_keys={"width": "width"})
def resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> ResNet18:
    """CIFAR ResNet-18 without masks (Standard, AT, TRADES, ... rows); ``width`` scales every layer."""
    return ResNet18(num_classes, in_channels, stages=_stages(width))


@register_model("resnet18_bbd", config_keys={"conv_mask_init": "mask_init", "width": "width"})
def resnet18_bbd(num_classes: int = 10, in_channels: int = 3, mask_init: float = 2.0,
                 width: float = 1.0) -> ResNet18:
    """CIFAR ResNet-18 with 8 Beta-Bernoulli masks on the blocks' hidden channels (BP, ANP, ANP-VS rows);
    ``mask_init`` is their initial ``a_uc`` (2.0, E[pi] = 0.68, as VGG-16's conv masks)."""
    return ResNet18(num_classes, in_channels, stages=_stages(width), bbd=True, mask_init=mask_init)
