"""Pruning at initialisation: SNIP, GraSP, SynFlow, random, magnitude (docs/algorithms.md, "Pruning at initialisation").

Each method chooses a mask once, before the first step, and keeps it fixed
(no updates). Global top-k as each paper defines it, or per layer with a
distribution (``scope="layer"``). Counts are exact (docs/concepts.md, "Guarantees"):
``exact_count(d, N)`` over all layers for a global scope, per layer
otherwise; ties go to the lower index. A layer left without any active
weight (layer collapse, Tanaka et al. 2020) is named in a warning (or an
error with ``on_collapse="error"``) and in the init event
(``sparsifier.history[0]["collapsed"]``, a list of names, and ``"n_collapsed"``, which the
trainer's metrics.jsonl keeps). Every method takes ``granularity``: with whole
groups (kernel, filter, blockHxW, ...) counts are groups and a group scores
its mean; ``"N:M"`` is static's, RigL's and the prune method's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from sparsetrain.context import SparseContext
from sparsetrain.core.granularity import get_granularity, group_granularity
from sparsetrain.core.topk import exact_count, global_topk, topk_mask
from sparsetrain.distributions import DISTRIBUTIONS, layer_densities
from sparsetrain.errors import SparsetrainError, unknown_choice
from sparsetrain.methods.common import check_count, check_density, initial_mask
from sparsetrain.methods.registry import Method, register_method
from sparsetrain.ops.base import Op
from sparsetrain.ops.init import init_magnitude
from sparsetrain.saliency import grasp_scores, snip_scores, synflow_scores, take_batches

SCOPES = ("global", "layer")
ON_COLLAPSE = ("warn", "error")


def keep_top(ctx: SparseContext, scores: dict[str, Tensor], density: float, scope: str = "global",
             distribution: str = "erk", within: dict[str, Tensor] | None = None, granularity: str = "weight") -> None:
    """Set ``ctx.masks`` to the highest ``scores``: exact_count(density, N) over all layers (global)
    or exact_count(d_l, N_l) per layer of ``distribution``; only positions in ``within`` may stay.
    With a ``granularity`` of whole groups, N counts groups and a group scores its mean."""
    gran = group_granularity(granularity)
    if gran.name != "weight":
        for n, p in ctx.params.items():
            gran.check(p.shape, n)
        groups = {n: gran.group_scores(scores[n]) for n in ctx.params}
        alive = None if within is None else {n: gran.group_scores(within[n].float()) > 0 for n in ctx.params}
        if scope == "global":
            keep = global_topk(groups, exact_count(density, sum(g.numel() for g in groups.values())), alive)
        else:
            dens = layer_densities(distribution, ctx.shapes, density)
            keep = {n: topk_mask(g, exact_count(dens[n], g.numel()), None if alive is None else alive[n])
                    for n, g in groups.items()}
        for n, p in ctx.params.items():
            ctx.masks[n] = gran.expand(keep[n], p.shape).to(p.device)
        return
    if scope == "global":
        ctx.masks.update(global_topk({n: scores[n].detach().double() for n in ctx.params},
                                     exact_count(density, ctx.total_numel()), within))
        return
    dens = layer_densities(distribution, ctx.shapes, density)
    for n in ctx.params:
        ctx.masks[n] = topk_mask(scores[n], exact_count(dens[n], ctx.numel(n)), None if within is None else within[n])


def fixed_mask(name: str, select: Callable[[SparseContext], dict], on_collapse: str = "warn") -> Op:
    """The init op of a pruning-at-init method: ``select`` fills ``ctx.masks``, then layer collapse
    is checked and recorded in the event."""
    def run(ctx: SparseContext) -> dict:
        event = select(ctx)
        collapsed = [n for n in ctx.params if ctx.active(n) == 0]
        if collapsed:
            msg = (f"{name}: layer collapse, no active weight left in {', '.join(collapsed)} at density "
                   f"{event.get('density_target', '?')}; the network cannot pass a signal through "
                   f"{'it' if len(collapsed) == 1 else 'them'}. Use a higher density or scope='layer'.")
            if on_collapse == "error":
                raise SparsetrainError(msg + " (on_collapse='warn' lets it train anyway.)")
            warnings.warn(msg, RuntimeWarning, stacklevel=5)  # points at the attach() call
        return {**event, "init": name, "collapsed": collapsed, "n_collapsed": len(collapsed)}
    return Op(run, name=f"init_{name}")


def _check(density: float, scope: str, distribution: str, on_collapse: str, granularity: str) -> None:
    check_density(density)
    get_granularity(granularity)  # a bad name is refused when the method is built, not when it attaches
    if scope not in SCOPES:
        raise unknown_choice("scope", scope, SCOPES)
    if distribution not in DISTRIBUTIONS:
        raise unknown_choice("distribution", distribution, DISTRIBUTIONS)
    if on_collapse not in ON_COLLAPSE:
        raise unknown_choice("on_collapse", on_collapse, ON_COLLAPSE)


def _model(ctx: SparseContext, who: str) -> torch.nn.Module:
    if ctx.model is None:
        raise SparsetrainError(f"{who} needs the model: attach it with sparsetrain.attach(model, ...).")
    return ctx.model


@register_method("snip", family="init", paper="Lee et al. 2019, SNIP: single-shot network pruning")
def snip(density: float = 0.1, n_batches: int = 1, scope: str = "global", distribution: str = "erk",
         on_collapse: str = "warn", granularity: str = "weight") -> Method:
    """SNIP: keep the largest connection sensitivities |g * w| on ``n_batches`` training batches.

    Algorithm (paper, Algorithm 1): sample a batch; s = |dL/dc| = |g * w| at c = 1; keep the
    top-k of s over the whole network (``scope="global"``, the paper's). Needs ``data=`` in attach.

    Example:
        >>> from sparsetrain.methods import create_method
        >>> create_method("snip", density=0.05).config["scope"]
        'global'
    """
    _check(density, scope, distribution, on_collapse, granularity)
    check_count(n_batches, "n_batches")

    def select(ctx: SparseContext) -> dict:
        batches = take_batches(ctx.data, n_batches, "snip")
        keep_top(ctx, snip_scores(_model(ctx, "snip"), ctx.params, batches, ctx.loss_fn), density, scope, distribution,
                 granularity=granularity)
        return {"batches": len(batches), "density_target": density}
    return Method(init=fixed_mask("snip", select, on_collapse))


@register_method("grasp", family="init", paper="Wang et al. 2020, GraSP: gradient signal preservation")
def grasp(density: float = 0.1, n_batches: int = 1, temperature: float = 200.0, scope: str = "global",
          distribution: str = "erk", on_collapse: str = "warn", granularity: str = "weight") -> Method:
    """GraSP: remove the weights with the highest S = -w * (H g), i.e. keep the lowest S.

    Algorithm (paper, Algorithm 1): g = dL/dw on the batches; Hg by a second backward; S = -w * Hg;
    remove the top (1 - density) of S globally. Logits are divided by ``temperature`` in both
    passes, as in the original ``pruner/GraSP.py`` (T = 200). Needs ``data=`` in attach.

    Differences from the original code, on purpose: it draws one class-balanced batch
    (``samples_per_class`` per class) and splits it in two halves; we take the first ``n_batches``
    batches as given (the trainer's batch of 128 on 10 classes is about as many samples). Its
    ``reinit=True`` re-draws the linear layers with Xavier-normal in the scoring copy only, so the
    scores belong to other weights than those trained; we score the weights that are trained. Its
    ``<=`` threshold keeps every tie; we keep exact counts (ties to the lower index).
    """
    _check(density, scope, distribution, on_collapse, granularity)
    check_count(n_batches, "n_batches")
    if not temperature > 0:
        raise SparsetrainError(f"grasp temperature must be > 0, got {temperature!r}.")

    def select(ctx: SparseContext) -> dict:
        batches = take_batches(ctx.data, n_batches, "grasp")
        scores = grasp_scores(_model(ctx, "grasp"), ctx.params, batches, ctx.loss_fn, temperature)
        keep_top(ctx, {n: -s for n, s in scores.items()}, density, scope, distribution,  # keep the lowest S
                 granularity=granularity)
        return {"batches": len(batches), "density_target": density}
    return Method(init=fixed_mask("grasp", select, on_collapse))


@register_method("synflow", family="init", paper="Tanaka et al. 2020, SynFlow: iterative synaptic flow pruning")
def synflow(density: float = 0.1, iterations: int = 100, scope: str = "global", distribution: str = "erk",
            double: bool = True, on_collapse: str = "warn", granularity: str = "weight") -> Method:
    """SynFlow: data-free, iterative; keep the largest |w * dR/dw|, R = 1^T (prod |W_l|) 1.

    Algorithm (paper, Algorithm 1): for k = 1..n: mask the |weights|, score with an all-ones
    input, keep the top density^(k/n) of the weights still active (exponential schedule from
    1 to ``density``), globally. Reads the input shape from ``example_input`` (or the first
    batch of ``data``) given to attach; no labels are used.
    """
    _check(density, scope, distribution, on_collapse, granularity)
    check_count(iterations, "iterations")

    def select(ctx: SparseContext) -> dict:
        if ctx.example_input is None and ctx.data is None:
            raise SparsetrainError("synflow needs the input shape (no data is used): pass example_input=<an input "
                                   "batch> (or data=) to sparsetrain.attach(), or use the trainer.")
        x = ctx.example_input if ctx.example_input is not None else take_batches(ctx.data, 1, "synflow")[0][0]
        if not isinstance(x, Tensor):
            raise SparsetrainError(f"synflow: example_input must be a tensor batch, got {type(x).__name__}.")
        model = _model(ctx, "synflow")
        for n, p in ctx.params.items():
            ctx.masks[n] = torch.ones_like(p, dtype=torch.bool)
        for k in range(1, iterations + 1):
            scores = synflow_scores(model, ctx.params, x, ctx.masks, double)
            keep_top(ctx, scores, density ** (k / iterations), scope, distribution, within=dict(ctx.masks),
                     granularity=granularity)
        return {"iterations": iterations, "density_target": density}
    return Method(init=fixed_mask("synflow", select, on_collapse))


@register_method("random", family="init", paper="Liu et al. 2022 / Su et al. 2020 (random pruning baselines)")
def random(density: float = 0.1, distribution: str = "erk", on_collapse: str = "warn",
           granularity: str = "weight") -> Method:
    """Random pruning at init: exact-count random masks per layer of ``distribution``
    (``uniform``, ``er``, ``erk``, ``smart_ratio``, ``smart_ratio_vgg``, or ``global``)."""
    _check(density, "layer", distribution, on_collapse, granularity)

    def select(ctx: SparseContext) -> dict:
        return {**initial_mask(distribution, density, granularity)(ctx), "density_target": density}
    return Method(init=fixed_mask(f"random[{distribution}]", select, on_collapse))


@register_method("lottery_ticket", family="init", paper="ITOP (Liu et al. 2021) lottery_ticket init")
def lottery_ticket(density: float = 0.1, scope: str = "global", distribution: str = "erk",
                   on_collapse: str = "warn", granularity: str = "weight") -> Method:
    """Magnitude at init: keep the largest |w| of the initial weights, globally (ITOP's
    ``lottery_ticket`` sparse init, docs/algorithms.md, "Sparse initialisation and layer densities") or per layer of
    ``distribution``."""
    _check(density, scope, distribution, on_collapse, granularity)

    def select(ctx: SparseContext) -> dict:
        if granularity != "weight":
            keep_top(ctx, {n: p.detach().abs() for n, p in ctx.params.items()}, density, scope, distribution,
                     granularity=granularity)
            return {"init": f"magnitude[{scope},{granularity}]", "density_target": density}
        return {**init_magnitude(density, scope, distribution)(ctx), "density_target": density}
    return Method(init=fixed_mask("lottery_ticket", select, on_collapse))
