"""MEST: memory-economic sparse training, EM and EM&S (Yuan et al. 2021). docs/algorithms.md, "MEST"."""

from __future__ import annotations

from sparsetrain import cadence, ops
from sparsetrain.context import SparseContext
from sparsetrain.criteria import mest_score
from sparsetrain.distributions import layer_densities
from sparsetrain.errors import unknown_choice
from sparsetrain.methods.common import check_count, check_density, check_window, initial_mask
from sparsetrain.methods.registry import Method, register_method
from sparsetrain.ops.prune import drop_lowest
from sparsetrain.ops.regrow import regrow
from sparsetrain.schedules import cosine_decay

#: Chase's --stop_dst_epochs 30 of 160: the soft bound phase covers the first 130
CHASE_SOFT_END = 130 / 160


def _targets(distribution: str, density: float, extra=lambda ctx: 0.0):
    def densities(ctx: SparseContext) -> dict[str, float]:
        base = ctx.state.setdefault("mest_layer_density", layer_densities(distribution, ctx.shapes, density))
        return {n: min(1.0, d + extra(ctx)) for n, d in base.items()}
    return densities


@register_method("mest", family="dst", paper="Yuan et al. 2021, MEST")
def mest(density: float = 0.1, distribution: str = "erk", mode: str = "em_s", update_every: int = 1000,
         drop_fraction: float = 0.5, bound: float = 0.05, lam: float = 1.0, soft_end: float = CHASE_SOFT_END,
         granularity: str = "weight") -> Method:
    """MEST, drop score |w| + lam |g|, regrow by |gradient|.

    ``mode="em"``: every update drop ⌈r_t n_l⌉ by the MEST score and regrow as
    many (density dips below target before each mutation). ``mode="em_s"``
    (soft memory bound): start at d_l + ``bound``; each update until
    ``soft_end`` prunes back to d_l by the MEST score, then grows to
    d_l + delta(t) by gradient, delta cosine-decaying from ``bound`` to 0; after
    ``soft_end`` plain EM updates at density d (as in Chase's re-implementation,
    docs/algorithms.md, "Chase"). r_t is cosine from ``drop_fraction`` to 0.005.
    The masks are applied between pruning and growth, so a weight pruned and
    regrown by one update restarts at 0 (as in Chase's re-implementation).

    Two simplifications, documented in docs/algorithms.md ("MEST"): ``lam = 1``
    has no source in the paper or the code we follow (the paper tunes lambda;
    set it explicitly), and the mutation runs every ``update_every`` steps with
    the cosine-decayed rate of the DST family, not the paper's per-epoch
    mutation with step-down ratios. ``granularity`` (kernel, filter, blockHxW,
    ...) drops and grows whole groups by their mean score.
    """
    check_density(density)
    check_count(update_every, "update_every")
    if mode not in ("em", "em_s"):
        raise unknown_choice("MEST mode", mode, ["em", "em_s"])
    score = mest_score(lam)
    base = _targets(distribution, density)
    # the masks are applied between pruning and growth (MEST and Chase's truncate_weights): regrown weights restart at 0
    rate = cosine_decay(drop_fraction, 0.005)
    em = ops.prune_and_regrow(drop_lowest(rate, score, granularity=granularity),
                              regrow("gradient", granularity=granularity), apply_masks=True)
    init = initial_mask(distribution, density, granularity)
    if mode == "em":
        return Method(init=init, updates=(ops.when(cadence.every(update_every), em),))
    check_window(0.0, soft_end)
    delta = cosine_decay(bound, 0.0, horizon=soft_end)
    soft = ops.chain(
        ops.prune_to(lambda t, T: density, score, scope="layer", layer_densities=lambda ctx, d: base(ctx),
                     granularity=granularity),
        ops.apply_masks(),
        ops.grow_to(_targets(distribution, density, lambda ctx: delta(ctx.step, ctx.total_steps)), "gradient",
                    granularity),
        name="mest_soft_bound")
    back_to_target = ops.prune_to(lambda t, T: density, score, scope="layer",
                                  layer_densities=lambda ctx, d: base(ctx), granularity=granularity)
    return Method(
        init=ops.chain(init, ops.grow_to(_targets(distribution, density, lambda ctx: bound), "random", granularity)),
        updates=(ops.when(cadence.every(update_every, end=soft_end), soft),
                 ops.when(cadence.every(update_every, start=soft_end),
                          ops.chain(back_to_target, ops.apply_masks(), em))),
    )
