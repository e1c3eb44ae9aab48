"""Chase: channel-aware dynamic sparse training (Yin et al., NeurIPS 2023). docs/algorithms.md, "Chase"."""

from __future__ import annotations

from sparsetrain import cadence, ops
from sparsetrain.core.granularity import get_granularity
from sparsetrain.errors import SparsetrainError, check_fraction, unknown_choice
from sparsetrain.methods.common import check_count, check_density, check_window, initial_mask
from sparsetrain.methods.registry import Method, register_method
from sparsetrain.ops.channels import (
    CURVES,
    SCORE_NORMS,
    SCORES,
    channel_cadence,
    channel_plan,
    prune_channels,
    shrink_rule,
    surviving,
)
from sparsetrain.ops.channels import channel_sparsity as sparsity_curve
from sparsetrain.ops.groups import grow_groups_to
from sparsetrain.ops.prune import drop_lowest
from sparsetrain.schedules import constant, cosine_decay

#: granularities whose groups lie inside one conv kernel (one output and one input channel), so removing a channel
#: takes whole groups: these compose with channel removal and with Chase's global parameter reallocation
WITHIN_A_KERNEL = ("weight", "kernel", "vector")


@register_method("chase", family="channel-level dst", paper="Yin et al. 2023, Dynamic Sparsity Is Channel-Level "
                 "Sparsity Learner (Chase)")
def chase(density: float = 0.1, channel_sparsity: float = 0.5, channel_every: int = 1000,
          channel_offset: int | None = None, end: float = 130 / 160, min_ratio: float = 0.5,
          curve: str = "cubic", score: str = "umm", update_every: int = 1000, bound: float = 0.05,
          soft_end: float = 130 / 160, drop_fraction: float = 0.5, distribution: str = "erk",
          mest: bool = True, prune_skip: bool = False, ignore: tuple[str, ...] = (),
          score_norm: str = "none", granularity: str = "weight") -> Method:
    """Chase: unstructured DST whose sparsest channels are removed during training.

    Algorithm (docs/algorithms.md, "Chase"), t = optimizer steps done, N = size of all
    sparsified weights at init (it never shrinks):

    1. init: exact-count ERK masks at ``density`` d; trace the channel groups (5.1).
    2. every ``channel_every`` steps, offset by ``channel_offset``, while t < ``end``:
       remove channels until floor(S(t) C_total) are gone, lowest channel score first,
       each group keeping at least max(1, floor(C_l (1 - S_c) beta)) channels.
    3. every ``update_every`` steps while t < ``soft_end`` (MEST soft memory bound):
       prune back to exact_count(d, N) by global |w|, then grow to
       exact_count(d + delta(t), N) by global |gradient| inside surviving channels,
       delta cosine from ``bound`` to 0. Weights freed by removed channels are
       regrown elsewhere: the total stays d N (global parameter reallocation).
       Masks are applied between pruning and growth, so every grown weight,
       also one pruned by the same update, starts at 0 with zero momentum.
    4. after ``soft_end``: drop ceil(r_t * active) by global |w| and regrow to
       exact_count(d, N) by global |gradient|, r_t cosine 0.5 -> 0.005 over the run.

    ``channel_sparsity=0`` is Chase with S_c = 0 (no tracing, no example input
    needed); ``prune_skip=True`` is the paper's "Chase (prune skip)"; ``ignore``
    (module globs) keeps layers out of channel removal. ``score_norm="layer"`` is
    OUR EXTENSION (layer-relative channel scores), not in the paper or the
    released code. ``granularity`` may be ``"kernel"`` or ``"vector"`` (groups
    inside one kernel, which channel removal takes whole): steps 3 and 4 then drop
    and grow whole groups, counted in groups. docs/methods/chase.md maps every
    flag of the Chase command line to an argument and explains ``score_norm``.

    Example:
        >>> m = chase(density=0.1, channel_sparsity=0.0)
        >>> [u.op.name for u in m.updates]
        ['mest_soft_bound', 'dst']
    """
    check_density(density)
    check_fraction(channel_sparsity, "channel_sparsity")
    check_fraction(min_ratio, "min_ratio")
    check_fraction(bound, "bound")
    check_window(0.0, end)
    check_window(0.0, soft_end)
    check_count(update_every, "update_every")
    check_count(channel_every, "channel_every")
    if curve not in CURVES:
        raise unknown_choice("curve", curve, CURVES)
    if score not in SCORES:
        raise unknown_choice("channel score", score, SCORES)
    if score_norm not in SCORE_NORMS:
        raise unknown_choice("score_norm", score_norm, SCORE_NORMS)
    if channel_sparsity >= 1.0:
        raise SparsetrainError("channel_sparsity (S_c) must be below 1: some channels must stay.")
    gran = get_granularity(granularity).name
    if gran not in WITHIN_A_KERNEL:
        raise SparsetrainError(f"chase removes single channels, which would cut groups of granularity {gran!r} "
                               f"(they span several channels, or fix each layer's density); use one of "
                               f"{', '.join(WITHIN_A_KERNEL)} (groups inside one kernel).")
    offset = update_every // 2 if channel_offset is None else int(channel_offset)
    delta = cosine_decay(bound, 0.0, horizon=soft_end)
    # global magnitude death and global gradient growth inside the surviving channels (the seed's
    # global_magnitude / global_gradients), on single weights or whole groups counted in groups
    drop = drop_lowest(cosine_decay(drop_fraction, 0.005), "magnitude", scope="global", granularity=gran).as_op()

    def grow_to(target):
        return grow_groups_to(target, "gradient", gran, allowed=surviving)
    # Chase's truncate_weights applies the masks between its halves: a dropped weight regrown at once restarts at 0
    dst = ops.chain(drop, ops.apply_masks(), grow_to(constant(density)), name="dst")
    soft = ops.chain(ops.prune_to(constant(density), "magnitude", scope="global", granularity=gran), ops.apply_masks(),
                     grow_to(lambda t, T: density + delta(t, T)), name="mest_soft_bound")
    updates = []
    init = initial_mask(distribution, density, gran)
    shrink = None
    if channel_sparsity > 0:
        init = ops.chain(init, channel_plan(channel_sparsity, min_ratio, prune_skip, ignore))
        removal = prune_channels(sparsity_curve(channel_sparsity, end, curve), score, score_norm)
        updates.append(ops.when(channel_cadence(channel_every, offset, end), removal))
        shrink = shrink_rule(channel_cadence(channel_every, offset, end))
    switch = soft_end if mest else 0.0
    if mest:
        updates.append(ops.when(cadence.every(update_every, end=switch), soft))
    updates.append(ops.when(cadence.every(update_every, start=switch), dst))
    return Method(init=init, updates=tuple(updates), shrink=shrink)
