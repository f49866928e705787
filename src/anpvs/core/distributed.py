"""Data-parallel training and evaluation over processes started by ``torchrun``.

``torchrun --nproc_per_node N -m anpvs train ...`` starts N copies of the command; each reads
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` from its environment, and :func:`setup` joins them into a
process group (gloo on CPU, nccl on CUDA, where rank ``r`` takes ``cuda:LOCAL_RANK``). Then:

* ``train.batch_size`` is the *global* batch: every rank draws the same seeded order (and the same
  augmentation) and takes its contiguous share of each global batch (:class:`anpvs.data.BatchLoader`
  ``shard``), so the ranks together see exactly the batches of a single-process run;
* after the backward pass every gradient (weights *and* Beta-Bernoulli mask parameters) is averaged over
  ranks (:func:`all_reduce_grads`), so each rank takes the optimizer step of the global mean loss: the
  mean cross-entropies, the KL/N term (the same on every rank) and the VS loss (a batch mean) are
  exactly those of the global batch; only train-mode BatchNorm statistics stay per rank, as in plain
  PyTorch DDP;
* rank 0 alone writes the config, the log and the checkpoint; the checkpoint holds every rank's RNG
  state, so ``--resume`` with the same number of processes continues exactly;
* evaluation shards the test set over ranks and sums the counts (:func:`all_reduce_sum`).

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) everything here is a no-op.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import AnpvsError

#: what gloo / nccl say when the process at the other end of a collective died (gloo: "Connection closed by
#: peer ... typically caused by a remote worker crashing", "Connection reset by peer"; a hung peer: a timeout)
_PEER_LOST = re.compile(r"by peer|broken pipe|timed? ?out|remote worker|connection refused", re.IGNORECASE)


class RankLostError(AnpvsError, RuntimeError):
    """Another process of a ``torchrun`` launch died (or hung) during a collective."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer; "
                         f"start the run with torchrun") from None


def world_from_env() -> World:
    """The rank / world size / local rank that ``torchrun`` set (a single process without it)."""
    return World(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def setup(device: torch.device) -> World:
    """Join the process group of a ``torchrun`` launch (idempotent); returns the :class:`World`."""
    world = world_from_env()
    if world.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size)
    return world


def current() -> World:
    """The :class:`World` of an initialised process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return World()


def device_for(device: torch.device, world: World) -> torch.device:
    """Rank ``r`` of a multi-GPU launch uses ``cuda:LOCAL_RANK``; CPU ranks share the CPU."""
    if world.enabled and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


def _collective(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, a collective; a peer that died becomes :class:`RankLostError` (one line) instead of gloo's
    or nccl's error, which names neither the run nor what to do."""
    try:
        return fn(*args)
    except RuntimeError as e:
        if not isinstance(e, getattr(dist, "DistError", ())) and not _PEER_LOST.search(str(e)):
            raise
        world = current()
        detail = " ".join(str(e).split())[:120]
        raise RankLostError(f"rank {world.rank} of {world.size}: another rank of this torchrun launch died or "
                            f"stopped answering ({detail}); see that rank's output for why, then rerun the same "
                            f"torchrun command (train: with --resume, to continue from the last checkpoint)"
                            ) from None


def all_reduce_grads(params: Sequence[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks in one flat all-reduce.

    Parameters without a gradient are left without one (every rank runs the same losses on the same
    model, so the set is the same on every rank; an optimizer skips them as in a single process)."""
    world = current()
    with_grad = [p for p in params if p.grad is not None]
    if not world.enabled or not with_grad:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])
    _collective(dist.all_reduce, flat)
    flat /= world.size
    offset = 0
    for p in with_grad:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over ranks (in place, returned); identity in a single process."""
    if current().enabled:
        _collective(dist.all_reduce, t)
    return t


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process)."""
    world = current()
    if not world.enabled:
        return [obj]
    out: list[object] = [None] * world.size
    _collective(dist.all_gather_object, out, obj)
    return out


def barrier() -> None:
    if current().enabled:
        _collective(dist.barrier)


def shard_bounds(n: int, world: World) -> tuple[int, int]:
    """``[start, stop)`` of rank ``world.rank``'s contiguous share of ``n`` items (sizes differ by at most 1)."""
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return start, start + base + (1 if world.rank < extra else 0)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
