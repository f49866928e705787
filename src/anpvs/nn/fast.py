"""Faster CPU kernels for the two operations that dominate an attack step of the small networks.

Measured on a 2-core x86 CPU with PyTorch 2.14 (``benchmarks/bench_engine.py``, docs/performance.md):

* **The input gradient of a convolution with very few input channels** (LeNet's conv1, 1 channel;
  VGG's conv1, 3 channels). oneDNN's backward-data kernel is slow for this shape: 4-10 ms for
  LeNet conv1 at batch 64, for 37 MFLOP. ATen's native transposed convolution
  (``slow_conv_transpose2d``, im2col + GEMM) computes the same sum in about 1 ms. Every PGD step
  needs exactly this gradient, so it is the largest single cost of adversarial training.
* **2x2 max-pooling of NCHW tensors** (1-2 ms for a 64x20x24x24 tensor); the same pooling on a
  ``channels_last`` copy takes 0.2-0.3 ms including the copy.
* **Inference of a narrow-input convolution followed by a 2x2 max-pool** (the compacted LeNet's conv1, 1 -> 4
  channels): no CPU kernel reaches its arithmetic rate for so few channels. :func:`conv2d_maxpool2x2` computes
  the four 2x2 phases of the output as one convolution of the four phases of the input (4x the channels, a
  3x3 kernel for a 5x5 one), and the pool as a max over the phases: 0.40 vs 0.92 ms at batch 256 on 2
  threads, 0.72 vs 1.80 ms on 1.

:func:`conv2d` and :func:`max_pool2d` are drop-in replacements for ``F.conv2d`` / ``F.max_pool2d``
with the same values (the max is exact; the conv input gradient is the same sum in another order, so it
agrees to float rounding, about 1e-7 relative). They fall back to the plain functions off the CPU,
under autocast and for dtypes other than float32, so GPU and bf16 paths are untouched.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ["SMALL_CIN", "FastConv2d", "conv2d", "conv2d_maxpool2x2", "fast_kernels", "inference_conv2d",
           "max_pool2d", "phase_weight"]

#: a conv whose input has at most this many channels gets the native input-gradient kernel
SMALL_CIN = 3
#: ... and at most this many output channels: NNPACK wins only for the narrowest convs (batch 256, 1 input channel:
#: 4 outputs 0.62 ms vs oneDNN 0.86; 6 outputs 1.31 vs 1.09; 20 outputs 5.3 vs 3.0), and only in a single-threaded
#: process: NNPACK brings its own thread pool, which fights torch's OpenMP threads between operators (the compacted
#: LeNet5-Caffe at the paper's widths, batch 256, 2 threads: 3.8-4.5 ms with NNPACK, 2.2 ms without; 1 thread:
#: 3.2 ms with, 3.8 ms without; docs/compact.md)
SMALL_COUT = 4


_enabled = True


@contextlib.contextmanager
def fast_kernels(enabled: bool) -> Iterator[None]:
    """Switch the fast paths of this module on or off inside the block (tests and benchmarks compare both)."""
    global _enabled
    old, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = old


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()


def _fast_path(x: Tensor) -> bool:
    """CPU float32 eager execution (not under autocast, tracing or export)."""
    return (_enabled and not _exporting() and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu"))


class _SmallCinConv2d(torch.autograd.Function):
    """``F.conv2d`` (stride 1, no dilation, groups 1) whose input gradient uses the native transposed conv."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = ctx.has_bias and ctx.needs_input_grad[2]
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.ops.aten.slow_conv_transpose2d(
                grad.contiguous(), weight, tuple(weight.shape[-2:]), None, (1, 1), ctx.padding, (0, 0), (1, 1))
        if need_w or need_b:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if need_b else None, (1, 1), ctx.padding, (1, 1), False,
                (0, 0), 1, (False, need_w, need_b))
        return grad_x, grad_w if need_w else None, grad_b if need_b else None, None


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, padding: int = 0) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1), faster to differentiate w.r.t. ``x`` on a CPU
    when the input has at most :data:`SMALL_CIN` channels."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if needs_grad and weight.shape[1] <= SMALL_CIN and _fast_path(x) and weight.dtype == torch.float32:
        return _SmallCinConv2d.apply(x, weight, bias, (padding, padding))
    return F.conv2d(x, weight, bias, padding=padding)


def _plain_conv(conv: nn.Conv2d) -> bool:
    """A ``nn.Conv2d`` / :class:`FastConv2d` of stride 1, no dilation, one group and numeric zero padding."""
    return (type(conv) in (nn.Conv2d, FastConv2d) and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def inference_conv2d(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)`` for inference; a convolution of at most :data:`SMALL_CIN` input channels on a CPU, in
    float32, with no gradient to record, and at most :data:`SMALL_COUT` output channels runs through NNPACK
    (where PyTorch has it) when torch uses one thread: for a 1 -> 4 channel conv at batch 256, 0.6-1.2 ms
    against oneDNN's 0.9-1.7 ms (the compacted LeNet's conv1 now takes
    :func:`conv2d_maxpool2x2` instead). Wider ones stay on oneDNN (1 -> 20 channels: 3.0 ms, NNPACK 5.3 ms;
    4 -> 23: 1.1 ms, NNPACK 1.4 ms). Same values to float rounding."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)
    plain = _plain_conv(conv)
    # under a dispatch mode (FlopCounterMode counting FLOPs) the plain call keeps the standard aten::convolution
    counting = _get_current_dispatch_mode() is not None
    if (plain and not needs_grad and not counting and _fast_path(x) and conv.weight.dtype == torch.float32
            and conv.in_channels <= SMALL_CIN and conv.out_channels <= SMALL_COUT and x.dim() == 4
            and torch.get_num_threads() == 1
            and torch.backends.nnpack.is_available()):  # is_available() also initialises NNPACK
        try:
            return torch.ops.aten._nnpack_spatial_convolution(x.contiguous(), conv.weight, conv.bias, conv.padding)
        except RuntimeError:  # a shape or build NNPACK refuses: the standard kernel
            pass
    return conv(x)


def phase_weight(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The kernel of :func:`conv2d_maxpool2x2`: ``weight`` ``(C, Ci, k, k)`` -> ``(4C, 4Ci, K, K)`` with
    ``K = k // 2 + 1``, and the bias repeated for the four output phases.

    Output channel ``(2di + dj) C + c`` is output phase ``(di, dj)`` of channel ``c`` (rows ``2I + di``,
    columns ``2J + dj`` of the stride-1 output); input channel ``4ci + 2s + t`` is input phase ``(s, t)`` of
    channel ``ci`` (the order of ``F.pixel_unshuffle``). Tap ``(P, Q)``
    of the phase kernel is tap ``(2P + s - di, 2Q + t - dj)`` of the original one, or 0 outside it."""
    c, ci, k, k2 = weight.shape
    if k != k2:
        raise ValueError(f"conv2d_maxpool2x2 needs a square kernel, got {k}x{k2}")
    big = k // 2 + 1
    padded = F.pad(weight, (1, 2 * big - k, 1, 2 * big - k))  # tap u sits at u + 1; zeros around it
    d = torch.arange(2, device=weight.device)
    # idx[d, s, P] = 2P + s - d + 1: the padded tap read by output phase d from input phase s at offset P
    idx = (2 * torch.arange(big, device=weight.device)[None, None, :] + d[None, :, None] - d[:, None, None] + 1)
    w = padded[:, :, idx.reshape(-1)][..., idx.reshape(-1)]  # (C, Ci, 2*2*K, 2*2*K) = (c, ci, (di,s,P), (dj,t,Q))
    w = w.reshape(c, ci, 2, 2, big, 2, 2, big).permute(2, 5, 0, 1, 3, 6, 4, 7)  # (di, dj, c, ci, s, t, P, Q)
    return w.reshape(4 * c, 4 * ci, big, big).contiguous(), None if bias is None else bias.repeat(4)


_PHASE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _phase_kernel(conv: nn.Conv2d) -> tuple[Tensor, Tensor | None]:
    """:func:`phase_weight` of ``conv``, rebuilt only when its parameters changed (in place or replaced).
    Parameters created under ``torch.inference_mode`` have no version counter: rebuilt at every call."""
    params = [p for p in (conv.weight, conv.bias) if p is not None]
    build = lambda: phase_weight(conv.weight.detach(), None if conv.bias is None else conv.bias.detach())  # noqa: E731
    if any(p.is_inference() for p in params):
        return build()
    key = tuple((p.data_ptr(), p._version) for p in params)
    hit = _PHASE_CACHE.get(conv)
    if hit is None or hit[0] != key:
        hit = _PHASE_CACHE[conv] = (key, *build())
    return hit[1], hit[2]


def conv2d_maxpool2x2(conv: nn.Conv2d, x: Tensor) -> Tensor | None:
    """``F.max_pool2d(conv(x), 2)`` for inference, or ``None`` where this way does not apply (the caller then
    runs the two operations itself).

    A stride-1 convolution followed by a 2x2 pool is computed on the four stride-2 phases of the input
    (``4 Ci`` channels at half the size) with :func:`phase_weight`'s kernel, which
    gives the four phases of the output at once; the pool is their maximum. The phase kernel does 1.44x the
    multiply-adds of a 5x5 one, but as a 4Ci -> 4C convolution it runs several times faster when ``Ci`` is
    tiny (see the module docstring). The same values to float rounding (the sum runs in another order).

    Applies on a CPU (float32 or bfloat16 input, under autocast too; not while exporting), with no gradient
    to record, to a plain float32 conv (square kernel, stride 1, no padding, dilation or groups) of at most
    :data:`SMALL_CIN` input channels, on an even-sized input."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)
    cpu = _enabled and not _exporting() and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
    if (needs_grad or not cpu or _get_current_dispatch_mode() is not None or x.dim() != 4
            or not _plain_conv(conv) or any(conv.padding) or conv.in_channels > SMALL_CIN
            or conv.weight.dtype != torch.float32 or conv.kernel_size[0] != conv.kernel_size[1]
            or x.shape[-2] % 2 or x.shape[-1] % 2 or min(x.shape[-2:]) < conv.kernel_size[0] + 1):
        return None
    weight, bias = _phase_kernel(conv)
    b, ci, hh, ww = x.shape
    # F.pixel_unshuffle(x, 2), as a view and one copy (pixel_unshuffle itself took 0.29 ms here, this 0.05)
    phases = x.view(b, ci, hh // 2, 2, ww // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * ci, hh // 2, ww // 2)
    y = F.conv2d(phases, weight, bias)  # (B, 4C, h, w), phase-major: the 4 phases are 4 contiguous blocks
    half = y.view(b, 2, -1)
    half = torch.maximum(half[:, 0], half[:, 1]).view(b, 2, -1)
    return torch.maximum(half[:, 0], half[:, 1]).view(b, conv.out_channels, *y.shape[-2:])


def max_pool2d(x: Tensor, kernel_size: int = 2) -> Tensor:
    """``F.max_pool2d(x, kernel_size)``, computed in ``channels_last`` layout on a CPU (same values)."""
    if x.dim() == 4 and _fast_path(x):
        x = x.contiguous(memory_format=torch.channels_last)
    return F.max_pool2d(x, kernel_size)


class FastConv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` (same parameters and state dict) that uses :func:`conv2d` when it applies
    (stride 1, no dilation, one group, numeric zero padding); otherwise exactly ``nn.Conv2d``.

    LeNet5-Caffe uses it for conv1 (1 input channel). VGG-16 does not: on its 32x32 inputs the
    oneDNN kernels were faster overall (measured 0.88x with these paths, docs/performance.md)."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        simple = (self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                  and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                  and self.padding[0] == self.padding[1])
        if simple:
            return conv2d(input, weight, bias, padding=self.padding[0])
        return super()._conv_forward(input, weight, bias)
