"""GraNet: gradual pruning with zero-cost neuroregeneration (Liu et al. 2021). docs/algorithms.md, "GraNet"."""

from __future__ import annotations

from sparsetrain import cadence, ops
from sparsetrain.errors import SparsetrainError, unknown_choice
from sparsetrain.methods.common import (
    check_count,
    check_density,
    check_window,
    grad_ema,
    initial_mask,
    needs_ema,
    regeneration,
)
from sparsetrain.methods.gmp import GRANET_END, gmp_prune
from sparsetrain.methods.registry import Method, register_method
from sparsetrain.schedules import cosine_decay

SPARSE_INITS = ("ERK", "uniform", "GMP", "prune_uniform", "prune_global", "prune_and_grow_uniform",
                "prune_and_grow_global", "prune_structured", "prune_and_grow_structured")


def sparse_init(mode: str, initial_density: float, pruning_rate: float,
                granularity: str = "weight") -> tuple[ops.Op, tuple]:
    """GraNet's ``--sparse-init`` -> (init op, extra updates).

    See docs/algorithms.md, "Sparse initialisation and layer densities".
    """
    if mode not in SPARSE_INITS:
        raise unknown_choice("sparse_init", mode, SPARSE_INITS)
    if mode == "GMP" or (mode == "ERK" and initial_density >= 1.0):
        return ops.init_dense(), ()
    if mode in ("ERK", "uniform"):
        return initial_mask(mode.lower(), initial_density, granularity), ()
    if granularity != "weight":
        raise SparsetrainError(f"sparse_init {mode!r} prunes single weights; with granularity {granularity!r} use "
                               "sparse_init 'ERK' or 'uniform'.")
    regrow = "_and_grow" in mode
    init = ops.init_prune(pruning_rate, scope="global" if mode.endswith("global") else "layer",
                          structured=mode.endswith("structured"), regrow=regrow)
    return init, ((ops.when(cadence.once_at(1), ops.pending_regrow()),) if regrow else ())


def _granet(scope: str, density: float, initial_density: float, sparse_init_mode: str, prune: str, growth: str,
            redistribution: str, drop_fraction: float, update_every: int, start: float, end: float,
            pruning_rate: float, threshold: float, granularity: str) -> Method:
    check_density(density)
    check_density(initial_density, "initial_density")
    check_window(start, end)
    check_count(update_every, "update_every")
    init, extra = sparse_init(sparse_init_mode, initial_density, pruning_rate, granularity)
    regenerate = regeneration(prune, growth, cosine_decay(drop_fraction, 0.005), redistribution,
                              threshold=threshold, granularity=granularity)
    return Method(
        init=init,
        updates=extra + (
            gmp_prune(density, initial_density, start, end, update_every, scope, granularity=granularity),
            ops.when(cadence.every(update_every, start), regenerate),
        ),
        observers=(grad_ema(),) if needs_ema(growth, redistribution) else (),
    )


@register_method("granet", family="dense-to-sparse / sparse-to-sparse", paper="Liu et al. 2021, GraNet")
def granet(density: float = 0.1, initial_density: float = 0.5, sparse_init: str = "ERK",
           prune: str = "magnitude", growth: str = "gradient", redistribution: str = "none",
           drop_fraction: float = 0.5, update_every: int = 1000, start: float = 0.0, end: float = GRANET_END,
           pruning_rate: float = 0.5, threshold: float = 1e-3, granularity: str = "weight") -> Method:
    """GraNet: every ``update_every`` steps, global cubic GMP to the scheduled density, then
    zero-cost neuroregeneration (drop ⌈r_t n_l⌉ per layer, regrow as many by gradient).

    ``initial_density=1.0`` is the paper's s_i = 0 (dense to sparse), 0.5 its s_i = 0.5;
    ``start`` / ``end`` are fractions of training; ``prune``, ``growth`` and
    ``redistribution`` all act (the CIFAR code ignored them). ``granularity``
    (kernel, filter, blockHxW, ...) prunes and regenerates whole groups, scored by
    their mean. docs/methods/granet.md maps every GraNet flag to an argument.

    Example:
        >>> m = granet(initial_density=1.0)
        >>> [u.op.name for u in m.updates]
        ['prune_to[global]', 'prune_and_regrow']
    """
    return _granet("global", density, initial_density, sparse_init, prune, growth, redistribution,
                   drop_fraction, update_every, start, end, pruning_rate, threshold, granularity)


@register_method("granet_uniform", family="dense-to-sparse / sparse-to-sparse",
                 paper="Liu et al. 2021, GraNet (--method GraNet_uniform)")
def granet_uniform(density: float = 0.1, initial_density: float = 0.5, sparse_init: str = "ERK",
                   prune: str = "magnitude", growth: str = "gradient", redistribution: str = "none",
                   drop_fraction: float = 0.5, update_every: int = 1000, start: float = 0.0,
                   end: float = GRANET_END, pruning_rate: float = 0.5, threshold: float = 1e-3,
                   granularity: str = "weight") -> Method:
    """GraNet_uniform: as :func:`granet` but the GMP part is per layer with the 20 %-dense
    classifier rule (docs/algorithms.md, "GMP" and "GraNet"); regeneration is identical."""
    return _granet("layer", density, initial_density, sparse_init, prune, growth, redistribution,
                   drop_fraction, update_every, start, end, pruning_rate, threshold, granularity)
