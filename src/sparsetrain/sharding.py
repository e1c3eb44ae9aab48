"""FSDP2 (``torch.distributed.fsdp.fully_shard``): masks sharded like their parameters.

Under FSDP2 every parameter is a ``DTensor`` whose rank holds one shard. The
sparsifier then keeps each mask as a ``DTensor`` with the *same* device mesh
and placements as its parameter, so the per-step work (masking gradients,
weights and optimizer state) touches only this rank's shard, with no
communication.

A topology update (every few hundred steps) runs the method on *full*
tensors: :func:`full_view` gathers the sparsified weights, masks, gradient
snapshot, method state and, when an op reads it, optimizer state, runs the
method there exactly as on one process, broadcasts rank 0's full masks (the
same guarantee as under DDP) and keeps this rank's slice of everything back.
So every count is exact over the full tensor, a top-k over the shards *is*
the top-k of the unsharded tensor (ties to the lower global index) and an
FSDP2 run picks exactly the masks the same run picks under DDP. The price is
memory during an update: each rank briefly holds the full sparsified weights
(and what the method reads), as FSDP itself does for one layer at a time.

Not supported, each with one clear error (:func:`check_wrappers`, :func:`check_sharded`):
FSDP1 (``FullyShardedDataParallel``), DeepSpeed, and ``fully_shard`` applied
after ``attach`` (see docs/guides/multi-gpu.md, "Sharded training (FSDP2)").

Example:
    >>> import torch
    >>> local(torch.ones(2)).tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain import distributed
from sparsetrain.errors import SparsetrainError

try:  # torch builds without distributed support have no DTensor
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # pragma: no cover - exercised only on such builds
    DTensor = None


def is_sharded(t: Any) -> bool:
    """Whether ``t`` is a DTensor (an FSDP2 parameter, its gradient, state or mask)."""
    return DTensor is not None and isinstance(t, DTensor)


def local(t: Tensor) -> Tensor:
    """This rank's shard of a DTensor (the tensor itself otherwise); in-place edits reach the DTensor."""
    return t.to_local() if is_sharded(t) else t


def full(t: Tensor) -> Tensor:
    """The whole tensor on every rank (a collective for a DTensor)."""
    return t.full_tensor() if is_sharded(t) else t


def shard_like(whole: Tensor, like: Tensor) -> Tensor:
    """``whole`` (the same on every rank) cut to ``like``'s layout, without communication."""
    if not is_sharded(like):
        return whole
    return distribute_tensor(whole.detach().to(like.device_mesh.device_type), like.device_mesh, like.placements,
                             src_data_rank=None)


def count(mask: Tensor) -> int:
    """True entries of a bool mask over the full tensor (a collective for a DTensor)."""
    from sparsetrain.core.kernels import count_true

    if is_sharded(mask):
        return int(torch.count_nonzero(mask).full_tensor())
    return count_true(mask)


def check_wrappers(model: nn.Module) -> None:
    """Refuse the sharding wrappers sparsetrain cannot see into (FSDP1, DeepSpeed), before selection.

    Example:
        >>> check_wrappers(nn.Linear(2, 2))
    """
    for module in model.modules():
        kinds = {k.__name__ for k in type(module).__mro__}
        if "FullyShardedDataParallel" in kinds:
            raise SparsetrainError(
                "FSDP1 (FullyShardedDataParallel) is not supported: it flattens parameters into one "
                "FlatParameter per unit, so no weight keeps its shape. Shard with FSDP2 instead: "
                "torch.distributed.fsdp.fully_shard(module) on each block and on the model, build the "
                "optimizer over model.parameters(), then sparsetrain.attach (docs/guides/multi-gpu.md).")
        if "DeepSpeedEngine" in kinds:
            raise SparsetrainError(
                "DeepSpeed engines are not supported: DeepSpeed steps its own optimizer wrapper and ZeRO-3 "
                "partitions weights outside torch, so sparsetrain's step hooks never see them. Use "
                "torch.distributed.fsdp.fully_shard (FSDP2) or DistributedDataParallel instead "
                "(docs/guides/multi-gpu.md).")


def check_sharded(params: dict[str, Tensor]) -> bool:
    """True when FSDP2 shards the selected ``params`` (all of them); refuses DeepSpeed ZeRO-3 and a mix.

    Example:
        >>> check_sharded({"weight": nn.Linear(2, 2).weight})
        False
    """
    if any(hasattr(p, "ds_id") for p in params.values()):
        raise SparsetrainError(
            "these parameters are partitioned by DeepSpeed ZeRO-3, which sparsetrain cannot mask; use "
            "torch.distributed.fsdp.fully_shard (FSDP2) or DistributedDataParallel (docs/guides/multi-gpu.md).")
    sharded = [n for n, p in params.items() if is_sharded(p)]
    if sharded and len(sharded) != len(params):
        plain = [n for n in params if n not in sharded]
        raise SparsetrainError(
            f"some sparsified weights are FSDP2-sharded and some are not ({plain[:3]} are plain): apply "
            "fully_shard to the whole model (fully_shard(model) after the blocks), then attach.")
    return bool(sharded)


def check_not_resharded(slots: list[tuple[dict, str, Tensor]]) -> None:
    """Raise if a sparsified parameter was replaced since attach (``fully_shard`` applied after it).

    ``slots`` holds ``(module._parameters, name, parameter)`` as seen at attach.
    """
    for registry, key, param in slots:
        now = registry.get(key)
        if now is not param:
            if is_sharded(now) and not is_sharded(param):
                raise SparsetrainError(
                    "fully_shard was applied after sparsetrain.attach: the sparsifier and the optimizer still "
                    "hold the unsharded weights, which no longer train. Apply fully_shard first (to every block, "
                    "then to the model), then build the optimizer over model.parameters(), then attach.")
            raise SparsetrainError(
                f"the model's parameter {key!r} was replaced after sparsetrain.attach, so the sparsifier and "
                "the optimizer no longer hold the weights that train. Change the model first, then build "
                "the optimizer and attach.")


def parameter_slots(model: nn.Module, names: list[str]) -> list[tuple[dict, str, Tensor]]:
    """``(module._parameters, short name, parameter)`` per name, for :func:`check_not_resharded`."""
    slots = []
    for name in names:
        owner, _, key = name.rpartition(".")
        registry = model.get_submodule(owner)._parameters
        slots.append((registry, key, registry[key]))
    return slots


def shard_state(obj: Any, params: dict[str, Tensor]) -> Any:
    """Method state with every full tensor filed under a sharded parameter's name, shaped like it,
    cut to that parameter's layout (a gradient EMA, a rewind point); everything else unchanged."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            p = params.get(k) if isinstance(k, str) else None
            if isinstance(v, Tensor) and is_sharded(p) and not is_sharded(v) and v.shape == p.shape:
                out[k] = shard_like(v, p)
            else:
                out[k] = shard_state(v, params)
        return out
    if isinstance(obj, list):
        return [shard_state(v, params) for v in obj]
    return obj


def _gather_state(obj: Any) -> Any:
    if is_sharded(obj):
        return obj.full_tensor()
    if isinstance(obj, dict):
        return {k: _gather_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_gather_state(v) for v in obj]
    return obj


class _FullState(dict):
    """``optimizer.state`` seen through the full weights: gathered on first access, kept back after."""

    def __init__(self, optimizer: torch.optim.Optimizer, real: dict[int, Tensor]) -> None:
        super().__init__()
        self._optimizer, self._real = optimizer, real

    def get(self, key, default=None):
        real = self._real.get(id(key))
        if real is None:
            return self._optimizer.state.get(key, default)
        if key not in self:  # tensors hash by identity
            entry = self._optimizer.state.get(real)
            if entry is None:
                return default
            self[key] = {k: v.full_tensor() if is_sharded(v) else v for k, v in entry.items()}
        return super().get(key, default)

    def __getitem__(self, key):
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def write_back(self) -> None:
        for key, entry in self.items():
            saved = self._optimizer.state[self._real[id(key)]]
            for k, v in entry.items():
                if is_sharded(saved.get(k)):
                    local(saved[k]).copy_(local(shard_like(v, saved[k])))


class _FullOptimizer:
    """The parts of an optimizer a method reads (``state``, ``param_groups``), over full weights."""

    def __init__(self, optimizer: torch.optim.Optimizer, real: dict[int, Tensor]) -> None:
        self.state = _FullState(optimizer, real)
        self.param_groups = optimizer.param_groups


def _plain_replica(module: nn.Module, tensors: dict[int, Tensor], real: dict[int, Tensor],
                   memo: dict[int, nn.Module]) -> nn.Module:
    """``module`` without FSDP2: its own class, full parameters, no hooks; shares buffers and attributes.

    ``tensors`` maps a sharded parameter's id to the full tensor to use (it is
    filled for the others); ``real`` maps each replica parameter's id back to
    the model's own parameter.
    """
    if id(module) in memo:
        return memo[id(module)]
    cls = type(module)
    if any(k.__name__ == "FSDPModule" for k in cls.__mro__):  # fully_shard swapped in a subclass
        cls = next(b for b in cls.__bases__ if not any(k.__name__ == "FSDPModule" for k in b.__mro__))
    copy = object.__new__(cls)
    copy.__dict__ = dict(module.__dict__)
    for attr, value in module.__dict__.items():  # FSDP2's (and any) hooks stay on the sharded model
        if "hooks" in attr and isinstance(value, dict):
            copy.__dict__[attr] = type(value)()
    memo[id(module)] = copy
    copy._parameters = {}
    for key, p in module._parameters.items():
        if p is not None and id(p) not in tensors:
            tensors[id(p)] = nn.Parameter(full(p.detach()).clone(), requires_grad=p.requires_grad)
        copy._parameters[key] = None if p is None else tensors[id(p)]
        if p is not None:
            real[id(tensors[id(p)])] = p
    copy._modules = {k: None if c is None else _plain_replica(c, tensors, real, memo)
                     for k, c in module._modules.items()}
    return copy


@contextmanager
@torch.no_grad()
def full_view(ctx) -> Iterator[Any]:
    """A :class:`~sparsetrain.context.SparseContext` over full tensors for one topology update.

    Without sharded parameters it is ``ctx`` itself. Otherwise the method sees
    whole weights, masks, gradients, method state and optimizer state, and a
    plain replica of the model built on those whole weights (for methods that
    run it, such as SNIP, or trace it, such as Chase); on exit rank 0's full
    masks are broadcast, and masks, weights (which an op may zero or rewind),
    optimizer state and method state are cut back to the parameters' layouts.
    Every rank must enter it (it gathers).
    """
    sharded = {n: p for n, p in ctx.params.items() if is_sharded(p)}
    if not sharded:
        yield ctx
        return
    params = {n: nn.Parameter(p.full_tensor(), requires_grad=p.requires_grad) if n in sharded else p
              for n, p in ctx.params.items()}
    tensors = {id(p): params[n] for n, p in sharded.items()}
    real: dict[int, Tensor] = {}
    model = None if ctx.model is None else _plain_replica(ctx.model, tensors, real, {})
    optimizer = None
    if ctx.optimizer is not None:
        optimizer = _FullOptimizer(ctx.optimizer, {id(params[n]): p for n, p in sharded.items()})
    view = replace(ctx, params=params, masks={n: full(m) for n, m in ctx.masks.items()},
                   grads={n: full(g) for n, g in ctx.grads.items()}, state=_gather_state(ctx.state),
                   optimizer=optimizer, model=model)
    yield view
    masks = {n: m.to(torch.bool) for n, m in view.masks.items()}
    distributed.broadcast_masks(masks)  # rank 0's choice, as under DDP
    ctx.masks = {n: shard_like(m, ctx.params[n]) if n in sharded else m for n, m in masks.items()}
    for n, p in sharded.items():
        local(p).copy_(local(shard_like(params[n], p)))
    if optimizer is not None:
        optimizer.state.write_back()
    ctx.state = shard_state(view.state, sharded)
    # parameters an op coupled to a weight (a bias pruned with its filter) are the model's own again
    ctx.coupled = {k: (real.get(id(p), p), src) for k, (p, src) in view.coupled.items()}

def load_checkpoint(sparsifier, checkpoint_id: str, key: str = "sparsifier") -> None:
    """Load the sparsifier state saved under ``key`` of a ``torch.distributed.checkpoint`` into ``sparsifier``.

    ``dcp.load`` fills a template in place, but a fresh sparsifier's
    ``state_dict()`` lacks what a method creates while it trains (a gradient
    EMA, a rewind point), so the template is built from the checkpoint's own
    metadata: each tensor filed under a sparsified weight's name and shaped
    like it gets that weight's layout here (a shard under FSDP2, whole
    otherwise, so a checkpoint saved under DDP loads under FSDP2 and back).
    Call it on every rank.

    Example:
        >>> import torch.distributed.checkpoint as dcp
        >>> dcp.save({"model": ..., "optim": ..., "sparsifier": sp.state_dict()}, checkpoint_id=path)  # doctest: +SKIP
        >>> load_checkpoint(sp, path)  # after loading the model and the optimizer  # doctest: +SKIP
    """
    import torch.distributed.checkpoint as dcp

    metadata = dcp.FileSystemReader(checkpoint_id).read_metadata()
    paths = {flat: path for flat, path in (metadata.planner_data or {}).items() if path and path[0] == key}
    if not paths:
        raise SparsetrainError(f"the checkpoint {checkpoint_id!r} holds no {key!r} entry; save the sparsifier "
                               f"with dcp.save({{..., {key!r}: sparsifier.state_dict()}}, checkpoint_id=...).")
    params = sparsifier.ctx.params
    tree: dict = {}
    for flat, path in paths.items():
        meta = metadata.state_dict_metadata[flat]
        leaf = None  # a pickled value: dcp.load puts it in place
        if hasattr(meta, "size"):
            p = params.get(path[-1]) if isinstance(path[-1], str) else None
            if is_sharded(p) and tuple(meta.size) == tuple(p.shape):
                from torch.distributed.tensor import empty

                leaf = empty(meta.size, dtype=meta.properties.dtype, device_mesh=p.device_mesh,
                             placements=p.placements)
            else:
                leaf = torch.empty(meta.size, dtype=meta.properties.dtype)
        node = tree
        for part in path[1:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = leaf
    dcp.load({key: tree}, checkpoint_id=checkpoint_id)
    state = _lists(tree)
    for name, value in sparsifier.state_dict().items():  # DCP keeps no empty dict (a method without state)
        if name not in state and isinstance(value, dict) and not value:
            state[name] = {}
    sparsifier.load_state_dict(state)


def _lists(obj: Any) -> Any:
    """Nested dicts whose keys are 0..n-1 (how DCP files list items) back into lists."""
    if not isinstance(obj, dict):
        return obj
    out = {k: _lists(v) for k, v in obj.items()}
    if out and all(isinstance(k, int) for k in out) and sorted(out) == list(range(len(out))):
        return [out[i] for i in range(len(out))]
    return out
