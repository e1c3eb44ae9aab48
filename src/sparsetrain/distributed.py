"""Several processes: torchrun set-up, DDP wrapping, and identical masks on every rank.

Every rank holds bit-identical masks after every update (masks are broadcast
from rank 0 after each topology change); the trainer joins the process group
that ``torchrun`` describes (gloo on CPU, NCCL on GPUs) and wraps the model in
DistributedDataParallel. FSDP2 builds on this in :mod:`sparsetrain.sharding`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sparsetrain.errors import PeerStopped, SparsetrainError

T = TypeVar("T")


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


def available_devices() -> list[str]:
    """The devices torch can use here, e.g. ``['cpu', 'cuda:0']``."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    return found + (["mps"] if mps is not None and mps.is_available() else [])


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's CUDA device if there is one, else CPU; a device that is not here is one clear error.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise SparsetrainError(f"device {name!r} is not a torch device name; use auto, cpu, cuda or cuda:N "
                               f"(here: {', '.join(available_devices())}).") from None
    missing = (dev.type == "cuda" and (not torch.cuda.is_available()
                                       or (dev.index or 0) >= torch.cuda.device_count())) or (
        dev.type == "mps" and "mps" not in available_devices())
    if missing:
        raise SparsetrainError(f"device {name!r} is not available on this machine (available: "
                               f"{', '.join(available_devices())}); use --device auto to take the best one here.")
    return dev


def setup(device: str = "auto") -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; returns (world size, rank, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return world, rank(), dev


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP-wrap ``model`` when distributed (the sparsifier keeps the unwrapped names)."""
    if world_size() == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum numbers over ranks (identity when not distributed): whole-data epoch metrics."""
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if dist.is_initialized():
        dist.barrier()


def decided_by_rank_zero(check: Callable[[], T]) -> T | None:
    """Run ``check`` on rank 0 only and let every rank stop together if it refuses the input.

    Without this, rank 0 exits with its message while the others wait in a collective until torchrun
    kills them, and whether they print anything depends on who is faster. Ranks 1.. get ``None`` back,
    or raise :class:`PeerStopped` when rank 0 raised a :class:`SparsetrainError`.

    Example:
        >>> decided_by_rank_zero(lambda: 3)  # one process: just the call
        3
    """
    result, reason, error = None, None, None
    if rank() == 0:
        try:
            result = check()
        except SparsetrainError as exc:
            reason, error = str(exc), exc
    if world_size() > 1:
        box = [reason]
        dist.broadcast_object_list(box, src=0)
        reason = box[0]
    if reason is not None:
        if rank() == 0:
            raise error  # type: ignore[misc]  (set together with reason)
        raise PeerStopped(reason)
    return result


def teardown() -> None:
    """Leave the process group."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
