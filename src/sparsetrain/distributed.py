"""DDP helpers: every rank holds bit-identical masks after every update (contract 6)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def broadcast_masks(masks: dict[str, Tensor]) -> None:
    """Make every rank's masks equal to rank 0's, in place of the dict entries.

    Ranks already agree when gradients are all-reduced and generators share a
    seed; broadcasting after each update (rare) makes that a guarantee rather
    than an assumption, at the cost of one byte per weight per update.
    An FSDP2 shard (a DTensor mask) is this rank's own: its full mask was
    broadcast before it was cut (``sharding.full_view``), so it is left alone.
    """
    from sparsetrain.sharding import is_sharded  # sharding builds on this module

    if world_size() == 1:
        return
    for name in sorted(masks):
        if is_sharded(masks[name]):
            continue
        buf = masks[name].to(torch.uint8)
        dist.broadcast(buf, src=0)
        masks[name] = buf.bool()


def all_reduce_mean_(tensors: list[Tensor]) -> None:
    """Average ``tensors`` over ranks in place (for scores seen before DDP's all-reduce)."""
    if world_size() == 1:
        return
    for t in tensors:
        dist.all_reduce(t)
        t.div_(world_size())
