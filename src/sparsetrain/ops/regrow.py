"""Growing weights back: exactly as many as were dropped (zero-cost), per layer or redistributed."""

from __future__ import annotations

import math

import torch

from sparsetrain.context import SparseContext
from sparsetrain.core.topk import split_global, topk_mask
from sparsetrain.criteria import Criterion, get_criterion, needs_grad
from sparsetrain.errors import unknown_choice
from sparsetrain.ops.base import Op
from sparsetrain.ops.prune import Dropper

REDISTRIBUTIONS = ("none", "magnitude", "nonzeros", "momentum", "global")


def allocate(total: int, weights: dict[str, float], caps: dict[str, int]) -> dict[str, int]:
    """Split ``total`` into integers proportional to ``weights``, each <= its cap, summing exactly.

    Water-filling: layers that hit their cap keep it and the rest is shared
    again among the others; the remainder after flooring goes to the largest
    fractional parts (ties by name order). If the caps cannot hold ``total``,
    every layer gets its cap.

    Example:
        >>> allocate(10, {"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 1, "b": 9, "c": 9})
        {'a': 1, 'b': 3, 'c': 6}
    """
    out = {n: 0 for n in weights}
    free = {n for n in weights if caps[n] > 0}
    left = min(total, sum(caps.values()))
    while left > 0 and free:
        mass = sum(max(weights[n], 0.0) for n in free)
        share = {n: (max(weights[n], 0.0) / mass if mass > 0 else 1.0 / len(free)) * left for n in free}
        capped = {n for n in free if out[n] + share[n] >= caps[n]}
        if capped:
            for n in capped:
                left -= caps[n] - out[n]
                out[n] = caps[n]
            free -= capped
            continue
        floors = {n: math.floor(share[n]) for n in free}
        for n in free:
            out[n] += floors[n]
        rest = left - sum(floors.values())
        order = sorted(free, key=lambda n: (-(share[n] - floors[n]), list(weights).index(n)))
        for n in order[:rest]:
            out[n] += 1
        left = 0
    return out


def _layer_statistic(ctx: SparseContext, how: str, name: str) -> float:
    mask = ctx.masks[name]
    if how == "nonzeros":
        return float(ctx.active(name))
    if how == "magnitude":
        values = ctx.params[name].detach().abs()
    else:  # momentum
        values = get_criterion("momentum")(ctx, name)
    n = ctx.active(name)
    return float(values[mask].sum() / n) if n else 0.0


def regrow(criterion: str | Criterion = "gradient", redistribution: str = "none"):
    """Build ``grow(ctx, removed) -> grown`` activating the best inactive positions.

    ``redistribution="none"`` regrows exactly what each layer lost (density
    per layer preserved, the ITOP/GraNet/Chase meaning, ALGORITHMS.md 1.4).
    ``magnitude`` / ``nonzeros`` / ``momentum`` share the total regrowth in
    proportion to the layer statistic of sparse_learning (mean |w| or mean
    |momentum| over active weights, or the active count), capped by the
    room left in each layer, summing exactly to the total. ``global`` ranks
    all inactive positions of all layers together (Chase's global growth).
    Candidates include the positions just dropped; a weight dropped and
    regrown in the same update keeps its value (all official code does).
    """
    crit = get_criterion(criterion)
    if redistribution not in REDISTRIBUTIONS:
        raise unknown_choice("redistribution", redistribution, REDISTRIBUTIONS)

    def grow(ctx: SparseContext, removed: dict[str, int]) -> dict[str, int]:
        total = sum(removed.values())
        if redistribution == "global":
            flat = torch.cat([crit(ctx, n).float().flatten() for n in ctx.params])
            taken = torch.cat([ctx.masks[n].flatten() for n in ctx.params])
            new = split_global(topk_mask(flat, total, exclude=taken), ctx.shapes)
            counts = {}
            for n in ctx.params:
                counts[n] = int(torch.count_nonzero(new[n]))
                ctx.masks[n] = ctx.masks[n] | new[n]
            return counts
        if redistribution == "none":
            counts = dict(removed)
        else:
            stats = {n: _layer_statistic(ctx, redistribution, n) for n in ctx.params}
            caps = {n: ctx.numel(n) - ctx.active(n) for n in ctx.params}
            counts = allocate(total, stats, caps)
        for n, k in counts.items():
            if k > 0:
                ctx.masks[n] = ctx.masks[n] | topk_mask(crit(ctx, n).float(), k, exclude=ctx.masks[n])
        return counts

    grow.needs_grad = needs_grad(crit)  # type: ignore[attr-defined]
    return grow


def prune_and_regrow(dropper: Dropper, grower) -> Op:
    """One zero-cost topology update: drop, then regrow the same number (RigL, SET, GraNet, ITOP)."""
    def run(ctx: SparseContext) -> dict:
        before = dict(ctx.masks)  # ops replace masks, never edit them in place
        removed = dropper(ctx)
        grown = grower(ctx, removed)
        old = torch.cat([before[n].reshape(-1) for n in ctx.params])
        new = torch.cat([ctx.masks[n].reshape(-1) for n in ctx.params])
        changed = int(torch.count_nonzero(old > new))  # active before, inactive now
        return {"dropped": sum(removed.values()), "grown": sum(grown.values()), "changed": changed}
    grad = getattr(dropper, "needs_grad", False) or getattr(grower, "needs_grad", False)
    return Op(run, needs_grad=grad, name="prune_and_regrow")


def grow_to(layer_densities, criterion: str | Criterion = "gradient") -> Op:
    """Grow each layer up to round(d_l * N_l) active weights by ``criterion`` (never prunes).

    ``layer_densities(ctx) -> {name: d_l}``; used by MEST's soft memory bound
    (ALGORITHMS.md 4, 5.4), where the net holds d + delta(t) between updates.
    """
    from sparsetrain.core.topk import exact_count

    crit = get_criterion(criterion)

    def run(ctx: SparseContext) -> dict:
        targets, grown = layer_densities(ctx), 0
        for n in ctx.params:
            k = exact_count(min(1.0, targets[n]), ctx.numel(n)) - ctx.active(n)
            if k > 0:
                ctx.masks[n] = ctx.masks[n] | topk_mask(crit(ctx, n).float(), k, exclude=ctx.masks[n])
                grown += k
        return {"grown": grown}
    return Op(run, needs_grad=needs_grad(crit), name="grow_to")
