"""Initial topologies: random per distribution, dense, magnitude, prune-a-trained-model.

See docs/algorithms.md, "Sparse initialisation and layer densities".
"""

from __future__ import annotations

import torch

from sparsetrain.context import SparseContext
from sparsetrain.core.granularity import NMGranularity, get_granularity
from sparsetrain.core.layout import fan_in, from_out_first, out_first, out_first_shape
from sparsetrain.core.topk import (
    bottomk_mask,
    ceil_count,
    exact_count,
    floor_count,
    global_topk,
    random_mask,
    split_global,
    topk_mask,
)
from sparsetrain.distributions import layer_densities
from sparsetrain.ops.base import Op
from sparsetrain.ops.groups import init_random_groups, init_random_nm


def init_random(distribution: str = "erk", density: float = 0.1, granularity: str = "weight", **dist_kwargs) -> Op:
    """Exact-count random masks with per-layer densities from ``distribution``.

    Fixed on purpose (docs/algorithms.md, "Sparse initialisation and layer densities"): the PyTorch ports draw Bernoulli
    masks; we take exactly round(d_l * N_l) positions per layer, like rigl-TF.
    ``global`` draws one exact-count random set over all layers together.
    With a ``granularity`` of whole groups, N_l counts the layer's groups
    (:func:`sparsetrain.ops.groups.init_random_groups`); with ``N:M`` the mask
    is a random exact N:M one (its density is N/M, ``density`` is not used).

    Example:
        >>> init_random("erk", 0.1, granularity="kernel").name, init_random(granularity="2:4").name
        ('init_random_groups[kernel]', 'init_random_nm[2:4]')
    """
    gran = get_granularity(granularity)
    if isinstance(gran, NMGranularity):
        return init_random_nm(gran.n, gran.m)
    if gran.name != "weight":
        return init_random_groups(distribution, density, granularity, **dist_kwargs)
    def run(ctx: SparseContext) -> dict:
        if distribution == "global":
            k = exact_count(density, ctx.total_numel())
            flat = random_mask(torch.Size([ctx.total_numel()]), k, ctx.generator)
            for n, m in split_global(flat, ctx.shapes).items():
                ctx.masks[n] = m.to(ctx.params[n].device)
            return {"init": "random[global]"}
        dens = layer_densities(distribution, ctx.shapes, density, **dist_kwargs)
        for n, p in ctx.params.items():
            ctx.masks[n] = random_mask(p.shape, exact_count(dens[n], ctx.numel(n)), ctx.generator, p.device)
        return {"init": f"random[{distribution}]"}
    return Op(run, name=f"init_random[{distribution}]")


def init_dense() -> Op:
    """All masks on: a dense start (GMP, GraNet with s_i = 0)."""
    def run(ctx: SparseContext) -> dict:
        for n, p in ctx.params.items():
            ctx.masks[n] = torch.ones_like(p, dtype=torch.bool)
        return {"init": "dense"}
    return Op(run, name="init_dense")


def init_magnitude(density: float, scope: str = "global", distribution: str = "erk") -> Op:
    """Keep the largest |w| of the current (e.g. initial) weights.

    ``scope="global"`` is ITOP's ``lottery_ticket`` init (docs/algorithms.md, "Sparse initialisation and layer
    densities");
    ``scope="layer"`` keeps round(d_l * N_l) per layer of ``distribution``.
    """
    def run(ctx: SparseContext) -> dict:
        if scope == "global":
            ctx.masks.update(global_topk({n: p.detach().abs().float() for n, p in ctx.params.items()},
                                         exact_count(density, ctx.total_numel())))
        else:
            dens = layer_densities(distribution, ctx.shapes, density)
            for n, p in ctx.params.items():
                ctx.masks[n] = topk_mask(p.detach().abs(), exact_count(dens[n], ctx.numel(n)))
        return {"init": f"magnitude[{scope}]"}
    return Op(run, name=f"init_magnitude[{scope}]")


def _row_scores(p: torch.Tensor) -> torch.Tensor:
    """L1 norm of each output unit's fan-in (GraNet's deleted ``prune_structured``)."""
    return p.detach().abs().flatten(1).sum(1) if p.dim() > 1 else p.detach().abs()


def init_prune(rate: float = 0.5, scope: str = "layer", structured: bool = False,
               regrow: bool = False) -> Op:
    """GraNet's prune_* sparse inits for the pruning-plasticity study.
    See docs/algorithms.md, "Sparse initialisation and layer densities".

    Start from the model's current (trained) weights, zero-weights already
    count as pruned, and remove ``rate`` of the non-zeros by magnitude, per
    layer (``prune_uniform``) or globally (``prune_global``); with
    ``structured`` whole output units with the smallest fan-in L1 norm go
    (``prune_structured``). With ``regrow`` the same number is regrown by
    gradient at the first step (``prune_and_grow_*``): the original code
    needed a gradient dict that its ``main.py`` never passed, so there we take
    the first training batch's gradient instead; the engine runs that step via
    ``state["pending_regrow"]``.
    """
    def run(ctx: SparseContext) -> dict:
        for n, p in ctx.params.items():
            ctx.masks[n] = p.detach() != 0
        before = {n: ctx.active(n) for n in ctx.params}
        if structured:
            for n, p in ctx.params.items():
                axis = ctx.out_axis(n)
                rows = _row_scores(out_first(p * ctx.masks[n], axis))
                alive = rows > 0
                k = ceil_count(rate * int(alive.sum()))
                drop = bottomk_mask(rows, k, alive)
                shape = (-1,) + (1,) * (p.dim() - 1)
                units = drop.view(shape).expand(out_first_shape(p.shape, axis))
                ctx.masks[n] = ctx.masks[n] & ~from_out_first(units, axis)
        elif scope == "global":
            keep = floor_count((1 - rate) * ctx.total_active())
            ctx.masks.update(global_topk({n: p.detach().abs().float() for n, p in ctx.params.items()}, keep,
                                         ctx.masks))
        else:
            for n, p in ctx.params.items():
                k = ceil_count(rate * before[n])
                ctx.masks[n] = ctx.masks[n] & ~bottomk_mask(p.detach().abs(), k, ctx.masks[n])
        removed = {n: before[n] - ctx.active(n) for n in ctx.params}
        if regrow:
            ctx.state["pending_regrow"] = removed
            ctx.state["pending_structured"] = structured
        return {"init": "prune", "removed": sum(removed.values())}
    return Op(run, name="init_prune")


def pending_regrow() -> Op:
    """Regrow what :func:`init_prune` removed, by |gradient| of the first batch.

    Element-wise by default; for a structured prune, whole output units with
    the largest summed |gradient| over their fan-in come back.
    """
    def run(ctx: SparseContext) -> dict:
        counts = ctx.state.pop("pending_regrow", None)
        structured = ctx.state.pop("pending_structured", False)
        if not counts:
            return {}
        for n, k in counts.items():
            g = ctx.grad(n).abs()
            if structured:
                axis = ctx.out_axis(n)
                g, mask = out_first(g, axis), out_first(ctx.masks[n], axis)
                dead = ~mask.flatten(1).any(1) if g.dim() > 1 else ~mask
                units = topk_mask(_row_scores(g), ceil_count(k / fan_in(g.shape)), dead)
                shape = (-1,) + (1,) * (g.dim() - 1)
                ctx.masks[n] = from_out_first(mask | units.view(shape).expand_as(g), axis)
            elif k > 0:
                ctx.masks[n] = ctx.masks[n] | topk_mask(g, k, exclude=ctx.masks[n])
        return {"regrown_after_init": sum(counts.values())}
    return Op(run, needs_grad=True, name="pending_regrow")
