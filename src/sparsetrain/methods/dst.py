"""Sparse-to-sparse methods: static, SET, RigL, SNFS, DST (RigL-ITOP). docs/algorithms.md, "SET, SNFS and RigL"."""

from __future__ import annotations

from sparsetrain import cadence, ops
from sparsetrain.core.granularity import NMGranularity, get_granularity
from sparsetrain.criteria import CRITERIA, get_criterion
from sparsetrain.errors import SparsetrainError, unknown_choice
from sparsetrain.methods.common import (
    REDISTRIBUTION_MODES,
    after_window,
    channel_closing,
    check_count,
    check_density,
    check_window,
    grad_ema,
    initial_mask,
    regeneration,
)
from sparsetrain.methods.registry import Method, register_method
from sparsetrain.ops import remember_weights
from sparsetrain.ops.groups import nm_drop_and_grow
from sparsetrain.ops.regrow import adjusted_death
from sparsetrain.schedules import constant, cosine_decay


@register_method("static", family="static", paper="Mocanu et al. 2018 / Evci et al. 2020 (baseline)")
def static(density: float = 0.1, distribution: str = "erk", dense_first: bool = False,
           granularity: str = "weight") -> Method:
    """Static sparse training: a fixed exact-count random mask, of single weights or whole groups
    (``granularity``: kernel, row, filter, blockHxW, ...).

    See docs/algorithms.md, "Sparse initialisation and layer densities".
    """
    check_density(density)
    init, closing, shrink = channel_closing(granularity, initial_mask(distribution, density, granularity,
                                                                      dense_first), cadence.once_at(1))
    return Method(init=init, updates=closing, shrink=shrink)


@register_method("set", family="dst", paper="Mocanu et al. 2018, SET")
def set_(density: float = 0.1, distribution: str = "erk", update_every: int = 100, drop_fraction: float = 0.3,
         decay: str = "constant", prune: str = "magnitude", end: float = 1.0, dense_first: bool = False,
         granularity: str = "weight") -> Method:
    """SET: drop the smallest weights, regrow at random (docs/algorithms.md, "SET, SNFS and RigL").

    The papers' SET runs use magnitude death + random growth (ITOP README);
    ``prune="set"`` gives the SET paper's sign-split death instead (the
    shipped versions of that rule were wrong, docs/algorithms.md, "Death and growth"). The drop
    fraction is constant 0.3 as in the SET paper, or ``decay="cosine"`` for
    ITOP's cosine decay to 0.005.

    Example:
        >>> m = set_(density=0.2)
        >>> len(m.updates)
        1
    """
    check_density(density)
    check_count(update_every, "update_every")
    fraction = constant(drop_fraction) if decay == "constant" else cosine_decay(drop_fraction, 0.005)
    update = regeneration(prune, "random", fraction, granularity=granularity)
    init, closing, shrink = channel_closing(granularity, initial_mask(distribution, density, granularity,
                                                                      dense_first), after_window(end))
    return Method(init=init, updates=(ops.when(cadence.every(update_every, end=end), update), *closing),
                  shrink=shrink)


@register_method("rigl", family="dst", paper="Evci et al. 2020, Rigging the Lottery")
def rigl(density: float = 0.1, distribution: str = "erk", update_every: int = 100, drop_fraction: float = 0.3,
         end: float = 0.75, dense_first: bool = False, granularity: str = "weight") -> Method:
    """RigL: drop the smallest |w|, grow the largest |dense gradient| (docs/algorithms.md, "SET, SNFS and RigL").

    Per layer n_prune = floor(n_active * f_t) with f_t = alpha/2 (1 + cos(pi t /
    T_end)); updates every ``update_every`` steps until ``end`` (fraction of
    training), after the optimizer step; new weights start at 0 with zero
    optimizer state. Ties break by index instead of rigl-TF's N(0, 1e-5)
    noise, so masks are deterministic. With ``granularity`` (kernel, row,
    filter, blockHxW, ...) whole groups are dropped by mean |w| and grown by
    mean |g| (structured RigL); with "N:M" (e.g. "2:4") every group of M keeps
    exactly N and an update swaps one weight in the f_t share of groups whose
    weakest weight is weakest (``density`` is then N/M).
    """
    check_density(density)
    check_count(update_every, "update_every")
    check_window(0.0, end)
    fraction = cosine_decay(drop_fraction, 0.0, horizon=end)
    update = regeneration("magnitude", "gradient", fraction, rounding="floor", granularity=granularity)
    init, closing, shrink = channel_closing(granularity, initial_mask(distribution, density, granularity,
                                                                      dense_first), after_window(end))
    return Method(init=init, updates=(ops.when(cadence.every(update_every, end=end), update), *closing),
                  shrink=shrink)


@register_method("dst", family="dst", paper="Liu et al. 2021, ITOP (RigL-ITOP) = GraNet --method DST")
def dst(density: float = 0.1, distribution: str = "erk", update_every: int = 1000, drop_fraction: float = 0.5,
        prune: str = "magnitude", growth: str = "gradient", redistribution: str = "none",
        granularity: str = "weight") -> Method:
    """GraNet's DST / RigL-ITOP: regeneration for the whole run, rate cosine 0.5 -> 0.005.
    See docs/algorithms.md, "GraNet" and "SET, SNFS and RigL".

    No T_end: updates continue to the last step with the decayed rate.
    """
    check_density(density)
    check_count(update_every, "update_every")
    observers = (grad_ema(),) if "momentum" in (growth, redistribution) else ()
    update = regeneration(prune, growth, cosine_decay(drop_fraction, 0.005), redistribution,
                          granularity=granularity)
    init = initial_mask(distribution, density, granularity)
    if prune in CRITERIA and get_criterion(prune).remembers:  # a schedule-study rule reads the initial weights
        init = ops.chain(init, remember_weights("w0"))
    init, closing, shrink = channel_closing(granularity, init, after_window(1.0))  # it updates to the end
    return Method(
        init=init,
        updates=(ops.when(cadence.every(update_every), update), *closing),
        observers=observers,
        shrink=shrink,
    )


@register_method("snfs", family="dst", paper="Dettmers & Zettlemoyer 2019, Sparse Momentum")
def snfs(density: float = 0.05, distribution: str = "uniform", drop_fraction: float = 0.5,
         redistribution: str = "momentum", momentum: float = 0.9, update_every: int | None = None,
         steps_per_epoch: int | None = None, granularity: str = "weight") -> Method:
    """Sparse momentum: magnitude death, momentum redistribution and growth (docs/algorithms.md, "SET, SNFS and RigL").

    Updates at the end of every epoch but the last (pass ``steps_per_epoch``;
    the trainer does) or every ``update_every`` steps. Growth ranks a dense EMA
    of gradients, so it sees inactive positions (the faithful SNFS;
    ITOP/GraNet masked the buffer and broke it, docs/algorithms.md, "Conventions of the Masking family"). Death is
    magnitude with sparse_learning's ``adjust_prune_rate`` (a nearly dense,
    still growing layer is pruned less, ``ops.regrow.adjusted_death``). The
    redistribution statistic is sparse_learning's: mean |optimizer momentum|
    (weight decay included) over the weights active *before* death, each
    layer's share rounded up to at least one weight (``ops.regrow``); a
    weight-decay-free EMA gave BatchNorm'd stems a statistic ~0 and emptied
    them (issue 2).

    With a ``granularity`` of whole groups (kernel, row, filter, blockHxW, ...)
    death and growth take whole groups by mean |w| and mean |momentum|; groups
    differ in size between layers, so each layer regrows what it lost
    (``redistribution="none"``). With "N:M" every group of M keeps exactly N
    and an update swaps one weight in the ceil(r_t G) groups whose weakest
    weight is weakest (``density`` is then N/M).

    Example:
        >>> [u.op.name for u in snfs(update_every=100, granularity="kernel", redistribution="none").updates]
        ['prune_and_regrow']
    """
    check_density(density)
    if update_every is None and steps_per_epoch is None:
        raise SparsetrainError("snfs updates once per epoch: pass steps_per_epoch=len(train_loader) "
                               "(or update_every=N steps).")
    due = (cadence.every(check_count(update_every, "update_every")) if update_every
           else cadence.epoch_end(check_count(steps_per_epoch, "steps_per_epoch")))
    if redistribution not in REDISTRIBUTION_MODES:
        raise unknown_choice("redistribution", redistribution, REDISTRIBUTION_MODES)
    rate = cosine_decay(drop_fraction, 0.005)
    gran = get_granularity(granularity)
    if gran.name != "weight" and redistribution != "none":
        raise SparsetrainError(f"snfs redistributes single weights between layers; with granularity "
                               f"{gran.name!r} pass redistribution='none' (each layer regrows what it lost).")
    if isinstance(gran, NMGranularity):
        update = nm_drop_and_grow(rate, gran.n, gran.m, "magnitude", "momentum", rounding="ceil")
    else:
        update = ops.prune_and_regrow(adjusted_death(rate, redistribution, gran.name),
                                      ops.regrow("momentum", redistribution, granularity=gran.name))
    return Method(
        init=initial_mask(distribution, density, gran.name),
        updates=(ops.when(due, update),),
        observers=(grad_ema(momentum),),
    )
