"""Physically compacted networks: the eval-mode function of a unit-pruned model with the pruned units removed.

:func:`compact` turns a masked model (or its unmasked twin) of any architecture that implements the
architecture protocol (:mod:`anpvs.models.base`: ``compact_class`` and ``compact_state``) into a plain
network of conv, linear and BN layers with fewer channels and features whose eval forward gives the same
logits as the masked model's (up to float rounding). It is an inference artefact: it has no masks and no
dropout, and is returned in eval mode.

This module names no architecture: each model file holds its compacted network and its folding rule
(``compact_state``), built from :mod:`anpvs.models.compaction`. What the paper's two networks fold where
(e_k is the thresholded E[pi_k] of a mask, 0 for a pruned unit):

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
from torch import Tensor, nn

from ..core.registry import ARCHITECTURES
from ..metrics.efficiency import counted_report, efficiency_report, measured_flops, model_full_units, weight_stats
from ..nn.beta_bernoulli import bbd_layers
from .compaction import CompactNetwork, ConstantInputConv2d, LatentMaps, check_index, max_pool2x2
from .masks import active_units

__all__ = [
    "ConstantInputConv2d",
    "attack_network",
    "check_compact_state",
    "compact",
    "compact_class",
    "compact_from_state_dict",
    "compact_pair",
    "compact_stats",
    "compact_widths",
    "deployable",
    "efficiency_columns",
    "example_shape",
    "is_compact",
    "masked_reference",
    "max_pool2x2",
]


def _compactable(model: nn.Module) -> bool:
    return getattr(model, "compact_class", None) is not None and hasattr(model, "compact_state")


def compact(model: nn.Module, *, latents: bool = False) -> nn.Module:
    """A plain, physically smaller network computing ``model``'s eval-mode forward (logits).

    Accepts every model whose architecture declares its compacted network (``compact_class`` and
    ``compact_state``, :mod:`anpvs.models.base`), masked (pruned units removed, E[pi] folded into the weights,
    see the module docstring) or unmasked (a plain copy of the same size). ``model`` is not modified. Returns
    its ``compact_class`` (a :class:`~anpvs.models.compaction.CompactNetwork`) in eval mode, on ``model``'s
    device and dtype; its ``state_dict`` holds only tensors, and :func:`compact_from_state_dict` rebuilds it.

    ``latents=True`` adds latent maps (:class:`~anpvs.models.compaction.LatentMaps`) where the masked model's
    latents hold units the compacted network does not compute: ``forward_intermediates`` then returns the
    masked model's latents at full width, so that the vulnerability of the compacted network equals the
    masked one's. They cost parameters (units that the masked model computes but that never reach the
    logits) but no time in ``forward``; :func:`deployable` drops them.

    >>> from anpvs.models import create_model
    >>> small = compact(create_model("lenet5_caffe_bbd"))
    >>> small(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    if not _compactable(model):
        raise TypeError(f"compact() supports models that declare their compacted network (compact_class and "
                        f"compact_state, e.g. LeNet5Caffe and VGG16), got {type(model).__name__}")
    with torch.no_grad():
        sd = {k: v.contiguous() for k, v in model.compact_state(latents).items()}
        kwargs = _build_kwargs(model)
        with torch.device("meta"):
            net = model.compact_class.from_state_dict({k: v.to("meta") for k, v in sd.items()}, **kwargs)
        net.load_state_dict(sd, assign=True)
    net.source_units = list(active_units(model))
    net.source_model_name = getattr(model, "model_name", None)
    net.source_model_kwargs = dict(getattr(model, "model_kwargs", {}))
    return net.eval()


def _build_kwargs(model: nn.Module) -> dict[str, Any]:
    """The compacted network's constructor arguments that its state dict does not hold (e.g. a BN epsilon)."""
    return model.compact_class.source_kwargs(model)


def compact_class(state_dict: Mapping[str, Tensor]) -> type:
    """The compacted-network class whose ``signature`` key ``state_dict`` holds; ``ValueError`` if none."""
    for _, cls in ARCHITECTURES.items():
        net_cls = getattr(cls, "compact_class", None)
        if net_cls is not None and net_cls.signature in state_dict:
            return net_cls
    raise ValueError("not the state dict of a compacted network of a registered architecture")


def compact_widths(net: nn.Module) -> dict[str, int]:
    """Layer widths of a compacted network, e.g. ``{"conv1": 4, "conv2": 23, "dense3_in": 61, "dense3": 129}``."""
    if not isinstance(net, CompactNetwork):
        raise TypeError(f"not a compacted network: {type(net).__name__}")
    return net.widths()


def is_compact(model: nn.Module) -> bool:
    """Whether ``model`` is a compacted network (a :class:`~anpvs.models.compaction.CompactNetwork`)."""
    return isinstance(model, CompactNetwork)


def deployable(net: nn.Module) -> nn.Module:
    """``net`` without its latent maps and probe units (same logits, for export and timing); ``net`` itself
    when it has none."""
    if getattr(net, "latent_maps", None) is None:
        return net
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith(net.eval_only)}
    out = type(net).from_state_dict(sd, **net.compact_kwargs()).eval().to(next(net.parameters()).device)
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
    from . import create_model

    return create_model(name, **getattr(net, "source_model_kwargs", {})).to(next(net.parameters()).device).eval()


def example_shape(model: nn.Module) -> tuple[int, int, int]:
    """One example's shape ``(C, H, W)`` (the architecture protocol's ``input_shape``; compacted or not)."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise TypeError(f"compact_stats() supports models that declare their input_shape, got {type(model).__name__}")
    return tuple(shape)


def compact_pair(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(masked, compacted)``: the network as trained and its deployable compacted form. For a compacted
    network (e.g. loaded from ``anpvs compact``'s checkpoint) the masked one is :func:`masked_reference`."""
    if is_compact(model):
        return masked_reference(model), deployable(model)
    return model, compact(model)


def compact_stats(model: nn.Module, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Size and FlopCounterMode cost of :func:`compact` ``(model)`` next to those of ``model`` itself.

    ``model`` is a masked / plain model of a compactable architecture, or a compacted network (then the masked
    side is :func:`masked_reference`). ``input_shape`` is one example's shape (default: :func:`example_shape`).
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
      ``measured_speedup``;
    * ``compact_widths``: the compacted network's layer widths (:func:`compact_widths`): the units that compute,
      which can be fewer than the masks keep (a kept conv channel that feeds no kept unit is removed).
    """
    masked, net = compact_pair(model)
    shape = tuple(operator.index(s) for s in input_shape) if input_shape is not None else example_shape(masked)
    compact_flops = measured_flops(net, shape)
    dense_flops = measured_flops(masked, shape)
    return {
        "compact_params": weight_stats(net)["params"],
        "compact_bytes": sum(t.numel() * t.element_size() for t in net.state_dict().values()),
        "compact_flops": compact_flops,
        "dense_flops": dense_flops,
        "counted_flops_speedup": dense_flops / compact_flops if compact_flops else float("inf"),
        "compact_widths": compact_widths(net),
    }


def efficiency_columns(model: nn.Module, units: Sequence[int] | None = None, *, net: nn.Module | None = None,
                       legacy_memory: bool = False) -> dict[str, Any]:
    """The paper's efficiency columns of a masked (or plain) model with ``units`` active units per mask (default:
    its own): :func:`~anpvs.metrics.efficiency.efficiency_report` by the paper's formulas where its architecture
    declares them (``analytic_flops``), else :func:`~anpvs.metrics.efficiency.counted_report`: FLOPs counted on
    its compacted network (``net``, default :func:`compact` ``(model)``; pass it where ``model`` is only the
    cost reference of a compacted checkpoint) and on its unpruned network, memory as their parameter counts."""
    units = list(active_units(model) if units is None else units)
    full = model_full_units(model)
    if getattr(model, "analytic_flops", None) is not None:
        return efficiency_report(model.arch, units, num_classes=model.num_classes, legacy_memory=legacy_memory,
                                 full=full)
    net, shape = compact(model) if net is None else net, example_shape(model)
    return counted_report(units, full, flops=measured_flops(net, shape), flops_orig=measured_flops(model, shape),
                          memory=weight_stats(net)["params"], memory_orig=weight_stats(model)["params"])


def compact_from_state_dict(state_dict: Mapping[str, Tensor], **kwargs: Any) -> nn.Module:
    """Rebuild a compacted network from its state dict (e.g. ``torch.load(path, weights_only=True)``); the
    architecture is recognized by its ``signature`` key.

    ``kwargs``: what the state dict does not hold (VGG's ``bn_eps``; a compacted checkpoint stores it)."""
    return compact_class(state_dict).from_state_dict(state_dict, **kwargs).eval()


def check_compact_state(state_dict: Mapping[str, Tensor], source: nn.Module) -> None:
    """Raise ``ValueError`` (one line) unless ``state_dict`` is a compacted network of ``source``, the model it
    was compacted from (built on the ``meta`` device: only its widths are read).

    Every layer is 1 to the source's width wide, input channels and classes are the source's, latent maps are
    exactly as wide as the source's latents and place at most the units the network computes, and every
    index is an int64 in range; then the network is rebuilt on the ``meta`` device and the state dict must
    fit it key for key and shape for shape. Nothing here allocates memory."""
    if not _compactable(source):
        raise TypeError(f"not a source model with a compacted network: {type(source).__name__}")
    net_cls = source.compact_class
    lay = net_cls.layout(state_dict, source)
    outside = [f"{k}={v} (source {lay.full[k]})" for k, v in lay.got.items() if not 1 <= v <= lay.full[k]]
    outside += [f"probe of latent {i} {p} (source {w})"
                for i, (p, w) in enumerate(zip(lay.probes, lay.fills, strict=True)) if p > w]
    if outside:
        raise ValueError(f"layer widths outside the source model's: {', '.join(outside)}")
    source_in = example_shape(source)[0]
    if (lay.in_channels, lay.classes) != (source_in, source.num_classes):
        raise ValueError(f"it takes {lay.in_channels} input channels and predicts {lay.classes} classes, its source "
                         f"model {source_in} and {source.num_classes}")
    try:
        sizes = LatentMaps.sizes(state_dict)
    except KeyError as e:
        raise ValueError(f"{e.args[0]} is missing") from None
    if sizes is not None:
        if len(sizes) != len(lay.fills):
            raise ValueError(f"{len(sizes)} latent maps, the source model has {len(lay.fills)} latents")
        for i, ((placed, width), k, p, w) in enumerate(zip(sizes, lay.kept, lay.probes, lay.fills, strict=True)):
            if width != w or not 0 <= placed - p <= k:
                raise ValueError(f"latent map {i} places {placed} units in {width}; the source latent has {w} "
                                 f"units, the network computes {k} + {p}")
            check_index(state_dict, f"latent_maps.index{i}", placed, w)
    try:  # the exact keys and shapes, on the meta device
        with torch.device("meta"):
            net_cls.from_state_dict({k: v.to("meta") for k, v in state_dict.items()})
    except (KeyError, RuntimeError, ValueError) as e:
        detail = "; ".join(ln.strip() for ln in str(e).splitlines()[1:3]) or str(e)
        raise ValueError(f"its tensors do not fit a compacted {source.arch} ({detail[:200]})") from None


def attack_network(model: nn.Module) -> nn.Module:
    """The network an attack should differentiate: :func:`compact` ``(model)`` for a masked model, else ``model``.

    A masked model's test-mode function is the compacted network's (same logits to float rounding), so
    its input gradients, and the adversarial examples of any attack on it, are the same; the compacted
    network costs what the surviving units cost (10.6x fewer FLOPs at the paper's MNIST widths) and has
    no mask arithmetic. It is a snapshot: build it again after the masks change (it is cheap, see
    docs/performance.md). Its parameters do not require gradients. Unmasked models (and BNNs, whose
    eval forward may sample) are returned unchanged.
    """
    if not bbd_layers(model) or not _compactable(model):
        return model
    net = compact(model)
    for p in net.parameters():
        p.requires_grad_(False)
    return net
