"""WRN-d-k, the pre-activation WideResNet of Zagoruyko & Komodakis 2016 as RobustBench and the robustness
literature use it (e.g. WRN-28-10, WRN-34-10), for CIFAR-sized inputs.

normalize -> conv3x3 (C -> 16) -> 3 groups of ``n = (depth - 4) / 6`` blocks (16k, 32k, 64k channels; stride 2
at the first block of groups 2 and 3) -> BN -> ReLU -> global average pool -> linear 64k -> C. A block is
``conv3x3(mask(ReLU(BN2(conv3x3_stride(a))))) + shortcut``, with ``a = ReLU(BN1(x))`` its pre-activation; the
shortcut is ``x``, or a 1x1 strided conv of ``a`` where the width or the stride changes. Convs have no bias,
no dropout (RobustBench's ``dropRate=0``). ``width`` scales every layer (CPU runs use narrow networks).

Masks (``wide_resnet_bbd``): one Beta-Bernoulli mask per block on its *hidden* channels (after BN2 + ReLU, the
input channels of its second conv); the residual stream carries none. Why, and what that costs, as for
ResNet-18 (:mod:`anpvs.models.resnet`; docs/architecture.md, "Residual networks"): a pruned hidden channel is
exactly 0 and leaves the network with its rows of the first conv, its BN2 entries and its columns of the
second conv; the stream keeps its width.

Latents (the vulnerability): each block's pre-activation ``a`` and the head's ``ReLU(BN(x))``: ``3n + 1``
post-ReLU tensors at full width, computed exactly by the compacted network (no latent maps).
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


def group_widths(depth: int, widen_factor: int, width: float = 1.0) -> tuple[int, int, tuple[int, int, int]]:
    """``(blocks per group, stem width, the 3 group widths)`` of WRN-``depth``-``widen_factor`` times ``width``."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 10 <= depth <= 202 or (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 with n >= 1 up to 202: 10, 16, 22, 28, 34, ... (got {depth!r})")
    if isinstance(widen_factor, bool) or not isinstance(widen_factor, int) or not 1 <= widen_factor <= 20:
        raise ValueError(f"widen_factor must be an integer in [1, 20] (got {widen_factor!r})")
    groups = tuple(scaled_width(c * widen_factor, width) for c in (16, 32, 64))
    return (depth - 4) // 6, scaled_width(16, width), groups


class PreActBlock(nn.Module):
    """BN1 -> ReLU (-> ``a``) -> conv3x3 (stride) -> BN2 -> ReLU -> mask -> conv3x3, plus the shortcut."""

    def __init__(self, c_in: int, hidden: int, c_out: int, stride: int, mask: nn.Module) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, hidden, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.mask = mask
        self.conv2 = nn.Conv2d(hidden, c_out, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: Tensor, a: Tensor) -> Tensor:
        """``x``: the block's input; ``a``: its pre-activation ``ReLU(BN1(x))`` (a latent, computed by the caller)."""
        h = self.conv2(self.mask(F.relu(self.bn2(self.conv1(a)))))
        return h + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(Classifier):
    """WRN with ``n`` blocks per group, stem width ``stem``, group widths ``groups`` (3) and block hidden widths
    ``hidden`` (``3n``; default: the group widths, a compacted network has fewer)."""

    arch = "wide_resnet"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, *, n: int = 4, stem: int = 16,
                 groups: Sequence[int] = (64, 128, 256), hidden: Sequence[int] | None = None, bbd: bool = False,
                 mask_init: float = 2.0) -> None:
        super().__init__()
        outs = [c for c in groups for _ in range(n)]
        hidden = list(outs if hidden is None else hidden)
        if len(groups) != 3 or len(hidden) != len(outs):
            raise ValueError(f"expected 3 group and {len(outs)} hidden widths")
        self.num_classes = num_classes
        self.input_shape = (in_channels, 32, 32)
        #: unit counts behind the 3n masks (each block's hidden channels), in mask order
        self.unit_widths = tuple(hidden)
        mean, std = (CIFAR_MEAN, CIFAR_STD) if in_channels == 3 else ((0.5,) * in_channels, (0.25,) * in_channels)
        self.normalize = InputNormalize(mean, std)
        self.stem = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.blocks = nn.ModuleList()
        c_in = stem
        for i, (mid, c_out) in enumerate(zip(hidden, outs, strict=True)):
            stride = 2 if i > 0 and i % n == 0 else 1
            mask = BetaBernoulliDropout(mid, a_init=mask_init) if bbd else nn.Identity()
            self.blocks.append(PreActBlock(c_in, mid, c_out, stride, mask))
            c_in = c_out
        self.bn_out = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def unit_weights(self) -> list[tuple[Tensor, int, int | None]]:
        """Per mask: the weight whose slice ``k`` along ``dim`` makes (or, for inputs no layer of their own makes,
        uses) unit ``k``, and the mask of the conv channels those units are positions of (L1 pruning's scores)."""
        return [(block.conv1.weight, 0, None) for block in self.blocks]

    def latent_names(self) -> list[str]:
        return [f"block{i + 1}_preact" for i in range(len(self.blocks))] + ["head"]

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.stem(self.normalize(x))
        latents = []
        for block in self.blocks:
            a = F.relu(block.bn1(h))
            latents.append(a)
            h = block(h, a)
        a = F.relu(self.bn_out(h))
        latents.append(a)
        return self.fc(F.adaptive_avg_pool2d(a, 1).flatten(1)), latents

    def compact_state(self, latents: bool = False) -> dict[str, Tensor]:
        """:class:`CompactWideResNet`'s state: each block's pruned hidden channels removed, E[pi] folded into its
        second conv. The latents keep their width, so ``latents`` adds nothing."""
        state = plain_state(self)
        for i, block in enumerate(self.blocks):
            remove_hidden_channels(state, block.mask, f"blocks.{i}.conv1", f"blocks.{i}.bn2", f"blocks.{i}.conv2")
        return state


class CompactWideResNet(CompactNetwork, WideResNet):
    """A compacted WRN: the same network without masks, with the hidden widths read from its state dict."""

    signature = "bn_out.weight"

    def widths(self) -> dict[str, int]:
        return {f"block{i + 1}": b.conv1.out_channels for i, b in enumerate(self.blocks)}

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> CompactWideResNet:
        n_blocks = 0
        while f"blocks.{n_blocks}.conv1.weight" in state_dict:
            n_blocks += 1
        n = n_blocks // 3
        groups = [state_dict[f"blocks.{i}.conv2.weight"].shape[0] for i in range(0, n_blocks, max(n, 1))]
        hidden = [state_dict[f"blocks.{i}.conv1.weight"].shape[0] for i in range(n_blocks)]
        stem = state_dict["stem.weight"]
        net = cls(state_dict["fc.weight"].shape[0], stem.shape[1], n=n, stem=stem.shape[0], groups=groups,
                  hidden=hidden)
        net.load_state_dict(state_dict)
        return net

    @classmethod
    def layout(cls, state_dict: Mapping[str, Tensor], source: nn.Module) -> Layout:
        stream = [b.conv2.out_channels for b in source.blocks]
        return residual_layout(state_dict, source, "stem.weight", "fc.weight",
                               [source.stem.out_channels, *stream])


WideResNet.compact_class = CompactWideResNet


def _build(num_classes: int, in_channels: int, depth: int, widen_factor: int, width: float, **kwargs) -> WideResNet:
    n, stem, groups = group_widths(depth, widen_factor, width)
    return WideResNet(num_classes, in_channels, n=n, stem=stem, groups=groups, **kwargs)


_KEYS = {"width": "width", "depth": "depth", "widen_factor": "widen_factor"}  # --set model.depth=34 ...


@register_model("wide_resnet", config_keys=_KEYS)
def wide_resnet(num_classes: int = 10, in_channels: int = 3, depth: int = 28, widen_factor: int = 4,
                width: float = 1.0) -> WideResNet:
    """WRN-``depth``-``widen_factor`` (default WRN-28-4) without masks; ``width`` scales every layer."""
    return _build(num_classes, in_channels, depth, widen_factor, width)


@register_model("wide_resnet_bbd", config_keys={"conv_mask_init": "mask_init", **_KEYS})
def wide_resnet_bbd(num_classes: int = 10, in_channels: int = 3, depth: int = 28, widen_factor: int = 4,
                    mask_init: float = 2.0, width: float = 1.0) -> WideResNet:
    """WRN-``depth``-``widen_factor`` with one Beta-Bernoulli mask per block on its hidden channels (BP, ANP,
    ANP-VS rows); ``mask_init`` is their initial ``a_uc`` (2.0, E[pi] = 0.68, as VGG-16's conv masks)."""
    return _build(num_classes, in_channels, depth, widen_factor, width, bbd=True, mask_init=mask_init)
