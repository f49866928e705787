"""Physically compacted networks: the eval-mode function of a unit-pruned model with the pruned units removed.

:func:`compact` turns a ``lenet5_caffe_bbd`` / ``vgg16_bbd`` model (or the unmasked ``lenet5_caffe`` /
``vgg16``) into a plain network of conv, linear and BN layers with fewer channels and features whose
eval forward gives the same logits as the masked model's eval forward (up to float rounding). It is an
inference artefact: it has no masks and no dropout, and is returned in eval mode.

What is folded where (e_k is the thresholded E[pi_k] of a mask, 0 for a pruned unit):

* **Scale of a kept unit.** A mask right after a conv / linear layer (LeNet mask1 and mask2, all VGG
  conv masks) multiplies that layer's output channel by e_k; the factor goes into the layer's weights
  and bias. In VGG the mask sits *before* BN, so BN then sees the same values as in the masked model.
  A mask on the *inputs* of a dense layer (LeNet mask3 and mask4, VGG mask14 and mask15) scales that
  layer's weight columns instead. LeNet mask4 and VGG mask15 sit after a ReLU; as e_k >= 0 this is the
  same thing.
* **Pruned unit, LeNet.** It outputs 0 (the masks come before ReLU, or act on inputs), so it is
  removed with its weights in the next layer. Flattened inputs of dense3 survive only if both their
  conv2 channel and their own mask3 unit are kept; a conv2 channel none of whose 16 positions survives
  is removed too. When some positions of a surviving channel are dropped, the network gathers the
  surviving positions with ``index_select`` (index buffer ``dense3_index``).
* **Pruned channel, VGG** (docs/decisions.md item 6; docs/reference.md §7.9). The mask zeroes the channel
  *before* BN, so after BN + ReLU (+ max-pool or dropout, both of which keep a constant) it carries the constant
  ``c_k = ReLU(beta_k - gamma_k * mu_k / sqrt(var_k + eps))`` at every position. In the next layer:

  - *conv -> conv* (3x3, SAME zero padding). The input channel is ``c_k`` inside the image and 0 in
    the padding, so its contribution ``c_k * sum of the kernel taps that fall inside the image``
    is the same at every interior position but smaller on the border rows and columns. Folding it
    into a bias is therefore *not* exact. The exact replacement is :class:`ConstantInputConv2d`: a
    conv over the kept channels plus one extra kernel ``const_weight[o] = sum_k c_k W[o, k]``
    (shape ``[C_out, 1, 3, 3]``, the size of a single input channel) applied to an all-ones image
    with the same zero padding. Its map over positions does not depend on the input, so it is
    computed in closed form (which taps are inside the image) with elementwise ops. This avoids
    storing a ``[C_out, H, W]`` bias map, which for the 32x32 layers would be larger than the
    kernel itself and would tie the network to one input size. A layer whose removed channels all
    have ``c_k = 0`` (the common case) stays a plain :class:`torch.nn.Conv2d`.
  - *conv13 -> dense14* (1x1 spatial after the last pool, no padding) and *dense14 -> dense15*.
    The constant is folded exactly into dense14's bias: ``b += W14[:, k] * e14_k * c_k``. Dense14's
    output units pruned by mask15 are zeroed after ReLU, so they are removed with their BN14 entries.
  - A conv13 channel that mask13 keeps but mask14 prunes has no consumer and is removed.

* **Unmasked models** compact to a plain copy with the same parameters (VGG's head dropout, an
  identity in eval mode, is left out).

A layer left with no unit at all keeps one all-zero placeholder unit so that every shape stays valid
(exact, since that unit outputs 0). BNN models (:mod:`anpvs.models.bnn`) compact to their mean network,
which is their eval forward unless weight sampling in eval mode is switched on.

FLOPs: FlopCounterMode counts convolutions and matrix products only, so the border map of
:class:`ConstantInputConv2d` (input-independent elementwise work, about ``C_out*H_out*W_out*k`` multiply-adds) and
the gather of LeNet's dense3 inputs are not counted, like bias, BN, ReLU and pooling.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .metrics.efficiency import measured_flops
from .models.base import InputNormalize
from .models.lenet5_caffe import LeNet5Caffe
from .models.vgg16 import AFTER_BLOCK, VGG16
from .nn.beta_bernoulli import BetaBernoulliDropout, bbd_layers
from .nn.fast import FastConv2d, conv2d_maxpool2x2, inference_conv2d, max_pool2d
from .pruning import active_units

__all__ = [
    "CompactLeNet5Caffe",
    "CompactVGG16",
    "ConstantInputConv2d",
    "attack_network",
    "check_compact_state",
    "compact",
    "compact_from_state_dict",
    "compact_pair",
    "compact_stats",
    "compact_widths",
    "deployable",
    "example_shape",
    "is_compact",
    "masked_reference",
    "max_pool2x2",
]


# --------------------------------------------------------------------------- modules


class ConstantInputConv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` plus the exact contribution of removed input channels that held a constant.

    If input channel ``k`` of a zero-padded conv is the constant ``c_k`` inside the image, its
    contribution to output channel ``o`` at a position is ``c_k`` times the sum of the taps of
    ``W[o, k]`` that fall inside the image: constant in the interior, different on the border. All such
    channels together are one kernel ``const_weight = sum_k c_k W[:, k:k+1]`` of shape
    ``[C_out, 1, kH, kW]`` applied to an all-ones image with the layer's zero padding; the map is
    computed in closed form from which taps are inside, without a convolution.

    Same constructor as :class:`torch.nn.Conv2d` (``groups=1``, ``padding_mode="zeros"``, numeric
    padding only). ``const_weight`` starts at zero (then the layer is a plain conv).

    Shape: input (N, C_in, H, W), output (N, C_out, H_out, W_out) as :class:`torch.nn.Conv2d`.

    >>> conv = ConstantInputConv2d(2, 4, 3, padding=1)
    >>> conv(torch.rand(1, 2, 5, 5)).shape
    torch.Size([1, 4, 5, 5])
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1 or self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("ConstantInputConv2d needs groups=1, zero padding and numeric padding")
        self.const_weight = nn.Parameter(
            torch.zeros(self.out_channels, 1, *self.kernel_size, device=self.weight.device, dtype=self.weight.dtype)
        )

    def _inside(self, size: int, dim: int) -> Tensor:
        """(n_out, k) float matrix: 1 where kernel tap ``u`` of output position ``i`` reads inside the input."""
        k, s, p, d = self.kernel_size[dim], self.stride[dim], self.padding[dim], self.dilation[dim]
        n_out = (size + 2 * p - d * (k - 1) - 1) // s + 1
        device = self.const_weight.device
        pos = torch.arange(n_out, device=device)[:, None] * s + torch.arange(k, device=device)[None, :] * d - p
        return ((pos >= 0) & (pos < size)).to(self.const_weight.dtype)

    def constant_map(self, height: int, width: int) -> Tensor:
        """``[C_out, H_out, W_out]``: what the removed constant channels add at each output position."""
        rows, cols = self._inside(height, 0), self._inside(width, 1)  # (H_out, kH), (W_out, kW)
        kern = self.const_weight[:, 0]  # (C_out, kH, kW)
        per_row = (rows[None, :, :, None] * kern[:, None, :, :]).sum(2)  # (C_out, H_out, kW)
        return (per_row[:, :, None, :] * cols[None, None, :, :]).sum(-1)  # (C_out, H_out, W_out)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.constant_map(x.shape[-2], x.shape[-1]).to(x.dtype)


def max_pool2x2(x: Tensor) -> Tensor:
    """``F.max_pool2d(x, 2)`` (2x2 windows, stride 2, odd rows / columns dropped) as two elementwise maxima
    of strided views: the same values, and on CPU several times faster than PyTorch's max-pool kernel on
    NCHW tensors (which at the compacted widths costs more than the convolutions, see docs/compact.md)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def _pool(x: Tensor) -> Tensor:
    """2x2 max-pool of the compacted networks: :func:`max_pool2x2` for inference; when autograd records (an
    attack), ``F.max_pool2d`` (:func:`anpvs.nn.fast.max_pool2d`), whose gradient goes to one element of a
    window. ``torch.maximum`` splits the gradient of tied elements, which are common in MNIST's constant
    background, so its input gradients would differ from the masked network's, not just by rounding."""
    if torch.is_grad_enabled() and x.requires_grad:
        return max_pool2d(x, 2)
    return max_pool2x2(x)


def _conv_pool(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``_pool(conv(x))``; for inference of a narrow-input conv, :func:`anpvs.nn.fast.conv2d_maxpool2x2`."""
    out = conv2d_maxpool2x2(conv, x)
    return _pool(inference_conv2d(conv, x)) if out is None else out


class CompactLeNet5Caffe(nn.Module):
    """LeNet5-Caffe with ``c1``, ``c2`` conv channels, ``f3`` dense3 inputs and ``h4`` hidden units.

    conv1 5x5 -> ReLU -> pool -> conv2 5x5 -> ReLU -> pool -> flatten (``c2 * 16``) -> [gather ``f3``]
    -> dense3 -> ReLU -> dense4. The gather (buffer ``dense3_index``) exists only when some flattened
    positions of the kept channels are pruned (``gather=True``).
    """

    arch = "lenet5_caffe"

    def __init__(self, c1: int, c2: int, f3: int, h4: int, num_classes: int = 10, in_channels: int = 1, *,
                 gather: bool = False, latents: Sequence[tuple[int, int]] | None = None, probe2: int = 0,
                 probe3: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = FastConv2d(in_channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.register_buffer("dense3_index", torch.zeros(f3, dtype=torch.long) if gather else None)
        self.dense3 = nn.Linear(f3, h4)
        self.dense4 = nn.Linear(h4, num_classes)
        # latent maps (evaluation only, see _LatentMaps): conv2 channels and dense3 units that the masked
        # model computes (and the vulnerability compares) but that do not reach the logits
        self.latent_maps = _LatentMaps(latents) if latents else None
        self.conv2_probe = nn.Conv2d(c1, probe2, 5) if probe2 else None
        self.dense3_probe = nn.Linear(f3, probe3) if probe3 else None

    def latent_names(self) -> list[str]:
        return ["conv1", "conv2", "dense3"]

    def forward(self, x: Tensor) -> Tensor:
        # ReLU after the pool: the same values (ReLU is monotone), on a quarter of the elements
        h = F.relu(_conv_pool(self.conv1, x))
        h = F.relu(_conv_pool(self.conv2, h)).flatten(1)
        if self.dense3_index is not None:
            h = h.index_select(1, self.dense3_index)
        return self.dense4(F.relu(self.dense3(h)))

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(logits, latents)``; with latent maps the latents are the masked model's, full width."""
        a1 = F.relu(self.conv1(x))
        p1 = _pool(a1)
        a2 = F.relu(self.conv2(p1))
        h = _pool(a2).flatten(1)
        if self.dense3_index is not None:
            h = h.index_select(1, self.dense3_index)
        a3 = F.relu(self.dense3(h))
        logits = self.dense4(a3)
        if self.latent_maps is None:
            return logits, [a1, a2, a3]
        extra2 = [F.relu(self.conv2_probe(p1))] if self.conv2_probe is not None else []
        extra3 = [F.relu(self.dense3_probe(h))] if self.dense3_probe is not None else []
        maps = self.latent_maps
        return logits, [maps(0, a1), maps(1, a2, *extra2), maps(2, a3, *extra3)]

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> CompactLeNet5Caffe:
        """Rebuild the network (shapes read from ``state_dict``) and load ``state_dict`` into it."""
        c1, in_channels = state_dict["conv1.weight"].shape[:2]
        h4, f3 = state_dict["dense3.weight"].shape
        net = cls(c1, state_dict["conv2.weight"].shape[0], f3, h4, state_dict["dense4.weight"].shape[0],
                  in_channels, gather="dense3_index" in state_dict, latents=_LatentMaps.sizes(state_dict),
                  probe2=_rows(state_dict, "conv2_probe.weight"), probe3=_rows(state_dict, "dense3_probe.weight"))
        net.load_state_dict(state_dict)
        return net


class CompactVGG16(nn.Module):
    """VGG-16 (CIFAR) with the given conv ``widths`` (13) and ``hidden`` dense14 outputs, no dropout.

    Each block is conv3x3 (SAME) -> BN -> ReLU [-> maxpool]; the head is flatten -> dense14 -> BN14 ->
    ReLU -> dense15. ``constant_inputs[i]`` makes conv ``i`` a :class:`ConstantInputConv2d` (some
    removed input channels carried a non-zero constant). ``bn_eps`` is the BN epsilon of the source
    model (the reference's 1e-3); it is not part of the state dict.
    """

    arch = "vgg16"

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
        # latent maps (evaluation only, see _LatentMaps): conv13 channels that mask14 prunes and dense14 units
        # that mask15 prunes, computed by the masked model (and compared by the vulnerability) but not used
        self.latent_maps = _LatentMaps(latents) if latents else None
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
                h = _pool(h)
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
                h = _pool(h)
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
                  latents=_LatentMaps.sizes(state_dict), probe13=_rows(state_dict, "conv13_probe.weight"),
                  probe13_constant="conv13_probe.const_weight" in state_dict,
                  probe14=_rows(state_dict, "dense14_probe.weight"))
        net.load_state_dict(state_dict)
        return net


class _LatentMaps(nn.Module):
    """Where a compacted network's latent units sit in the masked model's latents, for the vulnerability.

    The vulnerability metric compares the masked model's latents at full width, pruned units included.
    A compacted network with latent maps (``compact(model, latents=True)``) rebuilds them exactly in
    :meth:`forward_intermediates`: for latent ``l``, the kept units (and any *probe* units: units the
    masked model computes but whose outputs never reach the logits, e.g. LeNet dense3 units pruned by
    mask4) are written at positions ``index_l`` of a tensor filled with ``fill_l`` per unit, the value a
    removed unit carries for every input (0, or VGG's BN constant ``c_k``). ``forward`` (logits, exports,
    latency) never computes the probes.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.n = len(sizes)
        for i, (n_index, width) in enumerate(sizes):
            self.register_buffer(f"index{i}", torch.zeros(n_index, dtype=torch.long))
            self.register_buffer(f"fill{i}", torch.zeros(width))

    @staticmethod
    def sizes(state_dict: Mapping[str, Tensor]) -> list[tuple[int, int]] | None:
        """``[(units computed, full width), ...]`` of the latent maps stored in ``state_dict`` (None: none)."""
        out = []
        while f"latent_maps.index{len(out)}" in state_dict:
            i = len(out)
            out.append((state_dict[f"latent_maps.index{i}"].numel(), state_dict[f"latent_maps.fill{i}"].numel()))
        return out or None

    def forward(self, i: int, kept: Tensor, *probes: Tensor) -> Tensor:
        index, fill = getattr(self, f"index{i}"), getattr(self, f"fill{i}")
        n_kept = index.numel() - sum(p.shape[1] for p in probes)
        computed = torch.cat([kept[:, :n_kept], *probes], 1)  # drops a zero placeholder unit (n_kept = 0)
        view = [1, -1] + [1] * (kept.dim() - 2)
        full = fill.to(kept.dtype).view(view).expand(kept.shape[0], fill.numel(), *kept.shape[2:])
        return full.index_copy(1, index, computed)


def _rows(state_dict: Mapping[str, Tensor], key: str) -> int:
    return state_dict[key].shape[0] if key in state_dict else 0


def compact_from_state_dict(state_dict: Mapping[str, Tensor], *, bn_eps: float = 1e-3) -> nn.Module:
    """Rebuild a compacted network from its state dict (e.g. ``torch.load(path, weights_only=True)``).

    ``bn_eps`` is VGG's BN epsilon (not part of a state dict; a compacted checkpoint stores it)."""
    if "conv1.weight" in state_dict:
        return CompactLeNet5Caffe.from_state_dict(state_dict).eval()
    if "convs.0.weight" in state_dict:
        return CompactVGG16.from_state_dict(state_dict, bn_eps=bn_eps).eval()
    raise ValueError("not the state dict of a CompactLeNet5Caffe or CompactVGG16")


def check_compact_state(state_dict: Mapping[str, Tensor], source: nn.Module) -> None:
    """Raise ``ValueError`` (one line) unless ``state_dict`` is a compacted network of ``source``, the model it
    was compacted from (built on the ``meta`` device: only its widths are read).

    Every layer is 1 to the source's width wide, input channels and classes are the source's, latent maps are
    exactly as wide as the source's latents and place at most the units the network computes, and every
    index is an int64 in range; then the network is rebuilt on the ``meta`` device and the state dict must
    fit it key for key and shape for shape. Nothing here allocates memory."""
    def dims(key: str, ndim: int) -> tuple[int, ...]:
        t = state_dict.get(key)
        if not isinstance(t, Tensor) or t.dim() != ndim:
            raise ValueError(f"{key} is missing or not a {ndim}-d tensor")
        return tuple(t.shape)

    if isinstance(source, LeNet5Caffe):
        (c1, cin), c2 = dims("conv1.weight", 4)[:2], dims("conv2.weight", 4)[0]
        (h4, f3), classes = dims("dense3.weight", 2), dims("dense4.weight", 2)[0]
        got = {"conv1": c1, "conv2": c2, "dense3_in": f3, "dense3": h4}
        full = {"conv1": source.conv1.out_channels, "conv2": source.conv2.out_channels,
                "dense3_in": source.dense3.in_features, "dense3": source.dense3.out_features}
        kept, fills = [c1, c2, h4], [full["conv1"], full["conv2"], full["dense3"]]
        probes = [0, _rows(state_dict, "conv2_probe.weight"), _rows(state_dict, "dense3_probe.weight")]
        flat = c2 * (full["dense3_in"] // full["conv2"])  # conv2 channels x 16 positions
        if "dense3_index" in state_dict:
            _check_index(state_dict, "dense3_index", f3, flat)
        elif f3 != flat:
            raise ValueError(f"dense3 takes {f3} inputs but conv2 gives {flat}")
        source_in = source.conv1.in_channels
    elif isinstance(source, VGG16):
        n = len(source.convs)
        widths = [dims(f"convs.{i}.weight", 4)[0] for i in range(n)]
        cin, (hidden, classes) = dims("convs.0.weight", 4)[1], (dims("dense14.weight", 2)[0],
                                                                dims("dense15.weight", 2)[0])
        got = {**{f"conv{i + 1}": w for i, w in enumerate(widths)}, "dense14": hidden}
        full = {**{f"conv{i + 1}": c.out_channels for i, c in enumerate(source.convs)},
                "dense14": source.dense14.out_features}
        kept, fills = [*widths, hidden, hidden], [*list(full.values())[:n], full["dense14"], full["dense14"]]
        p14 = _rows(state_dict, "dense14_probe.weight")
        probes = [0] * (n - 1) + [_rows(state_dict, "conv13_probe.weight"), p14, p14]
        source_in = source.convs[0].in_channels
    else:
        raise TypeError(f"not a LeNet5-Caffe or VGG-16 source model: {type(source).__name__}")
    outside = [f"{k}={v} (source {full[k]})" for k, v in got.items() if not 1 <= v <= full[k]]
    outside += [f"probe of latent {i} {p} (source {w})"
                for i, (p, w) in enumerate(zip(probes, fills, strict=True)) if p > w]
    if outside:
        raise ValueError(f"layer widths outside the source model's: {', '.join(outside)}")
    if (cin, classes) != (source_in, source.num_classes):
        raise ValueError(f"it takes {cin} input channels and predicts {classes} classes, its source model "
                         f"{source_in} and {source.num_classes}")
    try:
        sizes = _LatentMaps.sizes(state_dict)
    except KeyError as e:
        raise ValueError(f"{e.args[0]} is missing") from None
    if sizes is not None:
        if len(sizes) != len(fills):
            raise ValueError(f"{len(sizes)} latent maps, the source model has {len(fills)} latents")
        for i, ((placed, width), k, p, w) in enumerate(zip(sizes, kept, probes, fills, strict=True)):
            if width != w or not 0 <= placed - p <= k:
                raise ValueError(f"latent map {i} places {placed} units in {width}; the source latent has {w} "
                                 f"units, the network computes {k} + {p}")
            _check_index(state_dict, f"latent_maps.index{i}", placed, w)
    try:  # the exact keys and shapes, on the meta device
        with torch.device("meta"):
            compact_from_state_dict({k: v.to("meta") for k, v in state_dict.items()})
    except (KeyError, RuntimeError, ValueError) as e:
        detail = "; ".join(ln.strip() for ln in str(e).splitlines()[1:3]) or str(e)
        raise ValueError(f"its tensors do not fit a compacted {source.arch} ({detail[:200]})") from None


def _check_index(state_dict: Mapping[str, Tensor], key: str, n: int, bound: int) -> None:
    """``state_dict[key]``: ``n`` distinct int64 indices in ``[0, bound)``."""
    t = state_dict[key]
    if t.dtype != torch.int64 or t.dim() != 1 or t.numel() != n:
        raise ValueError(f"{key} is not {n} int64 indices")
    if n and (int(t.min()) < 0 or int(t.max()) >= bound or t.unique().numel() != n):
        raise ValueError(f"{key} holds indices outside 0..{bound - 1} or repeated ones")


# --------------------------------------------------------------------------- folding helpers


def _scale(mask: nn.Module, n: int, like: Tensor) -> Tensor:
    """The eval-mode factor of every unit behind ``mask``: thresholded E[pi], or ones for no mask."""
    if isinstance(mask, BetaBernoulliDropout):
        return mask.expected_pi().detach().to(device=like.device, dtype=like.dtype)
    if isinstance(mask, nn.Identity):
        return torch.ones(n, device=like.device, dtype=like.dtype)
    raise TypeError(f"cannot compact through a {type(mask).__name__} mask")


def _index(keep: Tensor) -> Tensor:
    return keep.nonzero().flatten()


def _select(t: Tensor, dim: int, idx: Tensor, scale: Tensor | None = None) -> Tensor:
    """``t`` restricted to ``idx`` along ``dim``, times ``scale[idx]`` there; an empty ``idx`` gives one
    all-zero slice (the placeholder unit of a layer left with no unit)."""
    if idx.numel() == 0:
        shape = list(t.shape)
        shape[dim] = 1
        return t.new_zeros(shape)
    out = t.detach().index_select(dim, idx)
    if scale is not None:
        view = [1] * t.dim()
        view[dim] = -1
        out = out * scale.index_select(0, idx).view(view)
    return out


def _bn_state(bn: nn.modules.batchnorm._BatchNorm, idx: Tensor, prefix: str) -> dict[str, Tensor]:
    return {
        f"{prefix}.weight": _select(bn.weight, 0, idx),
        f"{prefix}.bias": _select(bn.bias, 0, idx),
        f"{prefix}.running_mean": _select(bn.running_mean, 0, idx),
        f"{prefix}.running_var": _select(bn.running_var, 0, idx),
        f"{prefix}.num_batches_tracked": bn.num_batches_tracked.detach().clone(),
    }


def _pruned_constant(bn: nn.modules.batchnorm._BatchNorm) -> Tensor:
    """``ReLU(BN_eval(0))`` per channel: what a channel zeroed before BN carries after BN + ReLU."""
    zero = torch.zeros(1, bn.num_features, device=bn.running_mean.device, dtype=bn.running_mean.dtype)
    out = F.batch_norm(zero, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return F.relu(out)[0].detach()


# --------------------------------------------------------------------------- builders


def _lenet_state(model: LeNet5Caffe, latents: bool = False) -> dict[str, Tensor]:
    w1 = model.conv1.weight
    e1 = _scale(model.mask1, model.conv1.out_channels, w1)
    e2 = _scale(model.mask2, model.conv2.out_channels, w1)
    e3 = _scale(model.mask3, model.dense3.in_features, w1)
    e4 = _scale(model.mask4, model.dense3.out_features, w1)
    c2_all = model.conv2.out_channels
    spatial = model.dense3.in_features // c2_all  # 16 flattened positions per conv2 channel
    # a flattened input of dense3 is live if its conv2 channel and its own mask3 unit are both kept
    pos_live = (e3 > 0) & (e2 > 0).repeat_interleave(spatial)
    ch_live = pos_live.view(c2_all, spatial).any(1)  # conv2 channels with at least one live position
    idx1, idx2, idx3, idx4 = _index(e1 > 0), _index(ch_live), _index(pos_live), _index(e4 > 0)
    # position of each live flattened input in the compact flatten (kept channels only, in order)
    rank = torch.cumsum(ch_live.long(), 0) - 1
    gather_idx = rank[idx3 // spatial] * spatial + idx3 % spatial
    n_flat = max(idx2.numel(), 1) * spatial
    if idx3.numel() == 0:
        gather_idx = torch.zeros(1, dtype=torch.long, device=w1.device)  # reads the placeholder's 0
    gather = not torch.equal(gather_idx, torch.arange(n_flat, device=w1.device))
    all_in = torch.arange(model.conv1.in_channels, device=w1.device)
    sd = {
        "conv1.weight": _select(_select(model.conv1.weight, 0, idx1, e1), 1, all_in),
        "conv1.bias": _select(model.conv1.bias, 0, idx1, e1),
        "conv2.weight": _select(_select(model.conv2.weight, 0, idx2, e2), 1, idx1),
        "conv2.bias": _select(model.conv2.bias, 0, idx2, e2),
        "dense3.weight": _select(_select(model.dense3.weight, 0, idx4), 1, idx3, e3),
        "dense3.bias": _select(model.dense3.bias, 0, idx4),
        "dense4.weight": _select(model.dense4.weight, 1, idx4, e4),
        "dense4.bias": model.dense4.bias.detach().clone(),
    }
    if gather:
        sd["dense3_index"] = gather_idx
    if latents:
        # conv2 channels kept by mask2 whose positions mask3 all prunes, dense3 units pruned by mask4: the
        # masked model computes them (they are in its latents) but they never reach the logits
        idx2p, idx4p = _index((e2 > 0) & ~ch_live), _index(e4 <= 0)
        if idx2p.numel():
            sd["conv2_probe.weight"] = _select(_select(model.conv2.weight, 0, idx2p, e2), 1, idx1)
            sd["conv2_probe.bias"] = _select(model.conv2.bias, 0, idx2p, e2)
        if idx4p.numel():
            sd["dense3_probe.weight"] = _select(_select(model.dense3.weight, 0, idx4p), 1, idx3, e3)
            sd["dense3_probe.bias"] = _select(model.dense3.bias, 0, idx4p)
        maps = ((idx1, model.conv1.out_channels), (torch.cat([idx2, idx2p]), c2_all),
                (torch.cat([idx4, idx4p]), model.dense3.out_features))
        for i, (index, width) in enumerate(maps):
            sd[f"latent_maps.index{i}"] = index
            sd[f"latent_maps.fill{i}"] = w1.new_zeros(width)  # removed LeNet units output 0
    return sd


def _vgg_state(model: VGG16, latents: bool = False) -> dict[str, Tensor]:
    like = model.convs[0].weight
    scales = [_scale(m, conv.out_channels, like) for m, conv in zip(model.masks, model.convs, strict=True)]
    e14 = _scale(model.mask14, model.dense14.in_features, like)
    e15 = _scale(model.mask15, model.dense15.in_features, like)
    kept = [e > 0 for e in scales]
    # conv13 channels pruned by mask14 have no consumer
    live = kept[:-1] + [kept[-1] & (e14 > 0)]
    consts = [_pruned_constant(bn) * (~k) for bn, k in zip(model.bns, kept, strict=True)]
    idx = [_index(k) for k in live]
    sd: dict[str, Tensor] = {
        "normalize.mean": model.normalize.mean.detach().clone(),
        "normalize.std": model.normalize.std.detach().clone(),
    }
    in_idx = torch.arange(model.convs[0].in_channels, device=like.device)
    for i, conv in enumerate(model.convs):
        w_out = _select(conv.weight, 0, idx[i], scales[i])  # kept output channels, E[pi] folded in
        sd[f"convs.{i}.weight"] = _select(w_out, 1, in_idx)
        sd[f"convs.{i}.bias"] = _select(conv.bias, 0, idx[i], scales[i])
        if i > 0 and bool((consts[i - 1] != 0).any()):
            # removed input channels that carry a non-zero constant: one summed kernel, exact at borders
            sd[f"convs.{i}.const_weight"] = (w_out * consts[i - 1].view(1, -1, 1, 1)).sum(1, keepdim=True)
        sd.update(_bn_state(model.bns[i], idx[i], f"bns.{i}"))
        in_idx = idx[i]
    # head: conv13 output is 1x1, so flatten index == channel and the constants fold into dense14's bias
    out_idx = _index(e15 > 0)
    w14 = _select(model.dense14.weight, 0, out_idx)
    sd["dense14.weight"] = _select(w14, 1, in_idx, e14)
    sd["dense14.bias"] = _select(model.dense14.bias, 0, out_idx) + w14 @ (e14 * consts[-1])
    sd.update(_bn_state(model.bn14, out_idx, "bn14"))
    sd["dense15.weight"] = _select(model.dense15.weight, 1, out_idx, e15)
    sd["dense15.bias"] = model.dense15.bias.detach().clone()
    if latents:
        # conv13 channels kept by mask13 but pruned by mask14, dense14 units pruned by mask15: in the masked
        # model's latents, never in its logits
        last = len(model.convs) - 1
        idx13p = _index(kept[-1] & ~live[-1])
        idx15p = _index(e15 <= 0)
        if idx13p.numel():
            conv = model.convs[last]
            w_p = _select(conv.weight, 0, idx13p, scales[last])
            sd["conv13_probe.weight"] = _select(w_p, 1, idx[last - 1])
            sd["conv13_probe.bias"] = _select(conv.bias, 0, idx13p, scales[last])
            if bool((consts[last - 1] != 0).any()):
                sd["conv13_probe.const_weight"] = (w_p * consts[last - 1].view(1, -1, 1, 1)).sum(1, keepdim=True)
            sd.update(_bn_state(model.bns[last], idx13p, "bn13_probe"))
        if idx15p.numel():
            w14p = _select(model.dense14.weight, 0, idx15p)
            sd["dense14_probe.weight"] = _select(w14p, 1, in_idx, e14)
            sd["dense14_probe.bias"] = _select(model.dense14.bias, 0, idx15p) + w14p @ (e14 * consts[-1])
            sd.update(_bn_state(model.bn14, idx15p, "bn14_probe"))
        maps = [(torch.cat([idx[i], idx13p]) if i == last else idx[i], consts[i]) for i in range(last + 1)]
        head = torch.cat([out_idx, idx15p])
        maps += [(head, like.new_zeros(model.dense14.out_features))] * 2
        for i, (index, fill) in enumerate(maps):
            sd[f"latent_maps.index{i}"] = index
            sd[f"latent_maps.fill{i}"] = fill.clone()  # a removed channel's constant after BN + ReLU
    return sd


def compact(model: nn.Module, *, latents: bool = False) -> nn.Module:
    """A plain, physically smaller network computing ``model``'s eval-mode forward (logits).

    Accepts ``lenet5_caffe_bbd`` / ``vgg16_bbd`` (pruned units removed, E[pi] folded into the weights,
    VGG's pruned-channel constants folded exactly, see the module docstring) and the unmasked
    ``lenet5_caffe`` / ``vgg16`` (a plain copy of the same size). ``model`` is not modified. Returns a
    :class:`CompactLeNet5Caffe` or :class:`CompactVGG16` in eval mode, on ``model``'s device and dtype;
    its ``state_dict`` holds only tensors, and :func:`compact_from_state_dict` rebuilds it.

    ``latents=True`` adds latent maps (:class:`_LatentMaps`): ``forward_intermediates`` then returns the
    masked model's latents at full width, so that the vulnerability of the compacted network equals the
    masked one's. They cost parameters (units that the masked model computes but that never reach the
    logits) but no time in ``forward``; :func:`deployable` drops them.

    >>> from anpvs.models import create_model
    >>> small = compact(create_model("lenet5_caffe_bbd"))
    >>> small(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    with torch.no_grad():
        if isinstance(model, LeNet5Caffe):
            sd = _lenet_state(model, latents)
            build = CompactLeNet5Caffe.from_state_dict
        elif isinstance(model, VGG16):
            sd = _vgg_state(model, latents)
            eps = model.bns[0].eps

            def build(state: Mapping[str, Tensor]) -> nn.Module:
                return CompactVGG16.from_state_dict(state, bn_eps=eps)
        else:
            raise TypeError(f"compact() supports LeNet5Caffe and VGG16 models, got {type(model).__name__}")
        sd = {k: v.contiguous() for k, v in sd.items()}
        with torch.device("meta"):
            net = build({k: v.to("meta") for k, v in sd.items()})
        net.load_state_dict(sd, assign=True)
    net.source_units = list(active_units(model))
    net.source_model_name = getattr(model, "model_name", None)
    net.source_model_kwargs = dict(getattr(model, "model_kwargs", {}))
    return net.eval()


def compact_widths(net: nn.Module) -> dict[str, int]:
    """Layer widths of a compacted network, e.g. ``{"conv1": 4, "conv2": 23, "dense3_in": 61, "dense3": 129}``."""
    if isinstance(net, CompactLeNet5Caffe):
        return {"conv1": net.conv1.out_channels, "conv2": net.conv2.out_channels,
                "dense3_in": net.dense3.in_features, "dense3": net.dense3.out_features}
    if isinstance(net, CompactVGG16):
        convs = {f"conv{i + 1}": c.out_channels for i, c in enumerate(net.convs)}
        return {**convs, "dense14": net.dense14.out_features}
    raise TypeError(f"not a compacted network: {type(net).__name__}")


def is_compact(model: nn.Module) -> bool:
    """Whether ``model`` is a compacted network (:class:`CompactLeNet5Caffe` or :class:`CompactVGG16`)."""
    return isinstance(model, (CompactLeNet5Caffe, CompactVGG16))


def deployable(net: nn.Module) -> nn.Module:
    """``net`` without its latent maps and probe units (same logits, for export and timing); ``net`` itself
    when it has none."""
    if getattr(net, "latent_maps", None) is None:
        return net
    drop = ("latent_maps.", "conv2_probe.", "dense3_probe.", "conv13_probe.", "bn13_probe.", "dense14_probe.",
            "bn14_probe.")
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith(drop)}
    eps = net.bns[0].eps if isinstance(net, CompactVGG16) else 1e-3
    out = compact_from_state_dict(sd, bn_eps=eps).to(next(net.parameters()).device)
    for key in ("source_units", "source_model_name", "source_model_kwargs"):
        if hasattr(net, key):
            setattr(out, key, getattr(net, key))
    return out


def masked_reference(net: nn.Module) -> nn.Module:
    """A freshly built masked (or plain) model of the architecture a compacted network came from, in eval
    mode on ``net``'s device: the cost reference of a compacted checkpoint (its weights are irrelevant,
    a masked forward costs the same for any mask values)."""
    name = getattr(net, "source_model_name", None)
    if not name:
        raise ValueError("this compacted network does not record the model it was compacted from")
    from .models import create_model

    return create_model(name, **getattr(net, "source_model_kwargs", {})).to(next(net.parameters()).device).eval()


def example_shape(model: nn.Module) -> tuple[int, int, int]:
    """One example's shape: ``(C, 28, 28)`` for LeNet5-Caffe, ``(C, 32, 32)`` for VGG-16 (compacted or not)."""
    if isinstance(model, (LeNet5Caffe, CompactLeNet5Caffe)):
        return (model.conv1.in_channels, 28, 28)
    if isinstance(model, VGG16):
        return (model.convs[0].in_channels, 32, 32)
    if isinstance(model, CompactVGG16):
        return (model.normalize.mean.shape[1], 32, 32)
    raise TypeError(f"compact_stats() supports LeNet5Caffe and VGG16 models, got {type(model).__name__}")


def compact_pair(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(masked, compacted)``: the network as trained and its deployable compacted form. For a compacted
    network (e.g. loaded from ``anpvs compact``'s checkpoint) the masked one is :func:`masked_reference`."""
    if is_compact(model):
        return masked_reference(model), deployable(model)
    return model, compact(model)


def compact_stats(model: nn.Module, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Size and FlopCounterMode cost of :func:`compact` ``(model)`` next to those of ``model`` itself.

    ``model`` is a masked / plain LeNet5-Caffe or VGG-16, or a compacted network (then the masked side is
    :func:`masked_reference`). ``input_shape`` is one example's shape (default: :func:`example_shape`).
    Returns

    * ``compact_params``: parameters of the compacted network (conv / linear weights and biases, BN
      affine parameters and any :class:`ConstantInputConv2d` ``const_weight``; no mask parameters, no
      latent maps);
    * ``compact_bytes``: bytes of every tensor in its state dict (BN running statistics and index
      buffers included), i.e. what ``torch.save`` stores apart from pickling overhead;
    * ``compact_flops`` / ``dense_flops``: :func:`~anpvs.metrics.efficiency.measured_flops` of the
      compacted network and of the masked one (masks do not make the original cheaper);
    * ``counted_flops_speedup``: ``dense_flops / compact_flops``, FLOPs as FlopCounterMode counts them
      (not time: see :mod:`anpvs.metrics.latency`). Records written before it was renamed call it
      ``measured_speedup``.
    """
    masked, net = compact_pair(model)
    shape = tuple(operator.index(s) for s in input_shape) if input_shape is not None else example_shape(masked)
    compact_flops = measured_flops(net, shape)
    dense_flops = measured_flops(masked, shape)
    return {
        "compact_params": sum(p.numel() for p in net.parameters()),
        "compact_bytes": sum(t.numel() * t.element_size() for t in net.state_dict().values()),
        "compact_flops": compact_flops,
        "dense_flops": dense_flops,
        "counted_flops_speedup": dense_flops / compact_flops if compact_flops else float("inf"),
    }


def attack_network(model: nn.Module) -> nn.Module:
    """The network an attack should differentiate: :func:`compact` ``(model)`` for a masked model, else ``model``.

    A masked model's test-mode function is the compacted network's (same logits to float rounding), so
    its input gradients, and the adversarial examples of any attack on it, are the same; the compacted
    network costs what the surviving units cost (10.6x fewer FLOPs at the paper's MNIST widths) and has
    no mask arithmetic. It is a snapshot: build it again after the masks change (it is cheap, see
    docs/performance.md). Its parameters do not require gradients. Unmasked models (and BNNs, whose
    eval forward may sample) are returned unchanged.
    """
    if not bbd_layers(model) or not isinstance(model, (LeNet5Caffe, VGG16)):
        return model
    net = compact(model)
    for p in net.parameters():
        p.requires_grad_(False)
    return net
