"""Physically remove empty channels: a narrower, standard ``nn.Module`` with the same eval outputs.

docs/algorithms.md, "Chase" (``merge_filters``): keep the surviving output channels of
each layer (weights, bias, BatchNorm entries) and the matching input columns of
every consumer. Which channels are coupled (a BatchNorm, a flatten into a
linear layer, a residual addition) comes from the dependency graph
(:func:`sparsetrain.core.graph.channel_groups`, torch-pruning), never
from a per-architecture table.

A channel is *empty* when every producer's weight rows for it are zero. Its
value is then a constant (bias and BatchNorm shift through the activation),
so removing it shifts each consumer by a constant too, which is folded into
the consumer's bias: in eval mode the compact model's outputs equal the
masked model's. That fold is exact for linear layers and for convolutions
without zero padding; a zero-padded convolution sees the constant only partly
at the borders, so such a channel is kept, unless a ``calibration`` loader is
given: then it is removed (its interior value folded) and BatchNorm statistics
are recomputed on the data, as the seed does (``update_bn``).

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(4, 2, 1)).eval()
    >>> with torch.no_grad(): _ = net[0].weight[1:3].zero_()
    >>> small, spec = compact(net, torch.randn(2, 1, 8))
    >>> small[0].out_channels, small[3].in_channels, spec["removed"]
    (2, 2, {'0': [1, 2]})
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain.core.selection import unwrap
from sparsetrain.deploy.widths import module_widths, rebuild, resize_module
from sparsetrain.errors import SparsetrainError

_KNOWN = (nn.Linear, nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class _Plan:
    """What happens to one channel group: removed root channels and bias shifts per consumer."""

    removed: list[int]
    shifts: dict[str, Tensor] = field(default_factory=dict)
    approximate: list[str] = field(default_factory=list)


def _run(model: nn.Module, example_input: Any) -> Any:
    with torch.no_grad():
        return model(*example_input) if isinstance(example_input, tuple) else model(example_input)


def _consumer_inputs(model: nn.Module, names: set[str], example_input: Any) -> dict[str, Tensor]:
    """The input each consumer layer sees on ``example_input`` (eval mode)."""
    seen: dict[str, Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_pre_hook(
        lambda m, args, n=n: seen.setdefault(n, args[0].detach().clone())) for n in names]
    try:
        _run(model, example_input)
    finally:
        for h in handles:
            h.remove()
    return seen


def _check_traceable(model: nn.Module, own_modules_ok: bool = False) -> None:
    """Refuse layers whose weights the dependency graph cannot see (a functional conv on a raw parameter).

    With ``own_modules_ok`` (shrinking while training) a module of the user's own holding a raw
    parameter passes: the channel groups that go through it are not offered (with a warning,
    :func:`sparsetrain.core.graph.channel_groups`), so its shapes never change; torch's other modules
    (an ``nn.Embedding``, ...) are still refused.
    """
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.dim() >= 2]
        if own_modules_ok and not type(module).__module__.startswith("torch."):
            continue
        if own and not isinstance(module, _KNOWN):
            raise SparsetrainError(
                f"cannot compact {type(model).__name__}: layer {name!r} ({type(module).__name__}) holds a "
                f"{tuple(own[0].shape)} weight outside a standard Conv/Linear layer, which the dependency graph "
                "cannot trace. Rewrite it with nn.Conv*/nn.Linear, or compact a model without it.")


def _empty_channels(group, params: dict[str, Tensor]) -> list[int]:
    """Root channels whose producer weight rows are all zero in every producer."""
    empty = torch.ones(group.size, dtype=torch.bool)
    for s in group.producers:
        if s.param.endswith(".weight"):
            w = params[s.param].detach().movedim(s.dim, 0)
            nz = w.reshape(w.shape[0], -1).ne(0).any(1).cpu()
            empty &= ~nz[s.positions()].any(1)
    return empty.nonzero().flatten().tolist()


def _constant(x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """Per input feature of ``positions`` (dim 1): its value and whether it is the same everywhere."""
    v = x.movedim(1, 0)[positions.flatten()].reshape(positions.numel(), -1)
    k = v[:, :1]
    same = ((v - k).abs() <= 1e-6 * (1.0 + v.abs().amax(1, keepdim=True))).all(1)
    return k.flatten().view(positions.shape).cpu(), same.view(positions.shape).cpu()


def _exact_fold(module: nn.Module) -> bool:
    """A constant input shifts every output by the same amount (no zero padding at the borders)."""
    if isinstance(module, nn.Linear):
        return True
    if getattr(module, "transposed", False):
        return False
    padding = module.padding
    pads = padding != "valid" if isinstance(padding, str) else any(p > 0 for p in padding)
    return module.padding_mode != "zeros" or not pads or all(k == 1 for k in module.kernel_size)


def _round_up(removed: list[int], size: int, round_to: int) -> list[int]:
    """Give back removed channels (highest index first) until ``size - len(removed)`` is a multiple of ``round_to``.

    A kept empty channel is exactly what the model had (its weights are zero),
    so rounding changes no output, only the widths that the kernels see.

    Example:
        >>> _round_up([0, 1, 2, 5, 9], 16, 8)   # 11 left -> 16 left
        []
        >>> _round_up([0, 1, 2, 5, 9, 10, 11, 12, 13], 16, 4)  # 7 left -> 8 left
        [0, 1, 2, 5, 9, 10, 11, 12]
    """
    if round_to <= 1 or not removed:
        return removed
    left = size - len(removed)
    target = min(size, -(-left // round_to) * round_to)
    return removed[:len(removed) - (target - left)]


def _plan(group, params, modules, inputs, empty: list[int], approximate: bool, round_to: int = 1) -> _Plan:
    """Keep the channels whose constant cannot be folded exactly (unless approximating); compute the shifts."""
    keep_mask = torch.zeros(group.size, dtype=torch.bool)
    consts = {}
    for s in group.consumers:
        name = s.param.rsplit(".", 1)[0]
        pos = s.positions()[empty]
        w = params[s.param].detach().movedim(s.dim, 0)
        reads = w.reshape(w.shape[0], -1).ne(0).any(1).cpu()[pos]  # a zero consumer column ignores the value
        k, same = _constant(inputs[name], pos)
        k = torch.where(reads, k, torch.zeros_like(k))
        keep_mask[torch.tensor(empty)[(reads & ~same).any(1)]] = True  # varies: e.g. an unmasked skip path
        consts[s.param] = (pos, k, s.dim)
        if not _exact_fold(modules[name]) and not approximate:
            keep_mask[torch.tensor(empty)[(k != 0).any(1)]] = True
    removed = [c for c in empty if not keep_mask[c]]
    if len(removed) == group.size:  # a layer needs one channel
        removed = removed[1:]
    removed = _round_up(removed, group.size, round_to)
    plan = _Plan(removed)
    index = {c: i for i, c in enumerate(empty)}
    rows = torch.tensor([index[c] for c in removed], dtype=torch.long)
    for param, (pos, k, dim) in consts.items():
        pos, k = pos[rows].flatten(), k[rows].flatten()
        if not bool(k.any()):
            continue
        w = params[param].detach().index_select(dim, pos).movedim(dim, 1)  # [out, removed inputs, kernel...]
        shift = (w * k.to(w).view(1, -1, *([1] * (w.dim() - 2)))).sum(dim=tuple(range(1, w.dim())))
        plan.shifts[param.rsplit(".", 1)[0]] = shift
        if not _exact_fold(modules[param.rsplit(".", 1)[0]]):
            plan.approximate.append(param.rsplit(".", 1)[0])
    return plan


def channel_drops(groups, removed: list[list[int]]) -> dict[str, dict[int, set[int]]]:
    """``{module: {dim: positions}}`` to delete when ``removed[i]`` root channels of ``groups[i]`` go.

    Producer rows, consumer columns (a flatten maps one channel to several) and
    the entries of the group's channel-wise norms (dim 0).
    """
    drops: dict[str, dict[int, set[int]]] = {}
    for g, chosen in zip(groups, removed, strict=True):
        root = torch.tensor(chosen, dtype=torch.long)
        for s in (*g.producers, *g.consumers):
            if s.param.endswith(".weight"):
                module = s.param.rsplit(".", 1)[0]
                drops.setdefault(module, {}).setdefault(s.dim, set()).update(s.positions()[root].flatten().tolist())
        for norm in g.norms:
            drops.setdefault(norm, {}).setdefault(0, set()).update(chosen)
    return drops


def keep_indices(model: nn.Module, drops: dict[str, dict[int, set[int]]]) -> dict[str, dict[int, Tensor]]:
    """The complement of :func:`channel_drops`: ``{module: {dim: kept positions (sorted)}}``."""
    modules = dict(model.named_modules())
    keep = {}
    for name, dims in drops.items():
        module = modules[name]
        layer = hasattr(module, "in_channels") or hasattr(module, "in_features")
        keep[name] = {d: torch.tensor([i for i in range(module.weight.shape[d] if layer else _features(module))
                                       if i not in drop], dtype=torch.long) for d, drop in dims.items()}
    return keep


def _remove(model: nn.Module, groups, plans: list[_Plan]) -> None:
    """Apply every plan: slice producers, norms and consumers, then add the folded shifts to biases."""
    keep = keep_indices(model, channel_drops(groups, [plan.removed for plan in plans]))
    modules = dict(model.named_modules())
    for plan in plans:  # shifts are computed on the full widths: fold first, then slice
        for name, shift in plan.shifts.items():
            module = modules[name]
            if module.bias is None:
                module.bias = nn.Parameter(torch.zeros(module.weight.shape[int(_transposed(module))],
                                                       dtype=module.weight.dtype, device=module.weight.device))
            with torch.no_grad():
                module.bias.add_(shift.to(module.bias))
    for name, dims in keep.items():
        resize_module(modules[name], dims)


def _features(module: nn.Module) -> int:
    return int(getattr(module, "num_features", None) or module.num_channels)


def _transposed(module: nn.Module) -> bool:
    return bool(getattr(module, "transposed", False))


def compact(model: nn.Module, example_input: Any, *, masks: dict[str, Tensor] | None = None,
            calibration: Any = None, round_to: int = 1) -> tuple[nn.Module, dict[str, Any]]:
    """Remove the empty channels of ``model``; returns ``(compact_model, width_spec)``.

    Args:
        model: a trained model (dense-with-zeros, docs/concepts.md, "Guarantees"); not modified.
        example_input: a real input batch; it traces the graph, reads the
            constant value of each empty channel, and checks the result.
        masks: ``{parameter name: mask}`` applied (weight * mask) before compaction.
        calibration: optional loader of input batches (``(x, y)`` or ``x``); when
            given, channels whose constant cannot be folded exactly are removed
            too and BatchNorm statistics are recomputed on it
            (``torch.optim.swa_utils.update_bn``, docs/algorithms.md, "Chase"). Outputs then
            differ from the masked model's by design.
        round_to: keep each resized group's width a multiple of this, by keeping
            some empty channels (outputs unchanged). Convolution kernels work on
            channel blocks (oneDNN: 16 fp32 channels on AVX-512, 8 on AVX2; GPU
            tensor cores: 8), so an odd width such as 37 runs as slowly as 48.
            ``benchmarks/RESULTS.md`` ("widths") measures it. 1 keeps the
            exact widths.

    A transformer (MLP blocks or attentions found by structure,
    :mod:`sparsetrain.core.transformer`) is compacted by
    :func:`sparsetrain.deploy.transformer.compact_transformer` instead: its
    unused MLP units and attention heads go, nothing else.

    Returns:
        The compact ``nn.Module`` (same class, fewer channels, training mode as
        given) and a JSON-able width spec (``removed`` root channels per group,
        the new ``widths`` of each resized layer) for :func:`rebuild`.
        A model with nothing removable is returned as is, with a warning.

    Raises:
        SparsetrainError: a layer the graph cannot trace (named), a failed trace,
            or outputs that changed (a graph the tracer misread).
    """
    from sparsetrain.core.graph import channel_groups
    from sparsetrain.deploy.transformer import compact_transformer, is_transformer
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise SparsetrainError(f"round_to (--round-to) must be a positive int (1 keeps exact widths, 8 or 16 suit "
                               f"most hardware), got {round_to!r}.")
    source = unwrap(model)
    if is_transformer(source):  # the trace misreads attention: MLP units and heads are found by structure
        if calibration is not None:
            warnings.warn("transformer compaction is exact: the calibration batches are not used.", stacklevel=2)
        return compact_transformer(model, example_input, masks=masks, round_to=round_to)
    masked = copy.deepcopy(source).eval()
    params = dict(masked.named_parameters())
    with torch.no_grad():
        for name, mask in (masks or {}).items():
            if name not in params:
                raise SparsetrainError(f"masks name {name!r}, which the model does not have.")
            params[name].mul_(mask.to(params[name]))
    groups = [g for g in channel_groups(masked, example_input, prune_skip=True) if _empty_channels(g, params)]
    if groups:
        _check_traceable(masked)
    modules = dict(masked.named_modules())
    inputs = _consumer_inputs(masked, {s.param.rsplit(".", 1)[0] for g in groups for s in g.consumers},
                              example_input)
    plans = [_plan(g, params, modules, inputs, _empty_channels(g, params), calibration is not None, round_to)
             for g in groups]
    kept = [(g, p) for g, p in zip(groups, plans, strict=True) if p.removed]
    if not kept:
        warnings.warn(f"nothing to compact in {type(source).__name__}: no channel has all-zero weights in every "
                      "layer that produces it (or none can be removed exactly); the model is returned unchanged.",
                      stacklevel=2)
        return model, {"format": "sparsetrain-width-spec", "version": 1, "removed": {}, "widths": {}}
    reference = _run(masked, example_input)
    small = copy.deepcopy(masked)
    _remove(small, [g for g, _ in kept], [p for _, p in kept])
    _verify(small, example_input, reference, approximate=calibration is not None or any(p.approximate for _, p in kept))
    if calibration is not None:
        torch.optim.swa_utils.update_bn(calibration, small)
    small.train(source.training)
    spec = {"format": "sparsetrain-width-spec", "version": 1, "model": type(source).__name__, "round_to": round_to,
            "removed": {g.name: p.removed for g, p in kept}, "widths": module_widths(small, source)}
    return small, spec


def _verify(small: nn.Module, example_input: Any, reference: Any, approximate: bool) -> None:
    try:
        out = _run(small.eval(), example_input)
    except RuntimeError as err:
        raise SparsetrainError(f"the compact model fails on the example input ({str(err).splitlines()[0]}): the "
                               "dependency graph misread the model; compaction is not possible for it.") from None
    if approximate:
        return
    if not isinstance(out, Tensor) or out.shape != reference.shape or not torch.allclose(
            out, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max() + 1)):
        raise SparsetrainError("the compact model's outputs differ from the masked model's: the dependency graph "
                               "misread an operation of this model; compaction is not possible for it.")


__all__ = ["channel_drops", "compact", "keep_indices", "rebuild"]
