"""Efficiency metrics of a unit-pruned network: the paper's analytic formulas (docs/decisions.md item 5;
docs/reference.md §2, §6, §7) for the architectures that declare them, FLOPs counted by FlopCounterMode and
weight statistics for every architecture.

The per-architecture formulas live with their models (``analytic_flops`` / ``analytic_memory`` of
:class:`anpvs.models.lenet5_caffe.LeNet5Caffe` and :class:`anpvs.models.vgg16.VGG16`, built from the per-layer
terms here); the functions below take the architecture's name (``ARCHS``: the registered architectures that
declare them).

Every analytic function here is a pure function of the *active-unit counts*: the number of kept
units (neurons, channels or flattened inputs) behind each Beta-Bernoulli mask, in mask order.
This is how the paper reports its ``Memory``, ``xFLOPs`` and ``Sparsity`` columns, so the numbers
are comparable with its tables.

Masks and the layer whose *input* width or *output* width they set:

``lenet5_caffe`` (4 masks, ``[c1, c2, f3, h4]`` <= ``[20, 50, 800, 500]``)
    ``c1``: conv1 output channels; ``c2``: conv2 output channels; ``f3``: the 800 flattened inputs
    of dense3; ``h4``: dense3's 500 outputs, i.e. dense4's inputs.

``vgg16`` (15 masks, 13 conv widths then ``[d14, d15]`` <= ``[512, 512]``)
    mask ``l`` (l = 1..13) keeps output channels of conv ``l``; ``d14`` keeps inputs of dense14
    (512 -> 512); ``d15`` keeps inputs of dense15, which are the outputs of dense14.

The formulas are those of the reference code (``divyam3897/ANP_VS``,
``src/experiments/flops/utils.py`` and ``src/experiments/memory/utils.py``), written here as
integer arithmetic; the two memory bugs of docs/reference.md §7.3-7.4 are fixed unless ``legacy_memory=True``.
Two reference conventions are kept on purpose because the paper's numbers depend on them:

* the input width of a layer is the active count of the *previous mask*, nothing else; in
  particular LeNet's dense3 takes ``f3`` inputs even if some of those flattened positions belong
  to a pruned conv2 channel (they would be dead in a compacted network);
* BN costs no FLOPs, conv biases cost no memory, and the logits layer of VGG-16 is charged one
  "activation" FLOP per output although no ReLU follows it.

:func:`measured_flops` and :func:`weight_stats` look at real ``nn.Module`` objects instead; the
tests tie :func:`analytic_flops` to :func:`measured_flops` on physically compacted networks.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..core.registry import ARCHITECTURES
from ..nn.modes import eval_mode

__all__ = ["analytic_flops", "analytic_memory", "conv_flops", "conv_memory",
           "counted_report", "dense_flops", "dense_memory", "efficiency_report", "full_units", "measured_flops",
           "model_full_units", "pool_flops", "unit_sparsity", "weight_stats"]

_POOL = 2


def _analytic_archs() -> dict[str, type]:
    """The architectures with the paper's analytic costs: registered classes that declare ``analytic_flops``."""
    return {name: cls for name, cls in ARCHITECTURES.items() if getattr(cls, "analytic_flops", None) is not None}


def __getattr__(name: str):
    # computed on first use: the architectures register themselves when anpvs.models is imported
    if name == "ARCHS":  # architectures the analytic metrics know
        return tuple(_analytic_archs())
    if name == "UNIT_TOTALS":  # total maskable units of the paper's networks (the denominator of unit sparsity)
        return {arch: sum(cls.paper_units) for arch, cls in _analytic_archs().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- validation


def _arch_class(arch: str) -> type:
    archs = _analytic_archs()
    try:
        return archs[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(archs)}") from None


def _check_full(arch: str, full: Sequence[int] | None) -> tuple[int, ...]:
    """The unpruned unit counts: ``full`` (a narrower or wider network of ``arch``, e.g. VGG-16 at a width
    multiplier) when given, else the paper's network."""
    default = tuple(_arch_class(arch).paper_units)
    if full is None:
        return default
    values = tuple(operator.index(v) for v in full)
    if len(values) != len(default) or any(v < 1 for v in values):
        raise ValueError(f"{arch} has {len(default)} masked layers of at least one unit, got full units {values}")
    return values


def _check_counts(what: str, active: Sequence[int], full: Sequence[int]) -> list[int]:
    """Return ``active`` as a list of Python ints after checking its length and ranges against ``full``."""
    values: list[int] = []
    for i, a in enumerate(active):
        try:
            values.append(operator.index(a))
        except TypeError:
            raise TypeError(f"active[{i}] must be an integer, got {a!r}") from None
    if len(values) != len(full):
        raise ValueError(f"{what} has {len(full)} masked layers, got {len(values)} active counts")
    for i, (a, n) in enumerate(zip(values, full, strict=True)):
        if not 0 <= a <= n:
            raise ValueError(f"active[{i}] = {a} is outside [0, {n}] for {what}")
    return values


def _check_active(arch: str, active: Sequence[int], full: Sequence[int] | None = None) -> list[int]:
    return _check_counts(arch, active, _check_full(arch, full))


def _check_classes(num_classes: int) -> int:
    n = operator.index(num_classes)
    if n < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return n


# --------------------------------------------------------------------------- per-layer formulas


def conv_flops(side_out: int, c_in: int, c_out: int, kernel: int) -> int:
    """``C_out*H*W*(2*K^2*C_in - 1)`` multiply-adds, plus one bias add and one ReLU per output.

    ``2n - 1`` is the cost of an n-term dot product (n products, n - 1 additions).
    """
    outputs = c_out * side_out * side_out
    return outputs * (2 * kernel * kernel * c_in - 1) + 2 * outputs


def pool_flops(side_in: int, channels: int) -> int:
    """A ``k x k`` stride-``k`` max-pool charges ``k^2`` FLOPs per output: ``C*H_out*W_out*k^2``."""
    side_out = side_in // _POOL
    return channels * side_out * side_out * _POOL * _POOL


def dense_flops(n_in: int, n_out: int, *, activation: bool) -> int:
    """``(2*in - 1)*out`` for the matrix product, ``out`` for the bias, ``out`` more for an activation."""
    return (2 * n_in - 1) * n_out + n_out + (n_out if activation else 0)


def conv_memory(side_out: int, c_in: int, c_out: int, kernel: int, *, batch_norm: bool) -> int:
    """``K^2*C_in*H*W`` (the im2col input buffer) + ``K^2*C_in*C_out`` (the kernel) + ``2*C_out`` for BN.

    As in the reference there is no term for the conv bias.
    """
    patch = kernel * kernel * c_in
    return patch * side_out * side_out + patch * c_out + (2 * c_out if batch_norm else 0)


def dense_memory(n_in: int, n_out: int, *, batch_norm: bool, legacy: bool = False) -> int:
    """``in*out`` weights + ``out`` biases + ``2*out`` BN affine parameters when BN follows.

    The reference charges BN ``2*in`` (docs/reference.md §7.4); BN14 normalizes dense14's *outputs*, so the
    corrected count is ``2*out``. ``legacy=True`` reproduces ``2*in``.
    """
    mem = n_in * n_out + n_out
    if batch_norm:
        mem += 2 * (n_in if legacy else n_out)
    return mem


# --------------------------------------------------------------------------- public API


def full_units(arch: str) -> list[int]:
    """Unit counts of the paper's unpruned network, one per mask, in mask order.

    >>> full_units("lenet5_caffe")
    [20, 50, 800, 500]
    """
    return list(_arch_class(arch).paper_units)


def model_full_units(model: nn.Module) -> list[int]:
    """Unit counts of ``model``'s own unpruned network: its ``unit_widths`` (the architecture protocol)."""
    return list(model.unit_widths)


def unit_sparsity(arch: str, active: Sequence[int], *, full: Sequence[int] | None = None) -> float:
    """Unit sparsity in percent: ``100 - sum(active) / sum(full) * 100`` (docs/reference.md §2, reference ``run.py``).

    Units are neurons, channels and (LeNet's bbd3) flattened inputs; the denominator is
    ``UNIT_TOTALS[arch]`` (1370 or 5248). This is *not* the fraction of zero weights, see
    :func:`weight_stats`.
    """
    values = _check_active(arch, active, full)
    return 100.0 - sum(values) / sum(_check_full(arch, full)) * 100.0


def analytic_flops(arch: str, active: Sequence[int], *, num_classes: int = 10,
                   full: Sequence[int] | None = None) -> int:
    """FLOPs of one forward pass of the pruned network, by the reference formula (docs/reference.md §6).

    Each layer's input width is the previous mask's active count (the input image for the first
    conv). Terms:

    * conv: ``C_out*H_out*W_out*(2*K^2*C_in - 1)`` + ``C_out*H_out*W_out`` (bias)
      + ``C_out*H_out*W_out`` (ReLU);
    * 2x2 max-pool: ``C*H_out*W_out*4``;
    * dense: ``(2*in - 1)*out + out`` (bias) ``+ out`` (activation).

    LeNet5-Caffe: conv1 (1 -> c1, 24x24), pool, conv2 (c1 -> c2, 8x8), pool, dense3 (f3 -> h4,
    with activation), dense4 (h4 -> num_classes, no activation). Full model: 4,615,940.

    VGG-16: 13 SAME 3x3 convs (3 -> a1 -> ... -> a13) with pools after convs 2, 4, 7, 10, 13,
    dense14 (d14 -> d15) and dense15 (d15 -> num_classes). As in the reference both dense layers
    are charged the activation term and BN/dropout are free. Full model: 627,329,546 (10 classes).
    ``full``: the unpruned unit counts when the network is not the paper's (a VGG-16 width multiplier).
    """
    values = _check_active(arch, active, full)
    return _arch_class(arch).analytic_flops(values, _check_classes(num_classes))


def analytic_memory(
    arch: str, active: Sequence[int], *, num_classes: int = 10, legacy_memory: bool = False,
    full: Sequence[int] | None = None,
) -> int:
    """Run-time memory proxy (in numbers, not bytes) of the pruned network (docs/reference.md §6).

    * conv: ``K^2*C_in*H_out*W_out + K^2*C_in*C_out`` (+ ``2*C_out`` when BN follows: VGG);
    * dense: ``in*out + out`` (+ ``2*out`` for VGG's BN14).

    LeNet5-Caffe sums conv1 (1 -> c1), conv2 (c1 -> c2), dense3 (f3 -> h4) and dense4
    (h4 -> num_classes); full model: 477,410. VGG-16 sums its 13 convs (with BN), dense14
    (d14 -> d15, with BN14) and dense15 (d15 -> num_classes); full model: 16,655,818 (10 classes)
    or 16,701,988 (100 classes).

    Bugs of the reference ``vgg_memory`` fixed here (docs/reference.md §7.3-7.4); ``legacy_memory=True``
    reproduces them (full model: 19,881,538 and 20,481,748):

    * 7.3: the dense14 + dense15 memory is added inside the 13-iteration conv loop, i.e. 13 times;
      it is added once here;
    * 7.4: BN14 is charged ``2*in`` instead of ``2*out``.

    ``legacy_memory`` has no effect on LeNet5-Caffe, whose formula has neither bug.
    """
    values = _check_active(arch, active, full)
    return _arch_class(arch).analytic_memory(values, _check_classes(num_classes), legacy_memory)


def efficiency_report(
    arch: str, active: Sequence[int], *, num_classes: int = 10, legacy_memory: bool = False,
    full: Sequence[int] | None = None,
) -> dict:
    """The paper's three efficiency columns for one pruned network, plus the raw counts.

    Returns a dict with keys

    * ``active_units``: the active counts as a list of ints; ``units_total``: the sum of the full counts
      (``UNIT_TOTALS[arch]`` for the paper's network; ``full`` gives another width's);
    * ``unit_sparsity``: percent of pruned units (:func:`unit_sparsity`);
    * ``flops`` / ``flops_orig``: :func:`analytic_flops` of the pruned / full network;
    * ``flops_speedup``: ``flops_orig / flops`` (``inf`` if the pruned network costs 0 FLOPs);
    * ``memory`` / ``memory_orig``: :func:`analytic_memory` of the pruned / full network;
    * ``memory_pct``: ``memory / memory_orig * 100``.

    >>> r = efficiency_report("lenet5_caffe", [4, 23, 61, 129])
    >>> round(r["memory_pct"], 2), round(r["flops_speedup"], 2), round(r["unit_sparsity"], 2)
    (6.81, 10.6, 84.16)
    """
    full = list(_check_full(arch, full))
    values = _check_active(arch, active, full)
    flops = analytic_flops(arch, values, num_classes=num_classes, full=full)
    flops_orig = analytic_flops(arch, full, num_classes=num_classes, full=full)
    memory = analytic_memory(arch, values, num_classes=num_classes, legacy_memory=legacy_memory, full=full)
    memory_orig = analytic_memory(arch, full, num_classes=num_classes, legacy_memory=legacy_memory, full=full)
    return {
        "active_units": values,
        "units_total": sum(full),
        "unit_sparsity": unit_sparsity(arch, values, full=full),
        "flops": flops,
        "flops_orig": flops_orig,
        "flops_speedup": flops_orig / flops if flops > 0 else math.inf,
        "memory": memory,
        "memory_orig": memory_orig,
        "memory_pct": memory / memory_orig * 100.0,
    }


def counted_report(active: Sequence[int], full: Sequence[int], *, flops: int, flops_orig: int, memory: int,
                   memory_orig: int) -> dict:
    """:func:`efficiency_report`'s dict for an architecture without the paper's formulas: ``flops`` /
    ``flops_orig`` are FLOPs counted (:func:`measured_flops`) on the compacted and on the unpruned network,
    ``memory`` / ``memory_orig`` their parameter counts (:func:`weight_stats`)."""
    values = _check_counts("this model", active, full)
    return {
        "active_units": values,
        "units_total": sum(full),
        "unit_sparsity": 100.0 - sum(values) / sum(full) * 100.0,
        "flops": flops,
        "flops_orig": flops_orig,
        "flops_speedup": flops_orig / flops if flops > 0 else math.inf,
        "memory": memory,
        "memory_orig": memory_orig,
        "memory_pct": memory / memory_orig * 100.0,
    }


def measured_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass counted by :class:`torch.utils.flop_counter.FlopCounterMode`.

    ``input_shape`` is the shape of *one* example, e.g. ``(1, 28, 28)``; a batch of one zero image
    is run in eval mode under ``torch.no_grad`` (the caller's train/eval flags are restored).
    The model may live on the ``meta`` device, in which case nothing is computed.

    FlopCounterMode counts only matrix products and convolutions, as ``2 x MACs``; bias additions,
    activations, pooling and BN are free. Relation to :func:`analytic_flops` for the same
    (physically compacted) network: the analytic count exceeds this one by exactly one FLOP per
    conv output and per dense output that gets a bias and an activation (``-1`` of ``2n - 1``,
    ``+1`` bias, ``+1`` activation), one per output of a dense layer without activation is
    ``0`` (``-1 + 1``), plus the pooling terms.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros((1, *(operator.index(s) for s in input_shape)), device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())


_WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
_NORM_LAYERS = (nn.modules.batchnorm._BatchNorm,)


def weight_stats(model: nn.Module) -> dict:
    """Parameter and weight counts of the conv / linear / BN layers of ``model``.

    Returns a dict with keys

    * ``params``: weights and biases of every conv and linear layer (with the ``const_weight`` of a
      compacted network's constant-input convs) plus the affine ``weight`` and ``bias`` of every BN layer
      (BN running statistics, mask parameters and other parameters are not counted);
    * ``bytes``: the storage of those ``params`` tensors;
    * ``weights``: the number of conv / linear weight entries (no biases);
    * ``zero_weights``: how many of those are exactly zero;
    * ``weight_sparsity``: ``zero_weights / weights * 100`` (0 when there are no weights).

    Weight sparsity is what unstructured pruning (ADMM) reports; it is not comparable with the
    unit sparsity of :func:`unit_sparsity` (docs/decisions.md item 5). For a compacted network, ``params`` and
    ``bytes`` are the real size of the smaller model.
    """
    params = 0
    nbytes = 0
    weights = 0
    zeros = 0
    for module in model.modules():
        if isinstance(module, _WEIGHT_LAYERS):
            w = module.weight
            weights += w.numel()
            zeros += int((w.detach() == 0).sum().item())
        elif not isinstance(module, _NORM_LAYERS):
            continue
        for p in module.parameters(recurse=False):  # weight, bias (and a constant-input conv's const_weight)
            params += p.numel()
            nbytes += p.numel() * p.element_size()
    return {
        "params": params,
        "bytes": nbytes,
        "weights": weights,
        "zero_weights": zeros,
        "weight_sparsity": zeros / weights * 100.0 if weights else 0.0,
    }
