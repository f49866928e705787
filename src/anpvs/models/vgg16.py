"""VGG-16, CIFAR variant of the paper (docs/reference.md §3).

Each of the 13 blocks is conv3x3 (SAME, bias) -> mask -> BN -> ReLU -> dropout or maxpool 2x2;
the head is flatten (512) -> [dropout 0.5, plain model only] -> mask14 -> dense14 512->512 ->
BN14 -> ReLU -> [dropout 0.5, plain model only] -> mask15 -> dense15 512->C.

The masks sit *before* BN as in the reference (docs/decisions.md item 6): a pruned channel then outputs the
constant ``ReLU(beta - gamma * mu / sqrt(var + eps))``, which compaction folds into the next bias.
BN uses the reference's momentum 0.99 (PyTorch ``momentum=0.01``) and eps 1e-3. Normalization
with the CIFAR channel statistics is the first layer, so the model takes [0, 1] pixels.

Its compacted network is :class:`CompactVGG16` (:meth:`VGG16.compact_state`, docs/compact.md); the paper's
analytic FLOPs and memory are :meth:`VGG16.analytic_flops` / ``analytic_memory``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..metrics.efficiency import conv_flops, conv_memory, dense_flops, dense_memory, pool_flops
from ..nn.beta_bernoulli import BetaBernoulliDropout
from . import register_model
from .base import Classifier, InputNormalize, glorot_init_, scaled_width
from .compaction import (
    CompactNetwork,
    ConstantInputConv2d,
    LatentMaps,
    Layout,
    bn_state,
    dims,
    index_of,
    pool,
    pruned_constant,
    rows,
    scale_of,
    select,
)

#: widths of the 13 conv layers; what follows each block: a dropout rate or "M" (maxpool)
CONV_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
AFTER_BLOCK = (0.3, "M", 0.4, "M", 0.4, 0.4, "M", 0.4, 0.4, "M", 0.4, 0.4, "M")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
# SAME 3x3 convs: each conv's output side equals its input side; a 2x2 max-pool after the "M" blocks
_CONV_SIDES = (32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2)


def scaled_widths(width: float) -> tuple[int, ...]:
    """The 13 conv widths and the 512-unit head of VGG-16 times ``width`` (rounded, at least 1): the 15 unit
    counts of its masks. ``width`` 1 is the paper's network; CPU protocols use a narrower one."""
    return tuple(scaled_width(c, width) for c in (*CONV_WIDTHS, 512, 512))


class CompactVGG16(CompactNetwork, nn.Module):
    """VGG-16 (CIFAR) with the given conv ``widths`` (13) and ``hidden`` dense14 outputs, no dropout.

    Each block is conv3x3 (SAME) -> BN -> ReLU [-> maxpool]; the head is flatten -> dense14 -> BN14 ->
    ReLU -> dense15. ``constant_inputs[i]`` makes conv ``i`` a :class:`ConstantInputConv2d` (some
    removed input channels carried a non-zero constant). ``bn_eps`` is the BN epsilon of the source
    model (the reference's 1e-3); it is not part of the state dict.
    """

    arch = "vgg16"
    signature = "convs.0.weight"
    eval_only = ("latent_maps.", "conv13_probe.", "bn13_probe.", "dense14_probe.", "bn14_probe.")

    def __init__(self, widths: Sequence[int], hidden: int, num_classes: int = 10, in_channels: int = 3, *,
                 constant_inputs: Sequence[bool] | None = None, bn_eps: float = 1e-3,
                 latents: Sequence[tuple[int, int]] | None = None, probe13: int = 0, probe13_constant: bool = False,
                 probe14: int = 0) -> None:
        super().__init__()
        if len(widths) != len(AFTER_BLOCK):
            raise ValueError(f"expected {len(AFTER_BLOCK)} conv widths, got {len(widths)}")
        constant_inputs = [False] * len(widths) if constant_inputs is None else list(constant_inputs)
        self.num_classes = num_classes
        self.normalize = InputNormalize([0.0] * in_channels, [1.0] * in_channels)  # overwritten by load
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        c_in = in_channels
        for width, const in zip(widths, constant_inputs, strict=True):
            conv_cls = ConstantInputConv2d if const else nn.Conv2d
            self.convs.append(conv_cls(c_in, width, 3, padding=1))
            self.bns.append(nn.BatchNorm2d(width, eps=bn_eps, momentum=0.01))
            c_in = width
        self.dense14 = nn.Linear(c_in, hidden)
        self.bn14 = nn.BatchNorm1d(hidden, eps=bn_eps, momentum=0.01)
        self.dense15 = nn.Linear(hidden, num_classes)
        # latent maps (evaluation only, see LatentMaps): conv13 channels that mask14 prunes and dense14 units
        # that mask15 prunes, computed by the masked model (and compared by the vulnerability) but not used
        self.latent_maps = LatentMaps(latents) if latents else None
        c12 = widths[-2]
        self.conv13_probe = ((ConstantInputConv2d if probe13_constant else nn.Conv2d)(c12, probe13, 3, padding=1)
                             if probe13 else None)
        self.bn13_probe = nn.BatchNorm2d(probe13, eps=bn_eps, momentum=0.01) if probe13 else None
        self.dense14_probe = nn.Linear(c_in, probe14) if probe14 else None
        self.bn14_probe = nn.BatchNorm1d(probe14, eps=bn_eps, momentum=0.01) if probe14 else None

    def latent_names(self) -> list[str]:
        return [f"conv{i + 1}" for i in range(len(AFTER_BLOCK))] + ["dense14_linear", "dense14"]

    def forward(self, x: Tensor) -> Tensor:
        h = self.normalize(x)
        for conv, bn, after in zip(self.convs, self.bns, AFTER_BLOCK, strict=True):
            h = F.relu(bn(conv(h)))
            if after == "M":
                h = pool(h)
        h = F.relu(self.bn14(self.dense14(h.flatten(1))))
        return self.dense15(h)

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(logits, latents)``; with latent maps the latents are the masked model's, full width."""
        maps = self.latent_maps
        latents = []
        h = self.normalize(x)
        last = len(self.convs) - 1
        for i, (conv, bn, after) in enumerate(zip(self.convs, self.bns, AFTER_BLOCK, strict=True)):
            h_in = h
            h = F.relu(bn(conv(h_in)))
            if maps is None:
                latents.append(h)
            else:
                extra = ([F.relu(self.bn13_probe(self.conv13_probe(h_in)))]
                         if i == last and self.conv13_probe is not None else [])
                latents.append(maps(i, h, *extra))
            if after == "M":
                h = pool(h)
        h = h.flatten(1)
        lin = self.dense14(h)
        out = F.relu(self.bn14(lin))
        if maps is None:
            latents += [lin, out]
        else:
            lin_p = [self.dense14_probe(h)] if self.dense14_probe is not None else []
            out_p = [F.relu(self.bn14_probe(lin_p[0]))] if lin_p else []
            latents += [maps(last + 1, lin, *lin_p), maps(last + 2, out, *out_p)]
        return self.dense15(out), latents

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], *, bn_eps: float = 1e-3) -> CompactVGG16:
        """Rebuild the network (shapes read from ``state_dict``) and load ``state_dict`` into it."""
        n = len(AFTER_BLOCK)
        net = cls([state_dict[f"convs.{i}.weight"].shape[0] for i in range(n)],
                  state_dict["dense14.weight"].shape[0], state_dict["dense15.weight"].shape[0],
                  state_dict["normalize.mean"].shape[1],
                  constant_inputs=[f"convs.{i}.const_weight" in state_dict for i in range(n)], bn_eps=bn_eps,
                  latents=LatentMaps.sizes(state_dict), probe13=rows(state_dict, "conv13_probe.weight"),
                  probe13_constant="conv13_probe.const_weight" in state_dict,
                  probe14=rows(state_dict, "dense14_probe.weight"))
        net.load_state_dict(state_dict)
        return net

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.normalize.mean.shape[1], 32, 32)

    def widths(self) -> dict[str, int]:
        convs = {f"conv{i + 1}": c.out_channels for i, c in enumerate(self.convs)}
        return {**convs, "dense14": self.dense14.out_features}

    def compact_kwargs(self) -> dict[str, float]:
        return {"bn_eps": float(self.bns[0].eps)}

    @classmethod
    def source_kwargs(cls, model: nn.Module) -> dict[str, float]:
        return {"bn_eps": float(model.bns[0].eps)}

    @classmethod
    def layout(cls, state_dict: Mapping[str, Tensor], source: nn.Module) -> Layout:
        n = len(source.convs)
        widths = [dims(state_dict, f"convs.{i}.weight", 4)[0] for i in range(n)]
        cin = dims(state_dict, "convs.0.weight", 4)[1]
        hidden, classes = dims(state_dict, "dense14.weight", 2)[0], dims(state_dict, "dense15.weight", 2)[0]
        full = {**{f"conv{i + 1}": c.out_channels for i, c in enumerate(source.convs)},
                "dense14": source.dense14.out_features}
        p14 = rows(state_dict, "dense14_probe.weight")
        return Layout(got={**{f"conv{i + 1}": w for i, w in enumerate(widths)}, "dense14": hidden}, full=full,
                      kept=[*widths, hidden, hidden],
                      probes=[0] * (n - 1) + [rows(state_dict, "conv13_probe.weight"), p14, p14],
                      fills=[*list(full.values())[:n], full["dense14"], full["dense14"]], in_channels=cin,
                      classes=classes)



class VGG16(Classifier):
    arch = "vgg16"
    paper_units = (*CONV_WIDTHS, 512, 512)
    compact_class = CompactVGG16

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
        self.input_shape = (in_channels, 32, 32)
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

    def unit_weights(self) -> list[tuple[Tensor, int, int | None]]:
        """Per mask: the weight whose slice ``k`` along ``dim`` makes (or, for inputs no layer of their own makes,
        uses) unit ``k``, and the mask of the conv channels those units are positions of (L1 pruning's scores)."""
        convs: list[tuple[Tensor, int, int | None]] = [(c.weight, 0, None) for c in self.convs]
        return convs + [(self.dense14.weight, 1, len(convs) - 1), (self.dense14.weight, 0, None)]

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

    def compact_state(self, latents: bool = False) -> dict[str, Tensor]:
        """:class:`CompactVGG16`'s state (anpvs.models.compact: pruned channels removed, E[pi] folded in, the constant
        a pruned channel carries after BN + ReLU folded exactly into the next layer)."""
        model = self
        like = model.convs[0].weight
        scales = [scale_of(m, conv.out_channels, like) for m, conv in zip(model.masks, model.convs, strict=True)]
        e14 = scale_of(model.mask14, model.dense14.in_features, like)
        e15 = scale_of(model.mask15, model.dense15.in_features, like)
        kept = [e > 0 for e in scales]
        # conv13 channels pruned by mask14 have no consumer
        live = kept[:-1] + [kept[-1] & (e14 > 0)]
        consts = [pruned_constant(bn) * (~k) for bn, k in zip(model.bns, kept, strict=True)]
        idx = [index_of(k) for k in live]
        sd: dict[str, Tensor] = {
            "normalize.mean": model.normalize.mean.detach().clone(),
            "normalize.std": model.normalize.std.detach().clone(),
        }
        in_idx = torch.arange(model.convs[0].in_channels, device=like.device)
        for i, conv in enumerate(model.convs):
            w_out = select(conv.weight, 0, idx[i], scales[i])  # kept output channels, E[pi] folded in
            sd[f"convs.{i}.weight"] = select(w_out, 1, in_idx)
            sd[f"convs.{i}.bias"] = select(conv.bias, 0, idx[i], scales[i])
            if i > 0 and bool((consts[i - 1] != 0).any()):
                # removed input channels that carry a non-zero constant: one summed kernel, exact at borders
                sd[f"convs.{i}.const_weight"] = (w_out * consts[i - 1].view(1, -1, 1, 1)).sum(1, keepdim=True)
            sd.update(bn_state(model.bns[i], idx[i], f"bns.{i}"))
            in_idx = idx[i]
        # head: conv13 output is 1x1, so flatten index == channel and the constants fold into dense14's bias
        out_idx = index_of(e15 > 0)
        w14 = select(model.dense14.weight, 0, out_idx)
        sd["dense14.weight"] = select(w14, 1, in_idx, e14)
        sd["dense14.bias"] = select(model.dense14.bias, 0, out_idx) + w14 @ (e14 * consts[-1])
        sd.update(bn_state(model.bn14, out_idx, "bn14"))
        sd["dense15.weight"] = select(model.dense15.weight, 1, out_idx, e15)
        sd["dense15.bias"] = model.dense15.bias.detach().clone()
        if latents:
            # conv13 channels kept by mask13 but pruned by mask14, dense14 units pruned by mask15: in the masked
            # model's latents, never in its logits
            last = len(model.convs) - 1
            idx13p = index_of(kept[-1] & ~live[-1])
            idx15p = index_of(e15 <= 0)
            if idx13p.numel():
                conv = model.convs[last]
                w_p = select(conv.weight, 0, idx13p, scales[last])
                sd["conv13_probe.weight"] = select(w_p, 1, idx[last - 1])
                sd["conv13_probe.bias"] = select(conv.bias, 0, idx13p, scales[last])
                if bool((consts[last - 1] != 0).any()):
                    sd["conv13_probe.const_weight"] = (w_p * consts[last - 1].view(1, -1, 1, 1)).sum(1, keepdim=True)
                sd.update(bn_state(model.bns[last], idx13p, "bn13_probe"))
            if idx15p.numel():
                w14p = select(model.dense14.weight, 0, idx15p)
                sd["dense14_probe.weight"] = select(w14p, 1, in_idx, e14)
                sd["dense14_probe.bias"] = select(model.dense14.bias, 0, idx15p) + w14p @ (e14 * consts[-1])
                sd.update(bn_state(model.bn14, idx15p, "bn14_probe"))
            maps = [(torch.cat([idx[i], idx13p]) if i == last else idx[i], consts[i]) for i in range(last + 1)]
            head = torch.cat([out_idx, idx15p])
            maps += [(head, like.new_zeros(model.dense14.out_features))] * 2
            for i, (index, fill) in enumerate(maps):
                sd[f"latent_maps.index{i}"] = index
                sd[f"latent_maps.fill{i}"] = fill.clone()  # a removed channel's constant after BN + ReLU
        return sd

    @staticmethod
    def analytic_flops(active: Sequence[int], num_classes: int) -> int:
        """The paper's FLOPs (docs/reference.md §6): 13 SAME 3x3 convs (3 -> a1 -> ... -> a13) with pools after
        convs 2, 4, 7, 10, 13, dense14 (d14 -> d15) and dense15 (d15 -> num_classes); as in the reference both
        dense layers are charged the activation term and BN/dropout are free. Full model: 627,329,546."""
        channels = [3, *active[:13]]
        flops = 0
        for i, (side, after) in enumerate(zip(_CONV_SIDES, AFTER_BLOCK, strict=True)):
            flops += conv_flops(side, channels[i], channels[i + 1], 3)
            if after == "M":
                flops += pool_flops(side, channels[i + 1])
        d14, d15 = active[13:]
        return flops + dense_flops(d14, d15, activation=True) + dense_flops(d15, num_classes, activation=True)

    @staticmethod
    def analytic_memory(active: Sequence[int], num_classes: int, legacy: bool = False) -> int:
        """The paper's memory (docs/reference.md §6): 13 convs with BN, dense14 with BN14, dense15; full model
        16,655,818 (10 classes). ``legacy`` reproduces the reference's bugs (§7.3-7.4: the head added 13 times,
        BN14 charged on its inputs; full model 19,881,538)."""
        channels = [3, *active[:13]]
        conv_mem = sum(conv_memory(side, channels[i], channels[i + 1], 3, batch_norm=True)
                       for i, side in enumerate(_CONV_SIDES))
        d14, d15 = active[13:]
        head = (dense_memory(d14, d15, batch_norm=True, legacy=legacy)
                + dense_memory(d15, num_classes, batch_norm=False))
        return conv_mem + (len(_CONV_SIDES) if legacy else 1) * head


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
