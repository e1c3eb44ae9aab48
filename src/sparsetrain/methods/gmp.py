"""Dense-to-sparse gradual magnitude pruning (Zhu & Gupta 2017), as used in GraNet. docs/algorithms.md, "GMP"."""

from __future__ import annotations

from sparsetrain import cadence, ops
from sparsetrain.context import SparseContext
from sparsetrain.distributions import uniform_dense_classifier
from sparsetrain.errors import SparsetrainError
from sparsetrain.methods.common import check_count, check_density, check_window, initial_mask
from sparsetrain.methods.registry import Method, register_method
from sparsetrain.schedules import gmp_density

#: GraNet's --final-prune-epoch default 110 of 160 epochs
GRANET_END = 110 / 160


def classifier_rule(classifier: str | None, final_density: float):
    """``(ctx, d) -> {name: d_l}`` for GMP_uniform: uniform, classifier held at 0.2 once d <= 0.2.

    ``classifier`` defaults to the last sparsified weight in model order (the
    original matched the substring ``classifier``, which most models lack).
    The rule is used only if it is feasible at the final density (the other
    layers keep a positive share); otherwise the schedule stays uniform
    throughout, so per-layer targets only ever shrink (a rule switched off
    half-way would ask a layer to regrow).
    """
    def densities(ctx: SparseContext, d: float) -> dict[str, float]:
        name = classifier or ctx.names[-1]
        final = uniform_dense_classifier(ctx.shapes, final_density, name)
        if final_density <= 0.2 and final[name] != 0.2:  # infeasible at the end: uniform all along
            return {n: d for n in ctx.shapes}
        return uniform_dense_classifier(ctx.shapes, d, name)
    return densities


def gmp_prune(density: float, initial_density: float, start: float, end: float, update_every: int,
              scope: str = "global", classifier: str | None = None, granularity: str = "weight") -> ops.Update:
    """The cubic pruning events every ``update_every`` steps between ``start`` and ``end``
    (fractions of training), plus a last event at step floor(end * T) so that the final
    density is reached even when no multiple of ``update_every`` falls in the window."""
    if density > initial_density:
        raise SparsetrainError(f"density {density} is above initial_density {initial_density}: gradual pruning "
                               "only removes weights. Use initial_density >= density (1.0 = dense start).")
    schedule = gmp_density(initial_density, density, start, end, update_every)
    layer = classifier_rule(classifier, density) if scope == "layer" else None
    due = cadence.any_of(cadence.every(update_every, start, end, include_end=True),
                         lambda step, total: step == max(1, int(end * total)))
    return ops.when(due, ops.prune_to(schedule, "magnitude", scope=scope, layer_densities=layer,
                                      granularity=granularity))


def initial_topology(initial_density: float, distribution: str = "erk", granularity: str = "weight") -> ops.Op:
    """Dense start for initial_density = 1, else an exact-count random mask (of whole groups)."""
    return ops.init_dense() if initial_density >= 1.0 else initial_mask(distribution, initial_density, granularity)


@register_method("gmp", family="dense-to-sparse", paper="Zhu & Gupta 2017; GraNet --method GMP")
def gmp(density: float = 0.1, initial_density: float = 1.0, start: float = 0.0, end: float = GRANET_END,
        update_every: int = 1000, granularity: str = "weight") -> Method:
    """GMP: global magnitude pruning on the cubic schedule, no regeneration (docs/algorithms.md, "GMP").

    Masks start dense; at every event the ⌊(1 - s_t) N⌋ largest |w| over all
    layers survive. The last event reaches ``density`` exactly (fixed on
    purpose: the original's last event was one short). With ``granularity``
    (kernel, filter, blockHxW, ...) whole groups are pruned by mean |w|.

    Example:
        >>> gmp(density=0.05).config == {}  # config is filled by create_method
        True
    """
    check_density(density)
    check_density(initial_density, "initial_density")
    check_window(start, end)
    check_count(update_every, "update_every")
    return Method(init=initial_topology(initial_density, granularity=granularity),
                  updates=(gmp_prune(density, initial_density, start, end, update_every, granularity=granularity),))


@register_method("gmp_uniform", family="dense-to-sparse", paper="Gale et al. 2019; GraNet --method GMP_uniform")
def gmp_uniform(density: float = 0.1, initial_density: float = 1.0, start: float = 0.0, end: float = GRANET_END,
                update_every: int = 1000, classifier: str | None = None, granularity: str = "weight") -> Method:
    """GMP_uniform: per-layer magnitude pruning, classifier held at 20 % density (docs/algorithms.md, "GMP").

    Fixed on purpose: the original needed ERK-computed totals and crashed with
    other sparse inits; here the classifier rule is computed from the shapes.
    """
    check_density(density)
    check_density(initial_density, "initial_density")
    check_window(start, end)
    check_count(update_every, "update_every")
    return Method(init=initial_topology(initial_density, granularity=granularity),
                  updates=(gmp_prune(density, initial_density, start, end, update_every, "layer", classifier,
                                     granularity),))
