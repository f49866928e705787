"""Batches: a fast, reproducible iterator over an in-memory dataset, with seeded pad-and-crop + flip."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import _STREAM_AUGMENT, _STREAM_ORDER, AUGMENT_PAD, ArrayDataset
from .loading import _check_count, _torch_generator


def augment_batch(x: Tensor, generator: torch.Generator, pad: int = AUGMENT_PAD) -> Tensor:
    """Random crop after zero padding, plus random horizontal flip, for a whole batch at once.

    Each image is padded by ``pad`` zeros on every side, cropped back to its original ``H x W`` at a
    random offset, and mirrored left-right with probability 1/2. The random numbers are drawn on the CPU
    from ``generator``, so the result does not depend on the device of ``x``.

    Args:
        x: ``(B, C, H, W)`` batch of any dtype (uint8 or float).
        generator: a CPU ``torch.Generator``.
        pad: padding in pixels.

    Returns:
        The augmented batch, same shape, dtype and device as ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    rows = (oy[:, None] + ar_h).to(dev)  # (B, H)
    cols = (ox[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)).to(dev)  # (B, W), flip folded in
    batch = torch.arange(b, device=dev)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): advanced dims come first
    return out.permute(0, 3, 1, 2).contiguous()


class BatchLoader:
    """Fast in-memory batch iterator (no per-item collation).

    Reproducible: the example order and the augmentation of epoch ``e`` depend only on ``(seed, e)``, so
    training resumed at an epoch boundary sees the same batches. Call :meth:`set_epoch` before each epoch;
    after every *complete* pass the epoch counter also advances by one on its own, so a loop that never
    calls ``set_epoch`` still gets a fresh order each epoch (epochs 0, 1, 2, ...).

    The uint8 images are moved to ``device`` once (on the first pass) and each batch is gathered,
    augmented and converted to float there.

    Args:
        dataset: the :class:`ArrayDataset` to iterate over.
        batch_size: examples per batch.
        shuffle: visit the examples in a seeded random order (else in dataset order).
        augment: apply :func:`augment_batch` (pad 4 + random crop + horizontal flip).
        seed: base seed of the order and of the augmentation.
        drop_last: drop the final incomplete batch.
        device: where the yielded tensors live.
        shard: ``(rank, world_size)``: yield only this rank's contiguous share of every batch (data-parallel
            training; the order and augmentation are those of the whole batch, so the ranks together see
            exactly the single-process batches). ``batch_size`` must be a multiple of ``world_size``.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.batch_size = _check_count("batch_size", batch_size, minimum=1)
        rank, world = shard
        if world < 1 or not 0 <= rank < world or batch_size % world:
            raise ValueError(f"shard {shard} needs 0 <= rank < world_size and batch_size ({batch_size}) "
                             f"divisible by world_size; pick train.batch_size as a multiple of the process count")
        self.shard = (rank, world)
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.seed = operator.index(seed)
        self.drop_last = bool(drop_last)
        self.device = torch.device(device)
        self.epoch = 0
        self._on_device: tuple[Tensor, Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order/augmentation the next pass uses."""
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _tensors(self) -> tuple[Tensor, Tensor]:
        if self._on_device is None:
            self._on_device = (self.dataset.images.to(self.device), self.dataset.labels.to(self.device))
        return self._on_device

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=_torch_generator(self.seed, epoch, _STREAM_ORDER))
        else:
            order = torch.arange(n)
        aug_gen = _torch_generator(self.seed, epoch, _STREAM_AUGMENT) if self.augment else None
        images, labels = self._tensors()
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = images[idx]
            y = labels[idx]
            if aug_gen is not None:
                x = augment_batch(x, aug_gen)
            rank, world = self.shard
            if world > 1:
                per = len(idx) // world
                x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
            yield x.float().div_(255.0), y
        self.epoch = epoch + 1
