"""Removing weights: drop a fraction (DST death), drop below a threshold, prune to a density (GMP)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sparsetrain.context import SparseContext
from sparsetrain.core.granularity import group_granularity, oriented
from sparsetrain.core.topk import ROUNDING, exact_count, global_topk, topk_mask, topk_masks
from sparsetrain.criteria import Criterion, get_criterion, needs_grad
from sparsetrain.errors import unknown_choice
from sparsetrain.ops.base import Dropper, Op
from sparsetrain.ops.groups import drop_groups, original_groups
from sparsetrain.schedules import Schedule


def _scores(ctx: SparseContext, crit: Criterion, name: str) -> torch.Tensor:
    return crit(ctx, name).to(torch.float32)


def drop_lowest(fraction: Schedule, criterion: str | Criterion = "magnitude", rounding: str = "ceil",
                scope: str = "layer", granularity: str = "weight") -> Dropper:
    """Remove ``fraction(step)`` of the active weights with the lowest scores.

    Per layer (``scope="layer"``): k_l = rounding(r * n_l) of the layer's n_l
    active weights. Globally: k = rounding(r * sum n_l), ranked across layers.
    With a ``granularity`` of whole groups (``kernel``, ``filter``, ``block4x4``
    ...) the same counts are of active groups, scored by their mean
    (:func:`sparsetrain.ops.groups.drop_groups`).

    Example: an 8-element layer with 6 active weights and r = 0.5 drops the 3
    smallest |w| among the 6 (tests/test_ops.py works it by hand).
    """
    crit = get_criterion(criterion)
    if rounding not in ROUNDING:
        raise unknown_choice("rounding", rounding, ROUNDING)
    if scope not in ("layer", "global"):
        raise unknown_choice("scope", scope, ["layer", "global"])
    if group_granularity(granularity).name != "weight":
        return drop_groups(fraction, crit, granularity, rounding, scope)
    round_fn = ROUNDING[rounding]

    def drop(ctx: SparseContext) -> dict[str, int]:
        r = fraction(ctx.step, ctx.total_steps)
        before = {n: ctx.active(n) for n in ctx.params}
        if scope == "global":
            k = round_fn(r * sum(before.values()))
            removed = global_topk({n: _scores(ctx, crit, n) for n in ctx.params}, k, ctx.masks, lowest=True)
            for n in ctx.params:
                ctx.masks[n] = ctx.masks[n] & ~removed[n]
        else:
            # keep the n_l - k best active weights (exact, so exactly k go; among tied
            # scores at the threshold the higher index goes first), all layers in one pass
            names = list(ctx.params)
            removed = {n: min(before[n], round_fn(r * before[n])) for n in names}
            live = [n for n in names if removed[n] > 0]
            kept = topk_masks([_scores(ctx, crit, n) for n in live], [before[n] - removed[n] for n in live],
                              [ctx.masks[n] for n in live], n_candidates=[before[n] for n in live])
            for n, mask in zip(live, kept, strict=True):
                ctx.masks[n] = mask if mask is not None else torch.zeros_like(ctx.masks[n], dtype=torch.bool)
            return removed
        return {n: before[n] - ctx.active(n) for n in ctx.params}

    return Dropper(drop, needs_grad=needs_grad(crit), name=f"drop_lowest[{scope}]")


def drop_below(threshold: float = 1e-3) -> Dropper:
    """GraNet ``--prune threshold``: remove active weights with |w| <= threshold."""
    def drop(ctx: SparseContext) -> dict[str, int]:
        removed = {}
        for n, p in ctx.params.items():
            before = ctx.active(n)
            ctx.masks[n] = ctx.masks[n] & (p.detach().abs() > threshold)
            removed[n] = before - ctx.active(n)
        return removed
    return Dropper(drop, name="drop_below")


def prune_to(density: Schedule, criterion: str | Criterion = "magnitude", scope: str = "global",
             layer_densities: Callable[[SparseContext, float], dict[str, float]] | None = None,
             granularity: str = "weight") -> Op:
    """Prune to ``density(step)`` by keeping the highest scores among active weights (GMP).

    ``scope="global"`` keeps round(d * N_total) across all layers (GraNet /
    GMP ``pruning``, docs/algorithms.md, "GMP"); ``scope="layer"`` keeps
    round(d_l * N_l) per layer where ``layer_densities(ctx, d)`` gives d_l
    (uniform by default; GMP_uniform passes the classifier rule). Weights that
    are already pruned stay pruned, so density never goes back up. With a
    ``granularity`` of whole groups (kernel, filter, blockHxW, ...) the counts
    are numbers of groups, ranked by their mean score.
    """
    crit = get_criterion(criterion)
    gran = group_granularity(granularity)
    if gran.name != "weight":
        return _prune_groups_to(density, crit, scope, layer_densities, gran)

    def run(ctx: SparseContext) -> dict:
        d = density(ctx.step, ctx.total_steps)
        if scope == "global":
            k = exact_count(d, ctx.total_numel())
            n_active = ctx.total_active()
            if k < n_active:
                ctx.masks.update(global_topk({n: _scores(ctx, crit, n) for n in ctx.params}, k, ctx.masks,
                                             n_candidates=n_active))
        else:
            targets = layer_densities(ctx, d) if layer_densities else {n: d for n in ctx.params}
            for n in ctx.params:
                k = exact_count(targets[n], ctx.numel(n))
                n_active = ctx.active(n)
                if k < n_active:
                    ctx.masks[n] = topk_mask(_scores(ctx, crit, n), k, ctx.masks[n], n_candidates=n_active)
        return {"density_target": d}

    return Op(run, needs_grad=needs_grad(crit), name=f"prune_to[{scope}]")


def _prune_groups_to(density: Schedule, crit: Criterion, scope: str, layer_densities, gran) -> Op:
    """:func:`prune_to` over whole groups: exact numbers of groups, mean scores, masks only shrink."""
    def run(ctx: SparseContext) -> dict:
        d = density(ctx.step, ctx.total_steps)
        layers = {n: oriented(gran, ctx.out_axis(n)) for n in ctx.params}
        for n, p in ctx.params.items():
            layers[n].check(p.shape, n)
        groups = {n: layers[n].group_scores(_scores(ctx, crit, n)) for n in ctx.params}
        alive = {n: layers[n].group_scores(ctx.masks[n].float()) > 0 for n in ctx.params}
        total = {n: original_groups(ctx, layers[n], n) for n in ctx.params}  # a shrunk layer keeps its count
        if scope == "global":
            keep = global_topk(groups, exact_count(d, sum(total.values())), alive)
        else:
            targets = layer_densities(ctx, d) if layer_densities else {n: d for n in ctx.params}
            keep = {n: topk_mask(g, exact_count(targets[n], total[n]), alive[n]) for n, g in groups.items()}
        for n, p in ctx.params.items():
            ctx.masks[n] = layers[n].expand(keep[n], p.shape).to(p.device) & ctx.masks[n]
        return {"density_target": d}

    return Op(run, needs_grad=needs_grad(crit), name=f"prune_to[{scope},{gran.name}]")


def remember_weights(key: str = "w0") -> Op:
    """Op storing a detached clone of every sparsified weight in ``ctx.state[key][name]``.

    ``remember_weights("w0")`` in the init gives the ``*_init``, ``movement``
    and ``magnitude_increase`` criteria (:mod:`sparsetrain.criteria.history`)
    their w0; ``remember_weights("w_prev")`` chained after each mask
    computation gives the ``updating_*`` ones theirs. The copies are tensors in
    ``ctx.state``, so they go into the state_dict.

    Example:
        >>> from torch import nn
        >>> ctx = SparseContext({"w": nn.Parameter(torch.ones(2))}, {}, None, 1, torch.Generator())
        >>> remember_weights("w0")(ctx)
        {'remembered': 'w0'}
        >>> ctx.state["w0"]["w"].tolist()
        [1.0, 1.0]
    """
    def run(ctx: SparseContext) -> dict:
        ctx.state[key] = {n: p.detach().clone() for n, p in ctx.params.items()}
        return {"remembered": key}
    return Op(run, name=f"remember_weights[{key}]")
