"""Scheduled pruning in the vocabulary of the pruning-schedule study (fasterai). ALGORITHMS.md 8.

A target sparsity, a granularity, a context (per layer or global), a
criterion and a schedule; masks are recomputed only when the scheduled
sparsity changes, among the still-active groups (pruned stays pruned, as
fasterai multiplies scores by the mask). Optional in-run lottery tickets: with
``lth`` the surviving weights are reset to their values at the ``rewind``
point whenever the sparsity changes.
"""

from __future__ import annotations

import math

import torch

from sparsetrain import cadence, ops
from sparsetrain.context import SparseContext
from sparsetrain.core.granularity import NMGranularity, filter_dependents, get_granularity
from sparsetrain.core.topk import exact_count, topk_mask
from sparsetrain.criteria import get_criterion, needs_grad
from sparsetrain.errors import unknown_choice
from sparsetrain.methods.common import check_density, check_positive_int
from sparsetrain.methods.registry import Method, register_method
from sparsetrain.ops import Op
from sparsetrain.pruning_criteria import remember_weights
from sparsetrain.sparsity_schedules import SparsitySchedule


def _local(ctx: SparseContext, gran, crit, density: float) -> None:
    for n in ctx.params:
        scores = crit(ctx, n).float()
        if isinstance(gran, NMGranularity):  # N:M fixes the density at N/M
            ctx.masks[n] = gran.select(scores, None, ctx.masks[n], n) & ctx.masks[n]
        else:
            ctx.masks[n] = gran.select(scores, density, ctx.masks[n], n) & ctx.masks[n]


def _global(ctx: SparseContext, gran, crit, density: float) -> None:
    groups, alive = [], []
    for n in ctx.params:
        gran.check(ctx.params[n].shape, n)
        groups.append(gran.group_scores(crit(ctx, n).float()))
        alive.append(gran.group_scores(ctx.masks[n].float()).flatten() > 0)
    flat = torch.cat([g.flatten() for g in groups])
    keep = topk_mask(flat, exact_count(density, flat.numel()), torch.cat(alive))
    start = 0
    for n, g in zip(ctx.params, groups, strict=True):
        ctx.masks[n] = gran.expand(keep[start:start + g.numel()].view(g.shape), ctx.params[n].shape) & ctx.masks[n]
        start += g.numel()


def couple_filter_dependents() -> Op:
    """Filter pruning also removes each filter's bias and the following BatchNorm's weight and bias
    (fasterai masks them too): register them as coupled parameters of the engine."""
    def run(ctx: SparseContext) -> dict:
        params = dict(ctx.model.named_parameters())
        for weight in ctx.params:
            for name, _ in filter_dependents(ctx.model, weight):
                ctx.coupled[name] = (params[name], weight)
        return {"coupled": len(ctx.coupled)}
    return Op(run, name="couple_filter_dependents")


def _rewind(ctx: SparseContext) -> bool:
    """Reset the weights to the rewind copy (before the rewind point there is none yet: no-op)."""
    if "rewind" not in ctx.state:
        return False
    with torch.no_grad():
        for n, p in ctx.params.items():
            p.copy_(ctx.state["rewind"][n])
    return True


def schedule_step(schedule: SparsitySchedule, granularity: str, context: str, criterion: str, lth: bool) -> ops.Op:
    """Recompute masks when the scheduled sparsity changed (and rewind if ``lth``)."""
    gran, crit = get_granularity(granularity), get_criterion(criterion)
    prune_fn = _global if context == "global" else _local

    def run(ctx: SparseContext) -> dict:
        sparsity = schedule(ctx.step, ctx.total_steps)
        if math.isclose(sparsity, ctx.state.get("sparsity", -1.0), abs_tol=1e-12) or sparsity <= 0.0:
            return {}
        ctx.state["sparsity"] = sparsity
        prune_fn(ctx, gran, crit, 1.0 - sparsity)
        remember_weights("w_prev")(ctx)
        return {"sparsity_target": sparsity, "rewound": lth and _rewind(ctx)}
    return Op(run, needs_grad=needs_grad(crit), name=f"prune[{granularity},{context}]")



@register_method("prune", family="dense-to-sparse (schedules)", paper="Hubens et al., fasterai pruning schedules")
def prune(sparsity: float = 0.9, granularity: str = "weight", context: str = "local", criterion: str = "large_final",
          schedule: str = "agp", start: float = 0.0, end: float = 1.0, start_sparsity: float = 0.0, n_steps: int = 3,
          update_every: int = 1, lth: bool = False, rewind: float = 0.0, reset_end: bool = False,
          density: float | None = None) -> Method:
    """Prune to ``sparsity`` (a fraction; fasterai's 90 is 0.9) along ``schedule`` between ``start`` and
    ``end`` (fractions of training; ``end`` < 1 leaves a tail at the final sparsity).

    Schedules: one_shot, iterative (``n_steps``), agp, lin, cos, exp (needs
    ``start_sparsity`` > 0), one_cycle, dsd. Granularities: weight, row, column,
    vector, kernel, channel, filter, N:M (e.g. "2:4", density fixed at N/M),
    blockHxW. Criteria: large_final, small_final, large_init, small_init,
    large_init_large_final, small_init_small_final, magnitude_increase,
    movement, updating_movement, updating_magnitude_increase, movmag, grad,
    random. The masks are checked every ``update_every`` steps (fasterai: every
    batch) and recomputed when the scheduled value changed. With ``lth`` the
    weights are reset to their values at ``rewind`` (fraction of training; 0 =
    at attach) each time; ``reset_end`` resets them once more at the last step.
    ``density`` (fraction kept, the name every other method uses) may be given
    instead of ``sparsity``. With ``filter`` a removed filter's bias and the
    following BatchNorm's weight and bias are masked too (kept at exactly 0).

    Example:
        >>> m = prune(sparsity=0.5, schedule="one_shot", start=0.5)
        >>> len(m.updates)
        1
    """
    if density is not None:
        sparsity = 1.0 - check_density(density)
    if context not in ("local", "global"):
        raise unknown_choice("context", context, ["local", "global"])
    check_positive_int(update_every, "update_every")
    get_granularity(granularity)
    get_criterion(criterion)
    sched = SparsitySchedule(schedule, start_sparsity=start_sparsity, end_sparsity=sparsity, start=start, end=end,
                             n_steps=n_steps)
    init = [ops.init_dense(), remember_weights("w0")]
    if get_granularity(granularity).name == "filter":
        init.append(couple_filter_dependents())
    updates = []
    if lth:
        if rewind <= 0.0:
            init.append(remember_weights("rewind"))
        else:
            updates.append(ops.when(lambda t, T: t == max(1, int(rewind * T)), remember_weights("rewind")))
    step = schedule_step(sched, granularity, context, criterion, lth)
    updates.append(ops.when(cadence.every(update_every, include_end=True), step))
    if reset_end and lth:
        updates.append(ops.when(lambda t, T: t == T, Op(lambda ctx: {"rewound": _rewind(ctx)}, name="reset")))
    return Method(init=ops.chain(*init), updates=tuple(updates))
