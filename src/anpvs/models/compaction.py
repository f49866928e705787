"""The building blocks of compacted networks (:mod:`anpvs.models.compact`), shared by every architecture's file.

* :class:`CompactNetwork`: the protocol of a compacted network (``arch``, ``signature``, ``widths``,
  ``input_shape``, ``from_state_dict``, ``layout``);
* modules: :class:`ConstantInputConv2d`, :class:`LatentMaps`, the 2x2 pools;
* folding helpers for ``compact_state``: :func:`scale_of` (E[pi] of a mask), :func:`index_of`, :func:`select`
  (a slice of a weight times E[pi], or a zero placeholder), :func:`bn_state`, :func:`pruned_constant`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.beta_bernoulli import BetaBernoulliDropout
from ..nn.fast import conv2d_maxpool2x2, inference_conv2d, max_pool2d


class Layout(NamedTuple):
    """What :func:`anpvs.models.compact.check_compact_state` checks of a compacted state dict against its source.

    ``got`` / ``full``: layer widths of the state dict and of the source (by layer name); ``kept``, ``probes``,
    ``fills``: per latent, the units the network computes, its probe units and the source latent's width;
    ``in_channels`` / ``classes``: what the state dict takes and predicts."""

    got: dict[str, int]
    full: dict[str, int]
    kept: list[int]
    probes: list[int]
    fills: list[int]
    in_channels: int
    classes: int


class CompactNetwork:
    """Mixin of every compacted network (an ``nn.Module``): the eval-mode function of a masked model with the
    pruned units removed. Subclasses set ``arch`` (the masked model's) and ``signature`` (a state-dict key that
    only this architecture's compacted networks have) and implement the methods below."""

    arch: str
    signature: str
    #: state-dict prefixes of the evaluation-only parts (latent maps, probe units) that ``deployable`` drops
    eval_only: tuple[str, ...] = ("latent_maps.",)

    #: one example's shape (C, H, W)
    input_shape: tuple[int, int, int]

    def widths(self) -> dict[str, int]:  # pragma: no cover
        """Layer widths, e.g. ``{"conv1": 4, "conv2": 23, ...}`` (a compacted checkpoint records them)."""
        raise NotImplementedError

    def compact_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that the state dict does not hold (VGG's ``bn_eps``)."""
        return {}

    @classmethod
    def source_kwargs(cls, model: nn.Module) -> dict[str, Any]:
        """:meth:`compact_kwargs` of the network compacted from the masked ``model``."""
        return {}

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], **kwargs: Any) -> CompactNetwork:  # pragma: no cover
        """Rebuild the network (shapes read from ``state_dict``) and load ``state_dict`` into it."""
        raise NotImplementedError

    @classmethod
    def layout(cls, state_dict: Mapping[str, Tensor], source: nn.Module) -> Layout:  # pragma: no cover
        """Widths of ``state_dict`` next to those of ``source``; ``ValueError`` (one line) where they do not chain."""
        raise NotImplementedError


def dims(state_dict: Mapping[str, Tensor], key: str, ndim: int) -> tuple[int, ...]:
    """The shape of ``state_dict[key]``; ``ValueError`` unless it is an ``ndim``-d tensor."""
    t = state_dict.get(key)
    if not isinstance(t, Tensor) or t.dim() != ndim:
        raise ValueError(f"{key} is missing or not a {ndim}-d tensor")
    return tuple(t.shape)


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


def pool(x: Tensor) -> Tensor:
    """2x2 max-pool of the compacted networks: :func:`max_pool2x2` for inference; when autograd records (an
    attack), ``F.max_pool2d`` (:func:`anpvs.nn.fast.max_pool2d`), whose gradient goes to one element of a
    window. ``torch.maximum`` splits the gradient of tied elements, which are common in MNIST's constant
    background, so its input gradients would differ from the masked network's, not just by rounding."""
    if torch.is_grad_enabled() and x.requires_grad:
        return max_pool2d(x, 2)
    return max_pool2x2(x)


def conv_pool(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``pool(conv(x))``; for inference of a narrow-input conv, :func:`anpvs.nn.fast.conv2d_maxpool2x2`."""
    out = conv2d_maxpool2x2(conv, x)
    return pool(inference_conv2d(conv, x)) if out is None else out


class LatentMaps(nn.Module):
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


def rows(state_dict: Mapping[str, Tensor], key: str) -> int:
    return state_dict[key].shape[0] if key in state_dict else 0



def check_index(state_dict: Mapping[str, Tensor], key: str, n: int, bound: int) -> None:
    """``state_dict[key]``: ``n`` distinct int64 indices in ``[0, bound)``."""
    t = state_dict[key]
    if t.dtype != torch.int64 or t.dim() != 1 or t.numel() != n:
        raise ValueError(f"{key} is not {n} int64 indices")
    if n and (int(t.min()) < 0 or int(t.max()) >= bound or t.unique().numel() != n):
        raise ValueError(f"{key} holds indices outside 0..{bound - 1} or repeated ones")


# --------------------------------------------------------------------------- folding helpers


def scale_of(mask: nn.Module, n: int, like: Tensor) -> Tensor:
    """The eval-mode factor of every unit behind ``mask``: thresholded E[pi], or ones for no mask."""
    if isinstance(mask, BetaBernoulliDropout):
        return mask.expected_pi().detach().to(device=like.device, dtype=like.dtype)
    if isinstance(mask, nn.Identity):
        return torch.ones(n, device=like.device, dtype=like.dtype)
    raise TypeError(f"cannot compact through a {type(mask).__name__} mask")


def index_of(keep: Tensor) -> Tensor:
    return keep.nonzero().flatten()


def select(t: Tensor, dim: int, idx: Tensor, scale: Tensor | None = None) -> Tensor:
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


def bn_state(bn: nn.modules.batchnorm._BatchNorm, idx: Tensor, prefix: str) -> dict[str, Tensor]:
    return {
        f"{prefix}.weight": select(bn.weight, 0, idx),
        f"{prefix}.bias": select(bn.bias, 0, idx),
        f"{prefix}.running_mean": select(bn.running_mean, 0, idx),
        f"{prefix}.running_var": select(bn.running_var, 0, idx),
        f"{prefix}.num_batches_tracked": bn.num_batches_tracked.detach().clone(),
    }


def pruned_constant(bn: nn.modules.batchnorm._BatchNorm) -> Tensor:
    """``ReLU(BN_eval(0))`` per channel: what a channel zeroed before BN carries after BN + ReLU."""
    zero = torch.zeros(1, bn.num_features, device=bn.running_mean.device, dtype=bn.running_mean.dtype)
    out = F.batch_norm(zero, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return F.relu(out)[0].detach()


def remove_hidden_channels(state: dict[str, Tensor], mask: nn.Module, first: str, bn: str, second: str) -> int:
    """Remove, in the state dict ``state``, the channels a mask prunes between two layers: ``first`` (a conv whose
    output channels the mask covers) -> BN ``bn`` -> ReLU -> mask -> ``second`` (the conv that reads them).

    A pruned channel is exactly 0 after the mask, so it goes with its rows of ``first``, its BN entries and its
    columns of ``second``; a kept channel's E[pi] is folded into ``second``'s columns. A block left with no
    channel keeps one all-zero placeholder (exact: it outputs 0). Returns the number of channels kept."""
    w1 = state[f"{first}.weight"]
    e = scale_of(mask, w1.shape[0], w1)
    idx = index_of(e > 0)
    state[f"{first}.weight"] = select(w1, 0, idx)
    if f"{first}.bias" in state:
        state[f"{first}.bias"] = select(state[f"{first}.bias"], 0, idx)
    for key in ("weight", "bias", "running_mean", "running_var"):
        state[f"{bn}.{key}"] = select(state[f"{bn}.{key}"], 0, idx)
    state[f"{second}.weight"] = select(state[f"{second}.weight"], 1, idx, e)
    return idx.numel()


def plain_state(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s state dict without its mask parameters (detached copies)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith((".a_uc", ".b_uc"))}


def residual_layout(state_dict: Mapping[str, Tensor], source: nn.Module, stem: str, head: str,
                    latent_widths: Sequence[int]) -> Layout:
    """The :class:`Layout` of a compacted residual network whose blocks ``blocks.i`` have masked hidden channels
    between ``conv1`` and ``conv2``: the hidden widths may shrink, the residual stream (``conv2``'s outputs) is
    the source's; ``stem`` / ``head`` are the keys of the first conv and the classifier's weight, and
    ``latent_widths`` the source's latent widths (full width: no latent maps)."""
    n = len(source.blocks)
    stream = [dims(state_dict, f"blocks.{i}.conv2.weight", 4)[0] for i in range(n)]
    full_stream = [b.conv2.out_channels for b in source.blocks]
    if stream != full_stream:
        raise ValueError(f"its residual widths {stream} are not its source's {full_stream}")
    got = {f"block{i + 1}": dims(state_dict, f"blocks.{i}.conv1.weight", 4)[0] for i in range(n)}
    full = {f"block{i + 1}": b.conv1.out_channels for i, b in enumerate(source.blocks)}
    widths = list(latent_widths)
    return Layout(got=got, full=full, kept=widths, probes=[0] * len(widths), fills=widths,
                  in_channels=dims(state_dict, stem, 4)[1], classes=dims(state_dict, head, 2)[0])
