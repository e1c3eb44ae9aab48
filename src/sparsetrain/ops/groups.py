"""Dynamic sparse training at a coarser granularity: whole kernels, rows, filters, blocks.

The weight-level ops of :mod:`sparsetrain.ops.prune` / :mod:`~sparsetrain.ops.regrow`
lifted to groups of :mod:`sparsetrain.core.granularity`: a group's score is the
mean of its element scores, counts are exact numbers of whole groups, and masks
stay made of whole groups (e.g. RigL on kernels or filters). N:M is not a
grouping into whole groups and is refused here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sparsetrain.context import SparseContext
from sparsetrain.core.granularity import Granularity, NMGranularity, group_granularity, oriented
from sparsetrain.core.kernels import count_true
from sparsetrain.core.layout import from_out_first, out_first
from sparsetrain.core.topk import ROUNDING, exact_count, global_topk, topk_mask
from sparsetrain.criteria import Criterion, get_criterion, needs_grad
from sparsetrain.distributions import layer_densities
from sparsetrain.errors import unknown_choice
from sparsetrain.ops.base import Dropper, Grower, Op
from sparsetrain.schedules import Schedule


def _alive(gran: Granularity, mask: torch.Tensor) -> torch.Tensor:
    return gran.group_scores(mask.float()) > 0


def _group_size(gran: Granularity, shape: torch.Size) -> int:
    return shape.numel() // gran.num_groups(shape)


def original_groups(ctx: SparseContext, gran: Granularity, name: str) -> int:
    """Number of groups of layer ``name`` at its original size: a layer narrowed by a shrink still counts
    the groups of its removed channels, as :meth:`SparseContext.numel` counts their weights.

    Example:
        >>> from torch import nn
        >>> from sparsetrain.core.granularity import get_granularity
        >>> ctx = SparseContext({"w": nn.Parameter(torch.zeros(4, 2, 3, 3))}, {}, None, 1, torch.Generator())
        >>> ctx.removed["w"] = 2 * 2 * 9  # two output channels narrowed away
        >>> original_groups(ctx, get_granularity("kernel"), "w")
        12
    """
    return ctx.numel(name) // _group_size(gran, ctx.params[name].shape)


def init_random_groups(distribution: str, density: float, granularity: str, **dist_kwargs) -> Op:
    """Exact-count random masks of whole groups: round(d_l * G_l) of the layer's G_l groups.

    Example: a conv [4, 2, 3, 3] at kernel granularity has 8 groups of 9 weights.
    """
    gran = group_granularity(granularity)

    def run(ctx: SparseContext) -> dict:
        dens = layer_densities(distribution, ctx.shapes, density, **dist_kwargs)
        for n, p in ctx.params.items():
            layer = oriented(gran, ctx.out_axis(n))
            layer.check(p.shape, n)
            group_shape = layer.group_scores(torch.zeros(p.shape)).shape
            k = exact_count(dens[n], group_shape.numel())
            keep = topk_mask(torch.rand(group_shape, generator=ctx.generator), k)
            ctx.masks[n] = layer.expand(keep, p.shape).to(p.device)
        return {"init": f"random[{distribution},{gran.name}]"}
    return Op(run, name=f"init_random_groups[{gran.name}]")


def drop_groups(fraction: Schedule, criterion: str | Criterion, granularity: str, rounding: str = "ceil",
                scope: str = "layer") -> Dropper:
    """Remove rounding(r * g_l) of each layer's g_l active groups with the lowest mean score.

    ``scope="global"``: rounding(r * sum g_l) groups ranked across all layers
    (Chase's global magnitude death on groups). Returns the number of weights
    removed per layer (groups x group size).

    Example:
        >>> drop_groups(lambda t, T: 0.5, "magnitude", "kernel", scope="global").name
        'drop_groups[kernel,global]'
    """
    gran, crit, round_fn = group_granularity(granularity), get_criterion(criterion), ROUNDING[rounding]
    if scope not in ("layer", "global"):
        raise unknown_choice("scope", scope, ["layer", "global"])

    def drop(ctx: SparseContext) -> dict[str, int]:
        r = fraction(ctx.step, ctx.total_steps)
        layers = {n: oriented(gran, ctx.out_axis(n)) for n in ctx.params}
        alive = {n: _alive(layers[n], ctx.masks[n]) for n in ctx.params}
        counts = {n: count_true(a) for n, a in alive.items()}
        scores = {n: layers[n].group_scores(crit(ctx, n).float()) for n in ctx.params}
        if scope == "global":
            n_alive = sum(counts.values())
            keep = global_topk(scores, n_alive - min(n_alive, round_fn(r * n_alive)), alive, n_candidates=n_alive)
        else:
            keep = {n: topk_mask(scores[n], counts[n] - min(counts[n], round_fn(r * counts[n])), alive[n])
                    for n in ctx.params}
        removed = {}
        for n, p in ctx.params.items():
            k = counts[n] - count_true(keep[n])
            if k > 0:
                ctx.masks[n] = layers[n].expand(keep[n], p.shape).to(p.device) & ctx.masks[n]
            removed[n] = k * _group_size(layers[n], p.shape)
        return removed

    name = f"drop_groups[{granularity}]" if scope == "layer" else f"drop_groups[{granularity},global]"
    return Dropper(drop, needs_grad=needs_grad(crit), name=name)


def grow_groups_to(density: Schedule, criterion: str | Criterion, granularity: str,
                   allowed: Callable[[SparseContext], dict[str, torch.Tensor]] | None = None) -> Op:
    """Grow to exact_count(d(t), G) active groups of all layers' G groups (of the original size), by a
    global top-k of mean ``criterion`` over inactive groups (Chase's global growth; with granularity
    ``"weight"`` every weight is its own group: the seed's ``global_gradients``, fixed on purpose to
    exactly k where the seed keeps every |g| above a threshold).

    ``allowed(ctx) -> {name: element mask}`` limits growth to groups whose every
    weight is allowed (Chase: inside surviving channels); a layer it omits is open.

    Example:
        >>> grow_groups_to(lambda t, T: 0.1, "gradient", "kernel").name
        'grow_groups_to[kernel]'
    """
    gran, crit = group_granularity(granularity), get_criterion(criterion)

    def run(ctx: SparseContext) -> dict:
        layers = {n: oriented(gran, ctx.out_axis(n)) for n in ctx.params}
        alive = {n: _alive(layers[n], ctx.masks[n]) for n in ctx.params}
        total = sum(original_groups(ctx, layers[n], n) for n in ctx.params)
        k = exact_count(density(ctx.step, ctx.total_steps), total) - sum(count_true(a) for a in alive.values())
        if k <= 0:
            return {"grown": 0}
        fits = allowed(ctx) if allowed is not None else {}
        open_ = {n: ~alive[n] & (layers[n].group_scores(fits[n].float()) >= 1.0 if n in fits else True)
                 for n in ctx.params}
        new = global_topk({n: layers[n].group_scores(crit(ctx, n).float()) for n in ctx.params}, k, open_)
        grown = 0
        for n, p in ctx.params.items():
            ctx.masks[n] = ctx.masks[n] | layers[n].expand(new[n], p.shape).to(p.device)
            grown += count_true(new[n]) * _group_size(layers[n], p.shape)
        return {"grown": grown}
    return Op(run, needs_grad=needs_grad(crit), name=f"grow_groups_to[{granularity}]")


def regrow_groups(criterion: str | Criterion, granularity: str) -> Grower:
    """Regrow, per layer, as many whole groups as were dropped, by the highest mean score."""
    gran, crit = group_granularity(granularity), get_criterion(criterion)

    def grow(ctx: SparseContext, removed: dict[str, int], before) -> dict[str, int]:
        for n, k_weights in removed.items():
            p, layer = ctx.params[n], oriented(gran, ctx.out_axis(n))
            k = k_weights // _group_size(layer, p.shape)
            if k > 0:
                scores = layer.group_scores(crit(ctx, n).float())
                new = topk_mask(scores, k, ~_alive(layer, ctx.masks[n]))
                ctx.masks[n] = ctx.masks[n] | layer.expand(new, p.shape).to(p.device)
        return dict(removed)

    return Grower(grow, needs_grad=needs_grad(crit), name=f"regrow_groups[{granularity}]")


def _nm_groups(t: torch.Tensor, m: int, axis: int = 0) -> torch.Tensor:
    """``[G, m]`` view of a weight-shaped tensor in the N:M layout of :func:`nm_mask` (input dim last);
    ``axis`` is the weight's out axis (:mod:`sparsetrain.core.layout`)."""
    t = out_first(t, axis)
    return (t.movedim(1, -1) if t.dim() >= 2 else t).reshape(-1, m)


def _nm_ungroup(groups: torch.Tensor, like: torch.Tensor, axis: int = 0) -> torch.Tensor:
    like = out_first(like, axis)
    shape = like.movedim(1, -1).shape if like.dim() >= 2 else like.shape
    out = groups.reshape(shape)
    return from_out_first((out.movedim(-1, 1) if like.dim() >= 2 else out).contiguous(), axis)


def _first(scores: torch.Tensor, descending: bool) -> torch.Tensor:
    """Per row, the index of the best score (ties: the lower index)."""
    return torch.sort(scores, dim=1, descending=descending, stable=True).indices[:, 0]


def init_random_nm(n: int, m: int) -> Op:
    """A random exact N:M mask (exactly ``n`` of every ``m`` along the input dim)."""
    def run(ctx: SparseContext) -> dict:
        for name, p in ctx.params.items():
            layer = oriented(NMGranularity(n, m), ctx.out_axis(name))
            ctx.masks[name] = layer.select(torch.rand(p.shape, generator=ctx.generator), None, None, name).to(p.device)
        return {"init": f"random[{n}:{m}]"}
    return Op(run, name=f"init_random_nm[{n}:{m}]")


def nm_drop_and_grow(fraction: Schedule, n: int, m: int, drop: str | Criterion = "magnitude",
                     grow: str | Criterion = "gradient", rounding: str = "floor") -> Op:
    """RigL under an N:M constraint: in k = rounding(f_t * G) of a layer's G groups, the active
    weight with the lowest drop score is swapped for the inactive one with the highest grow score.

    The groups that swap are those whose weakest active weight is weakest overall
    (ties to the lower group index); the grown weight may be the one just dropped
    (then it keeps its value, as in RigL). Every group keeps exactly ``n`` of ``m``.
    """
    drop_crit, grow_crit, round_fn = get_criterion(drop), get_criterion(grow), ROUNDING[rounding]

    def run(ctx: SparseContext) -> dict:
        f = fraction(ctx.step, ctx.total_steps)
        dropped = changed = 0
        for name in ctx.params:
            axis = ctx.out_axis(name)
            mask = _nm_groups(ctx.masks[name], m, axis).clone()
            k = round_fn(f * mask.shape[0])
            if k <= 0:
                continue
            weak = _nm_groups(drop_crit(ctx, name).float(), m, axis).masked_fill(~mask, float("inf"))
            out_idx = _first(weak, descending=False)
            rows = torch.nonzero(topk_mask(-weak.gather(1, out_idx[:, None])[:, 0], k)).flatten()
            mask[rows, out_idx[rows]] = False
            strong = _nm_groups(grow_crit(ctx, name).float(), m, axis).masked_fill(mask, -float("inf"))
            in_idx = _first(strong[rows], descending=True)
            mask[rows, in_idx] = True
            dropped += k
            changed += int(torch.count_nonzero(in_idx != out_idx[rows]))
            ctx.masks[name] = _nm_ungroup(mask, ctx.masks[name], axis)
        return {"dropped": dropped, "grown": dropped, "changed": changed}
    return Op(run, needs_grad=needs_grad(drop_crit) or needs_grad(grow_crit), name=f"nm_drop_and_grow[{n}:{m}]")


__all__ = ["drop_groups", "group_granularity", "grow_groups_to", "init_random_groups", "init_random_nm",
           "nm_drop_and_grow", "regrow_groups"]
