"""Dynamic sparse training at a coarser granularity: whole kernels, rows, filters, blocks.

The weight-level ops of :mod:`sparsetrain.ops.prune` / :mod:`~sparsetrain.ops.regrow`
lifted to groups of :mod:`sparsetrain.core.granularity`: a group's score is the
mean of its element scores, counts are exact numbers of whole groups, and masks
stay made of whole groups (e.g. RigL on kernels or filters). N:M is not a
grouping into whole groups and is refused here.
"""

from __future__ import annotations

import torch

from sparsetrain.context import SparseContext
from sparsetrain.core.granularity import Granularity, NMGranularity, get_granularity
from sparsetrain.core.topk import exact_count, topk_mask
from sparsetrain.criteria import Criterion, get_criterion, needs_grad
from sparsetrain.distributions import layer_densities
from sparsetrain.errors import SparsetrainError
from sparsetrain.ops.base import Op
from sparsetrain.ops.prune import ROUNDING, Dropper
from sparsetrain.schedules import Schedule


def group_granularity(name: str | Granularity) -> Granularity:
    """A granularity of whole groups (not N:M) for dynamic sparse training."""
    gran = get_granularity(name)
    if isinstance(gran, NMGranularity):
        raise SparsetrainError(f"{gran.name} sparsity is not made of whole groups, so drop-and-grow methods cannot "
                               "use it yet; use granularity 'weight', 'kernel', 'row', 'column', 'filter', "
                               "'channel' or 'blockHxW' (the prune method supports N:M).")
    return gran


def _alive(gran: Granularity, mask: torch.Tensor) -> torch.Tensor:
    return gran.group_scores(mask.float()) > 0


def _group_size(gran: Granularity, shape: torch.Size) -> int:
    return shape.numel() // gran.num_groups(shape)


def init_random_groups(distribution: str, density: float, granularity: str, **dist_kwargs) -> Op:
    """Exact-count random masks of whole groups: round(d_l * G_l) of the layer's G_l groups.

    Example: a conv [4, 2, 3, 3] at kernel granularity has 8 groups of 9 weights.
    """
    gran = group_granularity(granularity)

    def run(ctx: SparseContext) -> dict:
        dens = layer_densities(distribution, ctx.shapes, density, **dist_kwargs)
        for n, p in ctx.params.items():
            gran.check(p.shape, n)
            group_shape = gran.group_scores(torch.zeros(p.shape)).shape
            k = exact_count(dens[n], group_shape.numel())
            keep = topk_mask(torch.rand(group_shape, generator=ctx.generator), k)
            ctx.masks[n] = gran.expand(keep, p.shape).to(p.device)
        return {"init": f"random[{distribution},{gran.name}]"}
    return Op(run, name=f"init_random_groups[{gran.name}]")


def drop_groups(fraction: Schedule, criterion: str | Criterion, granularity: str, rounding: str = "ceil") -> Dropper:
    """Remove rounding(r * g_l) of each layer's g_l active groups with the lowest mean score.

    Returns the number of weights removed per layer (groups x group size).
    """
    gran, crit, round_fn = group_granularity(granularity), get_criterion(criterion), ROUNDING[rounding]

    def drop(ctx: SparseContext) -> dict[str, int]:
        r = fraction(ctx.step, ctx.total_steps)
        removed = {}
        for n, p in ctx.params.items():
            alive = _alive(gran, ctx.masks[n])
            n_alive = int(torch.count_nonzero(alive))
            k = min(n_alive, round_fn(r * n_alive))
            if k > 0:
                keep = topk_mask(gran.group_scores(crit(ctx, n).float()), n_alive - k, alive)
                ctx.masks[n] = gran.expand(keep, p.shape).to(p.device) & ctx.masks[n]
            removed[n] = k * _group_size(gran, p.shape)
        return removed

    drop.needs_grad = needs_grad(crit)  # type: ignore[attr-defined]
    return drop


def regrow_groups(criterion: str | Criterion, granularity: str):
    """Regrow, per layer, as many whole groups as were dropped, by the highest mean score."""
    gran, crit = group_granularity(granularity), get_criterion(criterion)

    def grow(ctx: SparseContext, removed: dict[str, int]) -> dict[str, int]:
        for n, k_weights in removed.items():
            p = ctx.params[n]
            k = k_weights // _group_size(gran, p.shape)
            if k > 0:
                scores = gran.group_scores(crit(ctx, n).float())
                new = topk_mask(scores, k, ~_alive(gran, ctx.masks[n]))
                ctx.masks[n] = ctx.masks[n] | gran.expand(new, p.shape).to(p.device)
        return dict(removed)

    grow.needs_grad = needs_grad(crit)  # type: ignore[attr-defined]
    return grow


__all__ = ["drop_groups", "group_granularity", "init_random_groups", "regrow_groups"]
