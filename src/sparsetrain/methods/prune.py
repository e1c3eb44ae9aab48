"""Scheduled pruning in the vocabulary of the pruning-schedule study (fasterai). docs/algorithms.md, "The
pruning-schedule study".

A target sparsity, a granularity, a scope (per layer or global), a
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
from sparsetrain.core.granularity import NMGranularity, filter_dependents, get_granularity, oriented, structured_topk
from sparsetrain.core.topk import exact_count, global_topk
from sparsetrain.criteria import get_criterion, needs_grad
from sparsetrain.errors import SparsetrainError, unknown_choice
from sparsetrain.methods.common import channel_closing, check_count, check_density
from sparsetrain.methods.registry import Method, register_method
from sparsetrain.ops import Op, remember_weights
from sparsetrain.schedules import SparsitySchedule

#: fasterai's ``Sparsifier(layer_type=nn.Conv2d)``: only 2-D convolutions are pruned unless told otherwise
FASTERAI_LAYER_TYPE = "Conv2d"


def layer_type_names(layer_type: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"Conv2d,Linear"`` / ``["Conv2d", "Linear"]`` / ``"all"`` -> a tuple of module class names.

    Example:
        >>> layer_type_names("Conv2d, Linear")
        ('Conv2d', 'Linear')
    """
    names = layer_type.split(",") if isinstance(layer_type, str) else list(layer_type)
    names = tuple(n.strip() for n in names if n.strip())
    if not names:
        raise SparsetrainError("layer_type is empty: give module class names such as 'Conv2d' or 'Conv2d,Linear', "
                               "or 'all'.")
    return names


def pruned_layers(ctx: SparseContext, layer_type: tuple[str, ...]) -> list[str]:
    """The sparsified weights whose module is of a class named in ``layer_type`` (``("all",)``: every one)."""
    if "all" in layer_type:
        return list(ctx.params)
    if ctx.model is None:
        raise SparsetrainError("layer_type needs the model: attach the method to a model.")
    out = []
    for n in ctx.params:
        module = ctx.model.get_submodule(n.rpartition(".")[0])
        if any(cls.__name__ in layer_type for cls in type(module).__mro__):
            out.append(n)
    return out


def _check_layer_type(layer_type: tuple[str, ...]) -> Op:
    def run(ctx: SparseContext) -> dict:
        chosen = pruned_layers(ctx, layer_type)
        if not chosen:
            kinds = sorted({type(ctx.model.get_submodule(n.rpartition(".")[0])).__name__ for n in ctx.params})
            raise SparsetrainError(
                f"prune: layer_type {','.join(layer_type)!r} matches none of the sparsified layers (they are "
                f"{', '.join(kinds)}). fasterai prunes Conv2d layers only by default; pass "
                f"layer_type='{','.join(kinds)}' or layer_type='all'.")
        return {"pruned_layers": len(chosen)}
    return Op(run, name="layer_type")


def _groups(ctx: SparseContext, gran) -> dict[str, int]:
    """Groups per layer at the original sizes: recorded at the first pruning step, before any shrink
    narrows a layer, so a shrunk run prunes against the full widths as its masked twin does."""
    if "groups" not in ctx.state:
        ctx.state["groups"] = {n: oriented(gran, ctx.out_axis(n)).num_groups(p.shape) for n, p in ctx.params.items()}
    return ctx.state["groups"]


def _local(ctx: SparseContext, gran, crit, density: float, names: list[str]) -> None:
    groups = None if isinstance(gran, NMGranularity) else _groups(ctx, gran)
    for n in names:
        scores = crit(ctx, n).float()
        layer = oriented(gran, ctx.out_axis(n))
        if groups is None:  # N:M fixes the density at N/M
            ctx.masks[n] = layer.select(scores, None, ctx.masks[n], n) & ctx.masks[n]
        else:
            layer.check(scores.shape, n)
            kept = structured_topk(scores, exact_count(density, groups[n]), layer, ctx.masks[n])
            ctx.masks[n] = kept & ctx.masks[n]


def _global(ctx: SparseContext, gran, crit, density: float, names: list[str]) -> None:
    layers = {n: oriented(gran, ctx.out_axis(n)) for n in names}
    for n in names:
        layers[n].check(ctx.params[n].shape, n)
    total = _groups(ctx, gran)
    # a group's mean over its original size: a shrink that took input columns away keeps the ranking
    groups = {n: layers[n].group_scores(crit(ctx, n).float()) * (ctx.params[n].numel() * total[n])
              / (ctx.numel(n) * layers[n].num_groups(ctx.params[n].shape)) for n in names}
    alive = {n: layers[n].group_scores(ctx.masks[n].float()) > 0 for n in names}
    keep = global_topk(groups, exact_count(density, sum(total[n] for n in names)), alive)
    for n in names:
        ctx.masks[n] = layers[n].expand(keep[n], ctx.params[n].shape) & ctx.masks[n]


def couple_filter_dependents(layer_type: tuple[str, ...] = ("all",)) -> Op:
    """Filter pruning also removes each filter's bias and the following BatchNorm's weight and bias
    (fasterai masks them too): register them as coupled parameters of the engine."""
    def run(ctx: SparseContext) -> dict:
        params = dict(ctx.model.named_parameters())
        for weight in pruned_layers(ctx, layer_type):
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


def schedule_step(schedule: SparsitySchedule, granularity: str, scope: str, criterion: str, lth: bool,
                  layer_type: tuple[str, ...] = ("all",)) -> ops.Op:
    """Recompute masks of the ``layer_type`` layers when the scheduled sparsity changed (and rewind if ``lth``)."""
    gran, crit = get_granularity(granularity), get_criterion(criterion)
    prune_fn = _global if scope == "global" else _local

    def run(ctx: SparseContext) -> dict:
        sparsity = schedule(ctx.step, ctx.total_steps)
        if math.isclose(sparsity, ctx.state.get("sparsity", -1.0), abs_tol=1e-12) or sparsity <= 0.0:
            return {}
        ctx.state["sparsity"] = sparsity
        prune_fn(ctx, gran, crit, 1.0 - sparsity, pruned_layers(ctx, layer_type))
        remember_weights("w_prev")(ctx)
        return {"sparsity_target": sparsity, "rewound": lth and _rewind(ctx)}
    return Op(run, needs_grad=needs_grad(crit), name=f"prune[{granularity},{scope}]")



#: fasterai's ``context`` values and the scope each means
FASTERAI_CONTEXT = {"local": "layer", "global": "global"}


@register_method("prune", family="dense-to-sparse (schedules)", paper="Hubens et al., fasterai pruning schedules")
def prune(sparsity: float = 0.9, granularity: str = "weight", scope: str = "layer", criterion: str = "large_final",
          schedule: str = "agp", start: float = 0.0, end: float = 1.0, start_sparsity: float = 0.0, n_steps: int = 3,
          update_every: int = 1, lth: bool = False, rewind: float = 0.0, reset_end: bool = False,
          density: float | None = None, layer_type: str = FASTERAI_LAYER_TYPE, context: str | None = None) -> Method:
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
    ``layer_type`` names the module classes that are pruned (comma-separated,
    or ``"all"``); the default is fasterai's, ``Conv2d`` only: other selected
    layers (Linear, Conv1d) stay dense. ``sparsity`` and ``scope="global"``
    then count the pruned layers only. ``scope`` is ``"layer"`` (each layer to
    the sparsity) or ``"global"`` (one ranking over all layers), the word every
    method uses; fasterai's ``context="local" | "global"`` is accepted as an
    alias.

    Example:
        >>> m = prune(sparsity=0.5, schedule="one_shot", start=0.5)
        >>> len(m.updates)
        1
    """
    if density is not None:
        sparsity = 1.0 - check_density(density)
    if context is not None:  # fasterai's word for scope
        if context not in FASTERAI_CONTEXT:
            raise unknown_choice("context (fasterai's word for scope)", context, FASTERAI_CONTEXT)
        scope = FASTERAI_CONTEXT[context]
    if scope not in ("layer", "global"):
        raise unknown_choice("scope", scope, ["layer", "global"])
    check_count(update_every, "update_every")
    get_granularity(granularity)
    get_criterion(criterion)
    sched = SparsitySchedule(schedule, start_sparsity=start_sparsity, end_sparsity=sparsity, start=start, end=end,
                             n_steps=n_steps)
    kinds = layer_type_names(layer_type)
    init = [ops.init_dense(), _check_layer_type(kinds), remember_weights("w0")]
    if get_granularity(granularity).name == "filter":
        init.append(couple_filter_dependents(kinds))
    updates = []
    if lth:
        if rewind <= 0.0:
            init.append(remember_weights("rewind"))
        else:
            updates.append(ops.when(lambda t, T: t == max(1, int(rewind * T)), remember_weights("rewind")))
    step = schedule_step(sched, granularity, scope, criterion, lth, kinds)
    due = cadence.every(update_every, include_end=True)
    updates.append(ops.when(due, step))
    # pruned stays pruned: a filter emptied by a step is empty for good, its channel is closed right after
    init_op, closing, shrink = channel_closing(granularity, ops.chain(*init), due)
    updates.extend(closing)
    if reset_end and lth:
        updates.append(ops.when(lambda t, T: t == T, Op(lambda ctx: {"rewound": _rewind(ctx)}, name="reset")))
    return Method(init=init_op, updates=tuple(updates), shrink=shrink)
