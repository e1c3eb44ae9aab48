"""Shrink while training: narrow the user's model, its optimizer and the sparsifier in place.

A method that empties whole channels for good (Chase's channel removal) still
trains at full width, multiplying zeros. ``attach(..., shrink=True)`` removes
those channels from the model *while it trains*: every convolution / linear /
BatchNorm module of a removed channel group gets narrower weights (the groups
come from torch-pruning's dependency graph, :func:`~sparsetrain.core.graph.channel_groups`,
residual groups together), and so does everything that is shaped like them:
gradients, the optimizer's per-parameter state (momentum, Adam moments), the
masks, the ever-active masks, and the method's own state (a tensor filed under
a parameter's name and shaped like it, plus what the method's
:class:`~sparsetrain.ops.base.Shrink` narrows itself). The parameters stay the
same ``nn.Parameter`` objects (their ``.data`` is replaced), so the optimizer,
an LR scheduler and the user's references keep working: the training loop does
not change.

A channel is removed only when every weight slice that produces it or reads it
is *frozen*: declared by the method as never active again. Its consumers then
read it through zero weights, so removing it changes no output; the narrowed
model computes exactly what the masked one did (checked on the example input
after every shrink). Counts keep referring to the original sizes
(``SparseContext.removed``), so densities, budgets and channel schedules are
those of the masked run. docs/guides/faster.md, "Shrink while training".

Example:
    >>> import torch, sparsetrain
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3),
    ...                     nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    >>> x = torch.randn(2, 3, 8, 8)
    >>> sp = sparsetrain.attach(net, opt, "chase", density=0.5, channel_sparsity=0.5, channel_every=2,
    ...                         channel_offset=0, end=1.0, min_ratio=0.1, total_steps=10, example_input=x,
    ...                         shrink=True)
    >>> for _ in range(2):
    ...     opt.zero_grad(); net(x).sum().backward(); opt.step()
    >>> net[3].out_channels < 16 and net[7].in_features == net[3].out_channels
    True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sparsetrain.core.selection import unwrap
from sparsetrain.errors import SparsetrainError

if TYPE_CHECKING:  # pragma: no cover
    from sparsetrain.core.graph import ChannelGroup
    from sparsetrain.engine import Sparsifier

#: optimizers whose per-parameter state is element-wise (each state tensor shaped like its parameter,
#: plus scalars such as ``step``), so it can be narrowed with its parameter
NARROWABLE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax, torch.optim.NAdam,
              torch.optim.RAdam, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adadelta, torch.optim.Rprop,
              torch.optim.ASGD)

Keep = dict[str, dict[int, Tensor]]


def check_optimizer(optimizer: torch.optim.Optimizer | None) -> None:
    """Refuse, before training starts, an optimizer whose state a shrink could not narrow.

    Example:
        >>> check_optimizer(torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=0.1))
    """
    if optimizer is not None and not isinstance(optimizer, NARROWABLE):
        names = ", ".join(c.__name__ for c in NARROWABLE)
        raise SparsetrainError(
            f"shrink=True narrows the optimizer's per-parameter state with the model, but "
            f"{type(optimizer).__name__} keeps state sparsetrain cannot narrow (only element-wise state: {names}). "
            "Use one of those optimizers, or train without shrink (the masked model is the same function).")


def narrow(t: Tensor, dims: dict[int, Tensor]) -> Tensor:
    """``t`` with only the indices ``dims[d]`` kept along each dimension ``d``.

    Example:
        >>> narrow(torch.arange(6).view(2, 3), {1: torch.tensor([0, 2])}).tolist()
        [[0, 2], [3, 5]]
    """
    for d, idx in dims.items():
        t = t.index_select(d, idx.to(t.device))
    return t


def removable(model: nn.Module, example_input: Any, frozen: dict[str, Tensor],
              masks: dict[str, Tensor]) -> list[tuple[ChannelGroup, list[int]]]:
    """Channel groups with channels that may go: every producer row and consumer column frozen and inactive.

    A group keeps at least one channel. Groups whose layers are not all
    sparsified (no mask, so nothing is frozen there) keep every channel.
    """
    from sparsetrain.core.graph import channel_groups
    out = []
    with torch.enable_grad():  # the tracer follows autograd; the engine's step hooks run under no_grad
        groups = channel_groups(model, example_input, prune_skip=True)
    for g in groups:
        dead = torch.ones(g.size, dtype=torch.bool)
        for s in (*g.producers, *g.consumers):
            if not s.param.endswith(".weight"):
                continue
            if s.param not in frozen or s.param not in masks:
                dead[:] = False
                break
            off = (frozen[s.param].cpu() & ~masks[s.param].cpu()).movedim(s.dim, 0)
            dead &= off.reshape(off.shape[0], -1).all(1)[s.positions()].all(1)
        chosen = dead.nonzero().flatten().tolist()
        if len(chosen) == g.size:  # a layer needs one channel
            chosen = chosen[1:]
        if chosen:
            out.append((g, chosen))
    return out


def narrow_model(model: nn.Module, picks: list[tuple[ChannelGroup, list[int]]],
                 widths: dict[str, Any] | None = None) -> Keep:
    """Remove the picked channels from ``model`` in place; returns ``{parameter name: {dim: kept indices}}``.

    ``widths``, when given, receives the width-spec entry of every narrowed module.
    """
    from sparsetrain.deploy.compact import channel_drops, keep_indices
    from sparsetrain.deploy.widths import resize_module, width_entry
    keep_modules = keep_indices(model, channel_drops([g for g, _ in picks], [c for _, c in picks]))
    modules = dict(model.named_modules())
    keep: Keep = {}
    for name, dims in keep_modules.items():
        module = modules[name]
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            keep[f"{name}.weight"] = dims
            out_dim = int(getattr(module, "transposed", False))
            if module.bias is not None and out_dim in dims:
                keep[f"{name}.bias"] = {0: dims[out_dim]}
        else:
            keep.update({f"{name}.{p}": {0: dims[0]} for p in ("weight", "bias") if getattr(module, p) is not None})
        with torch.no_grad():
            resize_module(module, dims, in_place=True)
        if widths is not None:
            widths[name] = width_entry(module)
    return keep


def narrow_optimizer(optimizer: torch.optim.Optimizer | None, params: dict[str, nn.Parameter], keep: Keep,
                     shapes: dict[str, torch.Size]) -> None:
    """Narrow every per-parameter state tensor of the narrowed parameters (momentum, Adam moments, ...)."""
    if optimizer is None:
        return
    for name, dims in keep.items():
        state = optimizer.state.get(params[name])
        for key, value in (state or {}).items():
            if not isinstance(value, Tensor) or value.dim() == 0:
                continue
            if value.shape != shapes[name]:
                raise SparsetrainError(
                    f"cannot narrow {type(optimizer).__name__}'s state {key!r} of {name} (shape "
                    f"{tuple(value.shape)}, the parameter {tuple(shapes[name])}): train without shrink.")
            state[key] = narrow(value, dims)


def narrow_state(obj: Any, keep: Keep, shapes: dict[str, torch.Size]) -> Any:
    """Method state: every tensor filed under a narrowed parameter's name and shaped like it is narrowed."""
    if isinstance(obj, dict):
        return {k: narrow(v, keep[k]) if isinstance(v, Tensor) and k in keep and v.shape == shapes[k]
                else narrow_state(v, keep, shapes) for k, v in obj.items()}
    if isinstance(obj, list):
        return [narrow_state(v, keep, shapes) for v in obj]
    return obj


def layer_widths(model: nn.Module) -> dict[str, list[int]]:
    """``{layer: [out, in]}`` of every convolution / linear layer (channels or features).

    Example:
        >>> layer_widths(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 2)))
        {'0': [8, 3], '1': [2, 8]}
    """
    out = {}
    for name, m in unwrap(model).named_modules():
        if isinstance(m, nn.Linear):
            out[name] = [m.out_features, m.in_features]
        elif isinstance(m, nn.modules.conv._ConvNd):
            out[name] = [m.out_channels, m.in_channels]
    return out


def _event(model: nn.Module, shrunk: int) -> dict[str, Any]:
    return {"shrunk": shrunk, "parameters": sum(p.numel() for p in model.parameters()),
            "widths": layer_widths(model)}


def _forward(model: nn.Module, example_input: Any) -> Any:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for m, mode in modes.items():
            m.train(mode)


@dataclass
class Shrinker:
    """When and how a sparsifier narrows its model (``attach(..., shrink=True)``).

    Attributes:
        every: shrink every this many optimizer steps; ``None`` = the method's own
            cadence (Chase: right after each channel-removal event).
        strict: a model the dependency graph cannot trace is an error at attach;
            with False it trains unshrunk after one warning.
        active: False once a non-strict check found the model untraceable.
        settled: frozen positions left after the last shrink (ones it could not
            remove); a shrink that finds no more skips the trace.
    """

    every: int | None = None
    strict: bool = True
    active: bool = True
    settled: int = 0

    def check(self, sp: Sparsifier) -> None:
        """Bad input gets one message at attach, before training starts."""
        rule = sp.method.shrink
        if rule is None:
            raise SparsetrainError(
                f"shrink=True: method {sp.method.name!r} never removes whole channels for good, so there is nothing "
                "to shrink. Use a method that does (chase with channel_sparsity > 0; prune, static, rigl, set or dst "
                "with granularity='filter'), or drop shrink=True.")
        if self.every is not None and (isinstance(self.every, bool) or not isinstance(self.every, int)
                                       or self.every < 1):
            raise SparsetrainError(f"shrink_every must be a positive int (optimizer steps), got {self.every!r}.")
        if sp._sharded:
            raise SparsetrainError("shrink=True does not work with FSDP2-sharded parameters; use DDP or one device.")
        check_optimizer(sp.optimizer)
        if sp.ctx.example_input is None:
            raise SparsetrainError("shrink=True traces the model to narrow it: attach with example_input=<a batch>.")
        try:
            from sparsetrain.core.graph import channel_groups
            from sparsetrain.deploy.compact import _check_traceable
            channel_groups(sp.ctx.model, sp.ctx.example_input, prune_skip=True)
            _check_traceable(sp.ctx.model, own_modules_ok=True)
        except SparsetrainError as err:
            if self.strict:
                raise SparsetrainError(f"shrink=True: {err} To train unshrunk instead, pass shrink_strict=False.") \
                    from None
            warnings.warn(f"shrink=True: the model cannot be narrowed ({err}); it trains unshrunk "
                          "(shrink_strict=False).", stacklevel=3)
            self.active = False
        sp.history.append({"step": sp.ctx.step, **_event(unwrap(sp.model), 0)})  # the widths at the start

    def due(self, sp: Sparsifier) -> bool:
        step, total = sp.ctx.step, sp.ctx.total_steps
        if not self.active:
            return False
        return step % self.every == 0 if self.every is not None else sp.method.shrink.due(step, total)


@torch.no_grad()
def shrink(sp: Sparsifier) -> dict[str, Any]:
    """Narrow ``sp``'s model, optimizer, masks and method state in place; returns the history event
    (channels removed, parameters and ``{layer: [out, in]}`` widths after it).

    Identical on every rank (masks and method state are), with no communication.
    """
    ctx, rule, shrinker = sp.ctx, sp.method.shrink, sp._shrinker
    model = unwrap(sp.model)
    frozen = rule.frozen(ctx)
    pending = sum(int(f.sum()) for f in frozen.values())
    if pending == shrinker.settled:  # nothing froze since the last shrink: no trace needed
        return _event(model, 0)
    picks = removable(model, ctx.example_input, frozen, ctx.masks)
    shrinker.settled = pending
    if not picks:
        return _event(model, 0)
    reference = _forward(model, ctx.example_input)
    params = dict(model.named_parameters())
    shapes = {n: params[n].shape for n in params}
    keep = narrow_model(model, picks, sp.widths)
    narrow_optimizer(sp.optimizer, params, keep, shapes)
    for n, dims in keep.items():
        if n in ctx.masks:
            ctx.removed[n] = ctx.removed.get(n, 0) + shapes[n].numel() - params[n].numel()
            sp.fired_removed += int(sp.fired[n].sum()) - int(narrow(sp.fired[n], dims).sum())
            sp.fired[n] = narrow(sp.fired[n], dims)
            ctx.masks[n] = narrow(ctx.masks[n], dims)
    ctx.state = narrow_state(ctx.state, keep, shapes)
    if rule.narrow is not None:
        rule.narrow(ctx, keep)
    sp._apply_topology()
    shrinker.settled = sum(int(f.sum()) for f in rule.frozen(ctx).values())  # what stays: unremovable
    out = _forward(model, ctx.example_input)
    if not isinstance(out, Tensor) or out.shape != reference.shape or not torch.allclose(
            out, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max() + 1)):
        raise SparsetrainError("shrinking changed the model's outputs: the dependency graph misread an operation "
                               "of this model. Train it with shrink=False (please report this).")
    return _event(model, sum(len(c) for _, c in picks))


__all__ = ["NARROWABLE", "Shrinker", "check_optimizer", "layer_widths", "narrow", "narrow_model", "narrow_optimizer",
           "narrow_state", "removable", "shrink"]
