"""Channel-level pieces of Chase (docs/algorithms.md, "Chase"): the channel plan, channel scores (UMM and
alternatives), the gradual channel-sparsity schedule with the minimum width, exact channel
selection and removal, and global growth restricted to the surviving channels.

The plan lives in ``ctx.state["chase"]`` (tensors and primitives, so it round-trips through
the sparsifier's state_dict): per channel group its alive flags, minimum width, original size
and fan-in, and the positions of its producer weights (output slices) and consumer weights
(input slices). Removed channels never come back, so a model may be narrowed while it trains
(:data:`SHRINK`, :mod:`sparsetrain.deploy.shrink`): the plan keeps counting against the
original sizes, so a shrunk run removes and grows exactly what a masked run does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from sparsetrain.context import SparseContext
from sparsetrain.core.topk import floor_count
from sparsetrain.errors import SparsetrainError, unknown_choice
from sparsetrain.ops.base import Op, Shrink
from sparsetrain.schedules import Schedule

SCORES = ("umm", "mask_wise", "kernel_wise", "connection_wise")
SCORE_NORMS = ("none", "layer")
CURVES = ("cubic", "cosine")
KEY = "chase"


# --------------------------------------------------------------------------- schedule and widths (5.3)
def channel_sparsity(target: float, end: float, curve: str = "cubic") -> Schedule:
    """Channel sparsity S(t) rising from 0 to ``target`` (S_c) at ``end * total`` steps.

    ``cubic`` (``--gpm_filter_pune``): S_c (1 - (1 - t/t_f)^3); ``cosine`` (without
    that flag; our reading of "a cosine curve"): S_c (1 - cos(pi t / t_f)) / 2.

    Example:
        >>> s = channel_sparsity(0.5, 0.5)
        >>> s(0, 100), s(25, 100), s(50, 100), s(80, 100)
        (0.0, 0.4375, 0.5, 0.5)
    """
    if curve not in CURVES:
        raise unknown_choice("channel curve", curve, CURVES)

    def schedule(step: int, total: int) -> float:
        x = min(1.0, step / max(1.0, end * total))
        return target * (1.0 - (1.0 - x) ** 3 if curve == "cubic" else (1.0 - math.cos(math.pi * x)) / 2.0)
    return schedule


def channel_cadence(interval: int, offset: int, end: float) -> Callable[[int, int], bool]:
    """Channel events while 0 < t < end * total and (t + offset) % interval == 0 (the seed's +500).

    Example:
        >>> due = channel_cadence(1000, 500, 0.5)
        >>> [t for t in range(1, 4001) if due(t, 4000)]
        [500, 1500]
    """
    def due(step: int, total: int) -> bool:
        return 0 < step < end * total and (step + offset) % interval == 0
    return due


def min_width(size: int, target: float, beta: float) -> int:
    """Channels a layer keeps at least: floor(C_l (1 - S_c) beta), and never fewer than one.

    Example:
        >>> min_width(64, 0.5, 0.2), min_width(6, 0.5, 0.2)
        (6, 1)
    """
    return max(1, floor_count(size * (1.0 - target) * beta))


# --------------------------------------------------------------------------- the plan (5.1)
def channel_plan(target: float, beta: float, prune_skip: bool = False, ignore: Iterable[str] = (),
                 couple: bool = True) -> Op:
    """Store the model's removable channel groups: the hidden units of its transformer MLPs when it has
    some (found by structure, :func:`sparsetrain.deploy.transformer.transformer_groups`), else the
    groups of the traced dependency graph (``ctx.example_input``).

    Only groups whose producer and consumer weights are all sparsified are kept (a
    channel can only be removed through masks). With ``couple``, producer biases become
    coupled parameters of the engine: held at exactly 0 while their channel has no active weight.
    """
    from sparsetrain.core.graph import channel_groups
    from sparsetrain.core.transformer import transformer_groups

    def run(ctx: SparseContext) -> dict:
        groups = transformer_groups(ctx.model, ignore) if ctx.model is not None else []
        if not groups and (ctx.model is None or ctx.example_input is None):
            raise SparsetrainError("chase removes channels found by tracing the model: attach it with "
                                   "example_input=<an input batch> (the trainer does this).")
        plan: dict = {"alive": {}, "min": {}, "producers": {}, "consumers": {}, "size": {}, "fan": {}}
        params = dict(ctx.model.named_parameters())
        for g in groups or channel_groups(ctx.model, ctx.example_input, prune_skip=prune_skip, ignore=ignore):
            weights = [s for s in g.producers if s.param.endswith("weight")]
            if not all(s.param in ctx.params for s in weights + list(g.consumers)):
                continue
            plan["alive"][g.name] = torch.ones(g.size, dtype=torch.bool)
            plan["min"][g.name] = min_width(g.size, target, beta)
            plan["size"][g.name] = g.size
            plan["fan"][g.name] = [sum(_fan(params[s.param].shape, s.dim, k) * len(s.index[0]) for s in weights)
                                   for k in (False, True)]
            plan["producers"][g.name] = [[s.param, s.dim, s.positions()] for s in weights]
            plan["consumers"][g.name] = [[s.param, s.dim, s.positions()] for s in g.consumers]
            for s in g.producers if couple else ():
                if s.param.endswith("bias") and s.dim == 0 and weights[0].dim == ctx.out_axis(weights[0].param):
                    ctx.coupled[s.param] = (params[s.param], s.param[: -len("bias")] + "weight")
        plan["total"] = sum(int(a.numel()) for a in plan["alive"].values())
        ctx.state[KEY] = plan
        return {"channel_groups": len(plan["alive"]), "channels": plan["total"]}
    return Op(run, name="channel_plan")


def _fan(shape: torch.Size, dim: int, kernels: bool) -> int:
    """Weights (or kernels) per channel row of a producer: the denominator of the channel scores."""
    per_row = math.prod(shape) // shape[dim]
    return per_row // math.prod(shape[2:]) if kernels else per_row


def _rows(t: Tensor, dim: int, pos: Tensor) -> Tensor:
    """``[channels, -1]`` view of the positions of ``t`` that belong to each channel."""
    picked = t.index_select(dim, pos.to(t.device).flatten()).movedim(dim, 0)
    return picked.reshape(pos.shape[0], -1)


# --------------------------------------------------------------------------- scores (5.2)
def channel_scores(ctx: SparseContext, how: str = "umm") -> dict[str, Tensor]:
    """Per group, a score per channel (low = removed first), over its producers' output slices.

    ``umm`` (``--mag_wise``): unmasked mean magnitude, sum |w| / fan-in with inactive
    weights counted as zeros; ``mask_wise``: mean |w| over active weights only;
    ``kernel_wise``: share of kernels with an active weight; ``connection_wise``: share of
    active weights. Residual groups (several producers) pool all their producers' slices.
    """
    if how not in SCORES:
        raise unknown_choice("channel score", how, SCORES)
    out = {}
    plan = ctx.state[KEY]
    for name, slices in plan["producers"].items():
        num = den = None
        for param, dim, pos in slices:
            mask = ctx.masks[param]
            w = ctx.params[param].detach().abs().float() * mask
            if how == "kernel_wise":
                kernels = mask.flatten(2).any(2) if mask.dim() > 2 else mask
                a, b = _rows(kernels.float(), dim, pos).sum(1), _rows(kernels, dim, pos).shape[1]
            elif how == "connection_wise":
                a, b = _rows(mask.float(), dim, pos).sum(1), _rows(mask, dim, pos).shape[1]
            elif how == "mask_wise":
                a, b = _rows(w, dim, pos).sum(1), _rows(mask.float(), dim, pos).sum(1)
            else:
                rows = _rows(w, dim, pos)
                a, b = rows.sum(1), rows.shape[1]
            num = a if num is None else num + a
            den = b if den is None else den + b
        if how != "mask_wise" and name in plan.get("fan", {}):  # the fan-in before any shrink
            den = plan["fan"][name][int(how == "kernel_wise")]
        out[name] = (num / den if how != "mask_wise" else num / den.clamp(min=1)).cpu()
    return out


def normalize_scores(scores: dict[str, Tensor], alive: dict[str, Tensor], how: str = "none",
                     sizes: dict[str, int] | None = None) -> dict[str, Tensor]:
    """Make channel scores comparable across groups before the global ranking (our extension).

    ``none`` (the seed, docs/algorithms.md, "Chase"): scores as they are, ranked globally. UMM then
    carries each layer's weight scale (Kaiming init: std ~ 1/sqrt(fan-in)), so wide,
    large-fan-in layers lose most channels whatever their cost. ``layer`` (NOT in the
    paper or the released code): each score divided by its group's mean score over ALL
    its original channels, removed ones counting as 0 (UMM's own "unmasked" convention),
    so groups compete on relative weakness. Counting removed channels as 0 makes the
    rule self-limiting: a group that lost channels has a lower mean, so its survivors
    look stronger at the next event. (Dividing by the survivors' mean does the opposite
    and, measured on VGG-19, piles removal onto a few layers again.) A group whose
    scores are all 0 keeps zeros: its channels are empty and free to remove. ``sizes``
    are the groups' original channel counts (default: the length of each score vector;
    they differ once a model is shrunk).

    Example:
        >>> s = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([0.1, 0.2, 9.0])}
        >>> alive = {"a": torch.ones(2, dtype=torch.bool), "b": torch.tensor([True, True, False])}
        >>> out = normalize_scores(s, alive, "layer")
        >>> [round(v, 4) for v in out["a"].tolist()], [round(v, 4) for v in out["b"].tolist()]
        ([0.5, 1.5], [1.0, 2.0, 90.0])
    """
    if how not in SCORE_NORMS:
        raise unknown_choice("channel score normalisation", how, SCORE_NORMS)
    if how == "none":
        return scores
    out = {}
    for name, score in scores.items():
        mean = score[alive[name].to(score.device)].sum() / (sizes or {}).get(name, score.numel())
        out[name] = score / mean if float(mean) > 0 else torch.zeros_like(score)
    return out


# --------------------------------------------------------------------------- selection and removal (5.3)
def _lowest(scores: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Bool mask of exactly k lowest scores; ties at the threshold drawn at random (exact count)."""
    if k >= scores.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores, k).values
    below = scores < threshold
    ties = torch.nonzero(scores == threshold).flatten()
    extra = ties[torch.randperm(ties.numel(), generator=generator)[: k - int(below.sum())]]
    below[extra] = True
    return below


def select_channels(scores: dict[str, Tensor], alive: dict[str, Tensor], minimum: dict[str, int], k: int,
                    generator: torch.Generator, rounds: int = 1000) -> dict[str, Tensor]:
    """Which channels to remove: exactly k (or as many as the minimum widths allow).

    Rounds (``del_layer`` / ``prune_score``): take the k lowest scores among the alive
    channels of the uncapped groups; a group that would fall below its minimum only gives
    its (alive - minimum) lowest channels (ties: lower index) and is capped; repeat with the
    rest. Fixed on purpose: the seed marks every score <= the (k+1)-th and subsamples each
    layer's list at random (inexact counts); here ties at the threshold are drawn with the
    sparsifier's generator so exactly k go.

    Example:
        >>> s = {"a": torch.tensor([0.1, 0.2, 0.9]), "b": torch.tensor([0.3, 0.05])}
        >>> alive = {"a": torch.ones(3, dtype=torch.bool), "b": torch.ones(2, dtype=torch.bool)}
        >>> out = select_channels(s, alive, {"a": 1, "b": 1}, 3, torch.Generator())
        >>> out["a"].tolist(), out["b"].tolist()
        ([True, True, False], [False, True])
    """
    chosen = {n: torch.zeros_like(a) for n, a in alive.items()}
    capped: set[str] = set()
    for _ in range(rounds):
        open_ = [n for n in alive if n not in capped and bool(alive[n].any())]
        if k <= 0 or not open_:
            break
        idx = [torch.nonzero(alive[n]).flatten() for n in open_]
        flat = torch.cat([scores[n][i] for n, i in zip(open_, idx, strict=True)])
        picks = torch.split(_lowest(flat, k, generator), [i.numel() for i in idx])
        over = [n for n, p, i in zip(open_, picks, idx, strict=True)
                if int(p.sum()) > i.numel() - minimum[n]]
        if not over:
            for n, p, i in zip(open_, picks, idx, strict=True):
                chosen[n][i[p]] = True
            break
        for n in over:
            i = torch.nonzero(alive[n]).flatten()
            allowance = max(0, i.numel() - minimum[n])
            order = torch.sort(scores[n][i], stable=True).indices[:allowance]
            chosen[n][i[order]] = True
            k -= allowance
            capped.add(n)
    return chosen


def remove_channels(ctx: SparseContext, chosen: dict[str, Tensor]) -> int:
    """Clear the producer output slices and consumer input slices of the chosen channels."""
    plan, removed = ctx.state[KEY], 0
    for name, pick in chosen.items():
        idx = torch.nonzero(pick).flatten()
        if idx.numel() == 0:
            continue
        alive = plan["alive"][name]
        plan["alive"][name] = alive & ~pick.to(alive.device)
        removed += idx.numel()
        for param, dim, pos in plan["producers"][name] + plan["consumers"][name]:
            cols = pos[idx.to(pos.device)].flatten().to(ctx.masks[param].device)
            ctx.masks[param] = ctx.masks[param].index_fill(dim, cols, False)  # replaced, never edited in place
    return removed


def surviving(ctx: SparseContext) -> dict[str, Tensor]:
    """``{param: bool}``: False on the slices of removed channels (where nothing may grow)."""
    plan = ctx.state.get(KEY)
    out: dict[str, Tensor] = {}
    if not plan:
        return out
    for name, alive in plan["alive"].items():
        dead = torch.nonzero(~alive).flatten()
        if dead.numel() == 0:
            continue
        for param, dim, pos in plan["producers"][name] + plan["consumers"][name]:
            base = out.get(param, torch.ones_like(ctx.masks[param]))
            out[param] = base.index_fill(dim, pos[dead.to(pos.device)].flatten().to(base.device), False)
    return out


def frozen(ctx: SparseContext) -> dict[str, Tensor]:
    """``{param: bool}``: True on the slices of removed channels, which never become active again."""
    return {param: ~allowed for param, allowed in surviving(ctx).items()}


def _renumber(pos: Tensor, kept: Tensor) -> tuple[Tensor, Tensor]:
    """New positions of ``pos`` along a dimension that now holds only ``kept`` (sorted), and which survive."""
    kept = kept.to(pos.device)
    new = torch.searchsorted(kept, pos).clamp(max=kept.numel() - 1)
    return new, kept[new] == pos


def narrow_plan(ctx: SparseContext, keep: dict[str, dict[int, Tensor]]) -> None:
    """Follow a shrink: drop the plan's entries for channels that are gone, renumber the positions.

    Counts (``total``, ``size``, ``fan``, ``min``) keep their original values, so
    the channel schedule and the scores see the run as if nothing were narrowed.
    """
    plan = ctx.state.get(KEY)
    for name in list(plan["alive"]) if plan else []:
        param, dim, pos = plan["producers"][name][0]
        if dim not in keep.get(param, {}):
            continue
        _, ok = _renumber(pos, keep[param][dim])
        stays = ok.all(1)
        plan["alive"][name] = plan["alive"][name][stays.to(plan["alive"][name].device)]
        for part in ("producers", "consumers"):
            entries = []
            for p, d, q in plan[part][name]:
                q = q[stays.to(q.device)]
                entries.append([p, d, _renumber(q, keep[p][d])[0] if d in keep.get(p, {}) else q])
            plan[part][name] = entries


def shrink_rule(due) -> Shrink:
    """The :class:`~sparsetrain.ops.base.Shrink` of a method whose channels are removed by :func:`prune_channels`
    on the cadence ``due``: frozen = the removed channels' slices, and the plan follows each shrink."""
    return Shrink(frozen=frozen, due=due, narrow=narrow_plan)


def empty_channel_plan() -> Op:
    """The channel plan of a method whose masks empty whole output channels (filter granularity), when the
    model can be traced (``example_input``); without one, :func:`close_empty_channels` has nothing to close."""
    plan = channel_plan(0.0, 1.0, prune_skip=True, couple=False)

    def run(ctx: SparseContext) -> dict:
        if ctx.example_input is None:
            return {}
        try:
            return plan(ctx)
        except SparsetrainError as err:  # the masks need no plan; only closing (and shrinking) does
            warnings.warn(f"empty filters keep their readers (no channel plan): {err}", stacklevel=2)
            return {}
    return Op(run, name="empty_channel_plan")


def close_empty_channels() -> Op:
    """Remove, as Chase removes a channel, every planned channel whose producer rows are all inactive: its
    readers' input columns are masked too, so it is frozen for good and a shrink may take it away.

    Run it only where the method's masks no longer regrow into such a channel (after each update of
    a method whose masks only shrink, after the last update of one that regrows). The readers read
    the channel through weights that are masked from then on, so what it still outputs (a bias,
    a BatchNorm shift) no longer reaches them.
    """
    def run(ctx: SparseContext) -> dict:
        plan = ctx.state.get(KEY)
        if not plan:
            return {}
        chosen = {}
        for name, alive in plan["alive"].items():
            empty = alive.cpu().clone()
            for param, dim, pos in plan["producers"][name]:
                rows = ctx.masks[param].movedim(dim, 0)
                active = rows.reshape(rows.shape[0], -1).any(1).cpu()
                empty &= ~active[pos.cpu()].any(1)
            chosen[name] = empty
        return {"channels_closed": remove_channels(ctx, chosen)}
    return Op(run, name="close_empty_channels")


def prune_channels(sparsity: Schedule, score: str = "umm", norm: str = "none") -> Op:
    """One channel-removal event: bring the removed share of the plan's channels up to S(t).

    ``norm`` (:func:`normalize_scores`): ``"none"`` ranks raw scores globally (the seed);
    ``"layer"`` ranks each score relative to its group's surviving mean (our extension).
    """
    if score not in SCORES:
        raise unknown_choice("channel score", score, SCORES)
    if norm not in SCORE_NORMS:
        raise unknown_choice("channel score normalisation", norm, SCORE_NORMS)

    def run(ctx: SparseContext) -> dict:
        plan = ctx.state[KEY]
        if not plan["alive"]:
            return {}
        s = sparsity(ctx.step, ctx.total_steps)
        done = plan["total"] - sum(int(a.sum()) for a in plan["alive"].values())
        k = floor_count(s * plan["total"]) - done
        before = ctx.total_active()
        alive = {g: a.cpu() for g, a in plan["alive"].items()}  # the plan may live on the GPU after a resume
        scores = normalize_scores(channel_scores(ctx, score), alive, norm, plan.get("size")) if k > 0 else {}
        n = remove_channels(ctx, select_channels(scores, alive, plan["min"], k, ctx.generator)) if k > 0 else 0
        return {"channel_sparsity": round((done + n) / plan["total"], 6), "channels_removed": n,
                "weights_freed": before - ctx.total_active()}
    return Op(run, name="prune_channels")


__all__ = ["CURVES", "SCORES", "SCORE_NORMS", "channel_cadence", "channel_plan", "channel_scores",
           "channel_sparsity", "close_empty_channels", "empty_channel_plan", "frozen",
           "min_width", "narrow_plan", "normalize_scores", "prune_channels", "remove_channels",
           "select_channels", "shrink_rule", "surviving"]
