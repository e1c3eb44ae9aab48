"""Growing weights back: exactly as many as were dropped (zero-cost), per layer or redistributed."""

from __future__ import annotations

import math

import torch

from sparsetrain.context import SparseContext
from sparsetrain.core.granularity import group_granularity, oriented
from sparsetrain.core.kernels import count_true
from sparsetrain.core.topk import ROUNDING, exact_count, global_topk, topk_mask
from sparsetrain.criteria import Criterion, get_criterion, needs_grad
from sparsetrain.criteria.optimizer import optimizer_momentum
from sparsetrain.errors import SparsetrainError, unknown_choice
from sparsetrain.ops.base import Dropper, Grower, Op
from sparsetrain.ops.groups import regrow_groups
from sparsetrain.schedules import Schedule

REDISTRIBUTIONS = ("none", "magnitude", "nonzeros", "momentum", "global")


def allocate(total: int, weights: dict[str, float], caps: dict[str, int],
             at_least_one: bool = False) -> dict[str, int]:
    """Split ``total`` into integers proportional to ``weights``, each <= its cap, summing exactly.

    Water-filling: layers that hit their cap keep it and the rest is shared
    again among the others; the remainder after flooring goes to the largest
    fractional parts (ties by name order). If the caps cannot hold ``total``,
    every layer gets its cap. ``at_least_one`` first gives one unit to every
    layer with a positive weight and room (in name order while ``total``
    lasts): sparse_learning rounds each share *up* (docs/algorithms.md, "Redistribution"), so a
    layer with any statistic at all regrows at least one weight there.

    Example:
        >>> allocate(10, {"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 1, "b": 9, "c": 9})
        {'a': 1, 'b': 3, 'c': 6}
        >>> allocate(10, {"a": 1e-6, "b": 1.0}, {"a": 9, "b": 9}, at_least_one=True)
        {'a': 1, 'b': 9}
    """
    if at_least_one:
        base = {n: 0 for n in weights}
        for n in weights:
            if weights[n] > 0 and caps[n] > 0 and sum(base.values()) < total:
                base[n] = 1
        rest = allocate(total - sum(base.values()), weights, {n: caps[n] - base[n] for n in weights})
        return {n: base[n] + rest[n] for n in weights}
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


def _layer_statistic(ctx: SparseContext, how: str, name: str, mask: torch.Tensor | None = None) -> float:
    """sparse_learning's redistribution statistic of one layer over the active weights ``mask``.

    ``momentum`` reads what sparse_learning reads, the optimizer's momentum
    buffer (SGD: m <- mu m + g + wd w, weight decay included; Adam: m / (sqrt(v)
    + 1e-8)), because over *active* weights it is exact here too. Only without
    such a buffer does it fall back to the dense gradient EMA. The EMA has no
    weight-decay term: behind BatchNorm the gradient of a channel's weights is
    orthogonal to them (scale invariance), so a channel with one active weight
    has gradient 0 and its EMA statistic is ~0, while the buffer keeps
    wd w / (1 - mu) there. That difference emptied the small layers (issue 2).
    """
    mask = ctx.masks[name] if mask is None else mask
    n = int(torch.count_nonzero(mask))
    if how == "nonzeros":
        return float(n)
    if how == "magnitude":
        values = ctx.params[name].detach().abs()
    else:  # momentum
        values = _momentum_buffer(ctx, name)
    return float(values[mask].sum() / n) if n else 0.0


def _momentum_buffer(ctx: SparseContext, name: str) -> torch.Tensor:
    """|optimizer momentum| (sparse_learning ``get_momentum_for_weight``), else |dense gradient EMA|."""
    from_optimizer = optimizer_momentum(ctx, name)
    return from_optimizer if from_optimizer is not None else get_criterion("momentum")(ctx, name)


def adjusted_death(fraction: Schedule, redistribution: str = "momentum", granularity: str = "weight") -> Dropper:
    """sparse_learning's magnitude death with ``adjust_prune_rate``.
    See docs/algorithms.md, "Death and growth" and "Redistribution".

    Each layer loses ceil(r_l n_l) of its n_l active weights, smallest |w|
    first, with r_l = r except for a nearly dense layer (sparsity s_l < 0.2)
    whose normalised statistic exceeds 1/L: it is still growing, so r_l =
    min(s_l, r) (a full layer is then not pruned at all). The statistic is the
    redistribution's (``none``: the layer size). Ties go as in ``drop_lowest``.
    With a ``granularity`` of whole groups (kernel, row, blockHxW, ...) n_l and
    s_l count the layer's groups, scored by their mean |w|.

    Example:
        >>> adjusted_death(lambda step, total: 0.5, granularity="kernel").name
        'adjusted_death[kernel]'
    """
    gran = group_granularity(granularity)

    def drop(ctx: SparseContext) -> dict[str, int]:
        r = fraction(ctx.step, ctx.total_steps)
        how = redistribution if redistribution in ("magnitude", "nonzeros", "momentum") else None
        stats = {n: _layer_statistic(ctx, how, n) if how else float(ctx.numel(n)) for n in ctx.params}
        mass = sum(stats.values())
        removed = {}
        for n, p in ctx.params.items():
            # weight level needs no orientation (and keeps its ties in the weight's own index order)
            layer = gran if gran.name == "weight" else oriented(gran, ctx.out_axis(n))
            alive = layer.group_scores(ctx.masks[n].float()) > 0
            active, numel = count_true(alive), alive.numel()
            sparsity = 1.0 - active / numel
            rate = r
            if sparsity < 0.2 and mass > 0 and stats[n] / mass > 1.0 / len(stats):
                rate = min(sparsity, r)
            k = min(active, ROUNDING["ceil"](rate * active))
            if k > 0:
                keep = topk_mask(layer.group_scores(p.detach().abs().float()), active - k, alive) \
                    if active > k else torch.zeros_like(alive)
                ctx.masks[n] = layer.expand(keep, p.shape).to(p.device) & ctx.masks[n]
            removed[n] = k * (p.numel() // numel)
        return removed
    name = "adjusted_death" if gran.name == "weight" else f"adjusted_death[{gran.name}]"
    return Dropper(drop, needs_grad=False, name=name)


def regrow(criterion: str | Criterion = "gradient", redistribution: str = "none",
           granularity: str = "weight") -> Grower:
    """Build ``grow(ctx, removed) -> grown`` activating the best inactive positions.

    With a ``granularity`` of whole groups each layer regrows as many whole
    groups as it lost, by their mean score
    (:func:`sparsetrain.ops.groups.regrow_groups`; redistribution ``none`` only).

    ``redistribution="none"`` regrows exactly what each layer lost (density
    per layer preserved, the ITOP/GraNet/Chase meaning, docs/algorithms.md, "Redistribution").
    ``magnitude`` / ``nonzeros`` / ``momentum`` share the total regrowth in
    proportion to the layer statistic of sparse_learning (mean |w| or mean
    |momentum| over active weights, or the active count), capped by the
    room left in each layer, summing exactly to the total. ``global`` ranks
    all inactive positions of all layers together (Chase's global growth).
    Candidates include the positions just dropped; a weight dropped and
    regrown in the same update keeps its value unless the op composition
    applies the masks in between (:func:`prune_and_regrow`, ``apply_masks``).

    As in sparse_learning's ``truncate_weights`` the statistic is gathered
    *before* death (over the masks ``before``, when the caller passes them),
    and every layer with a positive statistic and room regrows at least one
    weight (its ``ceil``). Differences kept on purpose: the shares sum exactly
    to the total removed (sparse_learning over-grows through the ceil and
    feeds the error back as ``adjusted_growth``), the cap is the exact room
    left (not 0.99 of it), and the excess over a cap is shared in proportion
    to the statistic rather than evenly.
    """
    crit = get_criterion(criterion)
    if redistribution not in REDISTRIBUTIONS:
        raise unknown_choice("redistribution", redistribution, REDISTRIBUTIONS)
    if group_granularity(granularity).name != "weight":
        if redistribution != "none":
            raise SparsetrainError(f"granularity {granularity!r} regrows what each layer lost: use redistribution "
                                   f"'none' (got {redistribution!r}), or granularity 'weight'.")
        return regrow_groups(crit, granularity)

    def grow(ctx: SparseContext, removed: dict[str, int], before: dict[str, torch.Tensor]) -> dict[str, int]:
        total = sum(removed.values())
        if redistribution == "global":
            new = global_topk({n: crit(ctx, n).float() for n in ctx.params}, total, exclude=ctx.masks)
            counts = {}
            for n in ctx.params:
                counts[n] = int(torch.count_nonzero(new[n]))
                ctx.masks[n] = ctx.masks[n] | new[n]
            return counts
        if redistribution == "none":
            counts = dict(removed)
        else:
            masks = before
            stats = {n: _layer_statistic(ctx, redistribution, n, masks[n]) for n in ctx.params}
            caps = {n: ctx.numel(n) - ctx.active(n) for n in ctx.params}
            counts = allocate(total, stats, caps, at_least_one=True)
        for n, k in counts.items():
            if k > 0:
                ctx.masks[n] = ctx.masks[n] | topk_mask(crit(ctx, n).float(), k, exclude=ctx.masks[n])
        return counts

    return Grower(grow, needs_grad=needs_grad(crit), name=f"regrow[{redistribution}]")


def prune_and_regrow(dropper: Dropper, grower: Grower, apply_masks: bool = False) -> Op:
    """One zero-cost topology update: drop, then regrow the same number (RigL, SET, GraNet, ITOP).

    With ``apply_masks`` the dropped weights are zeroed (with their optimizer
    state) before growth, as MEST's and Chase's ``truncate_weights`` do, so a
    weight dropped and regrown at once restarts at 0; without it, it keeps its
    value, as in RigL and GraNet (docs/algorithms.md, "Regrown weights").
    """
    def run(ctx: SparseContext) -> dict:
        before = dict(ctx.masks)  # ops replace masks, never edit them in place
        removed = dropper(ctx)
        if apply_masks:
            ctx.zero_inactive()
        grown = grower(ctx, removed, before)
        # active before, inactive now (bool bit operations are cheap; see core/kernels.py)
        changed = sum(count_true(before[n] & ~ctx.masks[n]) for n in ctx.params)
        return {"dropped": sum(removed.values()), "grown": sum(grown.values()), "changed": changed}
    return Op(run, needs_grad=dropper.needs_grad or grower.needs_grad, name="prune_and_regrow")


def grow_to(layer_densities, criterion: str | Criterion = "gradient", granularity: str = "weight") -> Op:
    """Grow each layer up to round(d_l * N_l) active weights by ``criterion`` (never prunes).

    ``layer_densities(ctx) -> {name: d_l}``; used by MEST's soft memory bound
    (docs/algorithms.md, "MEST"), where the net holds d + delta(t) between updates.
    With a ``granularity`` of whole groups, N_l counts groups, ranked by mean score.
    """
    crit, gran = get_criterion(criterion), group_granularity(granularity)

    def run(ctx: SparseContext) -> dict:
        targets, grown = layer_densities(ctx), 0
        for n, p in ctx.params.items():
            layer = oriented(gran, ctx.out_axis(n))
            mask = layer.group_scores(ctx.masks[n].float()) > 0
            k = exact_count(min(1.0, targets[n]), mask.numel()) - count_true(mask)
            if k > 0:
                new = topk_mask(layer.group_scores(crit(ctx, n).float()), k, exclude=mask)
                ctx.masks[n] = ctx.masks[n] | layer.expand(new, p.shape).to(p.device)
                grown += k * (p.numel() // mask.numel())
        return {"grown": grown}
    return Op(run, needs_grad=needs_grad(crit), name="grow_to")
