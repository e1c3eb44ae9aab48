"""Granularities: which weights are pruned together (docs/algorithms.md, "Granularities").

A group granularity reduces element scores to one score per group by the
mean (as fasterai does), ranks groups with the exact top-k of
:mod:`sparsetrain.core.topk`, and expands kept groups back to an element mask.
Weights are ``[out, in, *kernel]`` (conv) or ``[out, in]`` (linear):

==========  ============================================  ==========================  ==============
name        one group is                                  conv [o, i, kh, kw]         linear [o, i]
==========  ============================================  ==========================  ==============
weight      one weight                                    w[o, i, r, c]               w[o, i]
row         the weights along the last dim                w[o, i, r, :] (kernel row)  w[o, :]
column      the weights along the second-to-last dim      w[o, i, :, c] (kernel col)  w[:, i]
vector      fasterai's blog "vector": along dim 2 (kh)    w[o, i, :, c]               (error)
kernel      one kh x kw kernel                            w[o, i, :, :]               (error)
channel     fasterai's "channel": all input channels at   w[o, :, r, c]               (error: row)
            one kernel position of one filter
in_channel  one input channel (removable: a column of the w[:, i, :, :]               (error: column)
            2-D view)
filter      one output unit / filter (+ bias, next BN)    w[o, :, :, :]               w[o, :]
N:M         exactly N of every M consecutive weights along the input channel (NVIDIA ASP layout)
blockHxW    H x W blocks of the 2-D view [out, in*kh*kw]
==========  ============================================  ==========================  ==============

For Conv1d ``[o, i, k]`` the same rules make ``row`` the kernel and ``column``
the input channels at one kernel position. ``channel`` is fasterai's meaning
(its 2021 and current code average over dim 1 only); the group of one whole
input channel across all filters, the one that can be physically removed, is
``in_channel``. docs/algorithms.md, "Granularities".

A weight laid out otherwise (Hugging Face's Conv1D is ``[in, out]``) is seen
through :func:`oriented`, which moves its out axis first so every rule above
keeps its meaning (``filter`` is still one output unit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import Tensor, nn

from sparsetrain.core.layout import from_out_first, num_outputs, out_axis, out_first, out_first_shape
from sparsetrain.core.registry import Registry, lookup
from sparsetrain.core.topk import exact_count, topk_mask
from sparsetrain.errors import SparsetrainError

Shape = tuple[int, ...] | torch.Size


def _misfit(name: str, shape: Shape, layer_name: str, why: str) -> SparsetrainError:
    return SparsetrainError(f"granularity {name!r} does not fit layer {layer_name!r} of shape {tuple(shape)}: {why}.")


class Granularity:
    """Base: a way of grouping the weights of one tensor."""

    name = "granularity"
    #: one line for ``sparsetrain granularities``
    summary = "a way of grouping weights"

    def check(self, shape: Shape, layer_name: str = "weight") -> None:
        """Raise :class:`SparsetrainError` naming ``layer_name`` if this granularity cannot group ``shape``."""

    def num_groups(self, shape: Shape) -> int:
        """Number of groups of a tensor of ``shape``."""
        raise NotImplementedError

    def group_scores(self, scores: Tensor) -> Tensor:
        """One score per group: the mean of its element scores (float32)."""
        raise NotImplementedError

    def expand(self, group_mask: Tensor, shape: Shape) -> Tensor:
        """Element bool mask of ``shape`` made of the groups on in ``group_mask``."""
        raise NotImplementedError

    def select(self, scores: Tensor, density: float, candidates: Tensor | None = None,
               layer_name: str = "weight") -> Tensor:
        """Keep ``exact_count(density, num_groups)`` whole groups with the highest mean score."""
        self.check(scores.shape, layer_name)
        return structured_topk(scores, exact_count(density, self.num_groups(scores.shape)), self, candidates)

    def __repr__(self) -> str:
        return f"Granularity({self.name!r})"


class DimGranularity(Granularity):
    """Groups = all weights that differ only along the reduced dims ``reduce(ndim)``."""

    def __init__(self, name: str, reduce: Callable[[int], tuple[int, ...]], min_ndim: int, needs: str,
                 summary: str = ""):
        self.name, self._reduce, self.min_ndim, self.needs = name, reduce, min_ndim, needs
        self.summary = summary or f"granularity {name!r}"

    def dims(self, ndim: int) -> tuple[int, ...]:
        """The reduced dims (non-negative, sorted) for a tensor of ``ndim`` dims."""
        return tuple(sorted(d % ndim for d in self._reduce(ndim)))

    def check(self, shape: Shape, layer_name: str = "weight") -> None:
        if len(shape) < self.min_ndim:
            raise _misfit(self.name, shape, layer_name, self.needs)

    def num_groups(self, shape: Shape) -> int:
        dims = self.dims(len(shape))
        return math.prod(s for d, s in enumerate(shape) if d not in dims)

    def group_scores(self, scores: Tensor) -> Tensor:
        self.check(scores.shape, "scores")
        dims = self.dims(scores.dim())
        scores = scores.detach().float()
        return scores.mean(dim=dims) if dims else scores

    def expand(self, group_mask: Tensor, shape: Shape) -> Tensor:
        out = group_mask.bool()
        for d in self.dims(len(shape)):
            out = out.unsqueeze(d)
        return out.expand(tuple(shape)).clone()


class BlockGranularity(Granularity):
    """``h x w`` blocks of the 2-D view ``[out, in*kh*kw]`` of a weight."""

    def __init__(self, h: int, w: int):
        if h < 1 or w < 1:
            raise SparsetrainError(f"block sizes must be >= 1, got {h}x{w}.")
        self.h, self.w, self.name = h, w, f"block{h}x{w}"

    def check(self, shape: Shape, layer_name: str = "weight") -> None:
        if len(shape) < 2:
            raise _misfit(self.name, shape, layer_name, "blocks need a weight with at least 2 dims")
        rows, cols = shape[0], math.prod(shape[1:])
        if rows % self.h or cols % self.w:
            why = f"its 2-D view is {rows} x {cols}, not divisible into {self.h} x {self.w} blocks"
            raise _misfit(self.name, shape, layer_name, why)

    def num_groups(self, shape: Shape) -> int:
        return (shape[0] // self.h) * (math.prod(shape[1:]) // self.w)

    def group_scores(self, scores: Tensor) -> Tensor:
        self.check(scores.shape, "scores")
        rows = scores.shape[0]
        view = scores.detach().float().reshape(rows // self.h, self.h, -1, self.w)
        return view.mean(dim=(1, 3))

    def expand(self, group_mask: Tensor, shape: Shape) -> Tensor:
        out = group_mask.bool().repeat_interleave(self.h, 0).repeat_interleave(self.w, 1)
        return out.reshape(tuple(shape))


def _input_last(t: Tensor) -> Tensor:
    """Move the input dim (1) last: ``[out, kh, kw, in]``, NVIDIA ASP's layout for conv N:M."""
    return t.movedim(1, -1) if t.dim() >= 2 else t


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Keep exactly ``n`` of every ``m`` consecutive weights along the input dim, by score.

    For ``[out, in]`` the groups run along ``in``; for conv ``[out, in, kh,
    kw]`` along ``in`` at fixed ``(out, kh, kw)`` (the layout of NVIDIA's ASP
    and of cuSPARSELt's 2:4 on channels-last convs); a 1-D tensor is one row.
    Ties go to the lower index; NaN scores count as -inf.

    Example:
        >>> nm_mask(torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.0, 0.0, 0.0, 5.0]]), 2, 4).int().tolist()
        [[0, 1, 1, 0, 1, 0, 0, 1]]
    """
    _check_nm(n, m)
    NMGranularity(n, m).check(scores.shape, "scores")
    s = _input_last(scores.detach()).float()
    s = torch.nan_to_num(s, nan=-math.inf)
    groups = s.reshape(-1, m)
    keep = torch.sort(groups, dim=1, descending=True, stable=True).indices[:, :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True)
    mask = mask.reshape(s.shape)
    return (mask.movedim(-1, 1) if scores.dim() >= 2 else mask).contiguous()


def _check_nm(n: int, m: int) -> None:
    if int(n) != n or int(m) != m or not 1 <= n < m:
        raise SparsetrainError(f"N:M sparsity needs integers 1 <= N < M, got {n}:{m} (N={n} keeps N of every M).")


class NMGranularity(Granularity):
    """``n:m`` semi-structured sparsity: exactly ``n`` kept in every ``m`` along the input dim (:func:`nm_mask`).

    Not a group granularity (masks are not made of whole groups): its density
    is fixed at n/m and :meth:`select` returns :func:`nm_mask`.
    """

    def __init__(self, n: int, m: int):
        _check_nm(n, m)
        self.n, self.m, self.name = int(n), int(m), f"{n}:{m}"

    def check(self, shape: Shape, layer_name: str = "weight") -> None:
        if len(shape) < 1 or shape[1 if len(shape) >= 2 else 0] % self.m:
            raise _misfit(self.name, shape, layer_name, f"its input dim is not divisible by M={self.m}")

    def num_groups(self, shape: Shape) -> int:
        return math.prod(shape) // self.m

    def _not_groups(self) -> SparsetrainError:
        return SparsetrainError(f"{self.name} keeps N weights inside every group, not whole groups: use nm_mask.")

    def group_scores(self, scores: Tensor) -> Tensor:
        raise self._not_groups()

    def expand(self, group_mask: Tensor, shape: Shape) -> Tensor:
        raise self._not_groups()

    def select(self, scores: Tensor, density: float | None = None, candidates: Tensor | None = None,
               layer_name: str = "weight") -> Tensor:
        """:func:`nm_mask`; non-candidates score -inf (kept only where a group has fewer than N candidates)."""
        if density is not None and abs(density - self.n / self.m) > 1e-9:
            raise SparsetrainError(f"{self.name} sparsity fixes the density at {self.n / self.m:g}, got {density!r}.")
        self.check(scores.shape, layer_name)
        if candidates is not None:
            scores = scores.detach().float().masked_fill(~candidates.bool(), -math.inf)
        return nm_mask(scores, self.n, self.m)


def _all_but(keep: int) -> Callable[[int], tuple[int, ...]]:
    return lambda ndim: tuple(d for d in range(ndim) if d != keep)


_CONV = "it needs a conv weight [out, in, *kernel] (3 or more dims)"
_2D = "it needs a weight with at least 2 dims"
#: every granularity by name (``sparsetrain granularities`` lists them); ``N:M`` and ``blockHxW`` are families
GRANULARITIES: Registry[Granularity] = Registry("granularity")
for _gran in (
    DimGranularity("weight", lambda ndim: (), 1, "", "one weight (unstructured)"),
    DimGranularity("row", lambda ndim: (-1,), 2, _2D, "the weights along the last dim: a kernel row, a Linear row"),
    DimGranularity("column", lambda ndim: (-2,), 2, _2D,
                   "the weights along the second-to-last dim: a kernel column, a Linear column"),
    DimGranularity("vector", lambda ndim: (2,), 3, _CONV, "fasterai's vector: along the kernel height (conv)"),
    DimGranularity("kernel", lambda ndim: tuple(range(2, ndim)), 3, _CONV, "one kh x kw kernel (conv)"),
    DimGranularity("channel", lambda ndim: (1,), 3, _CONV + "; for a Linear output unit use 'row'",
                   "fasterai's channel: all input channels at one kernel position of one filter (conv)"),
    DimGranularity("in_channel", _all_but(1), 3, _CONV + "; for a Linear input feature use 'column'",
                   "one input channel across every filter (conv; removable)"),
    DimGranularity("filter", _all_but(0), 2, _2D, "one output unit / filter (with its bias and next BatchNorm)"),
):
    GRANULARITIES.register(_gran.name, _gran)


@GRANULARITIES.register_family("N:M (e.g. 2:4)")
def _parse_nm(name: str) -> NMGranularity | None:
    """Exactly N of every M consecutive weights along the input dim (NVIDIA ASP layout; density N/M)."""
    found = re.fullmatch(r"(\d+):(\d+)", name)
    return NMGranularity(int(found.group(1)), int(found.group(2))) if found else None


@GRANULARITIES.register_family("blockHxW (e.g. block4x4)")
def _parse_block(name: str) -> BlockGranularity | None:
    """H x W blocks of the 2-D view [out, in*kh*kw] (also written block:HxW)."""
    found = re.fullmatch(r"block:?(\d+)x(\d+)", name)
    return BlockGranularity(int(found.group(1)), int(found.group(2))) if found else None


class Oriented(Granularity):
    """``inner`` applied to a weight whose output units lie along ``axis`` (:mod:`sparsetrain.core.layout`).

    Scores, candidates and shapes are seen out-axis first; group scores are in
    that layout, element masks come back in the weight's own layout.
    """

    def __init__(self, inner: Granularity, axis: int):
        self.inner, self.axis, self.name = inner, axis, inner.name

    def check(self, shape: Shape, layer_name: str = "weight") -> None:
        self.inner.check(out_first_shape(shape, self.axis), layer_name)

    def num_groups(self, shape: Shape) -> int:
        return self.inner.num_groups(out_first_shape(shape, self.axis))

    def group_scores(self, scores: Tensor) -> Tensor:
        return self.inner.group_scores(out_first(scores, self.axis))

    def expand(self, group_mask: Tensor, shape: Shape) -> Tensor:
        return from_out_first(self.inner.expand(group_mask, out_first_shape(shape, self.axis)), self.axis)

    def select(self, scores: Tensor, density: float | None, candidates: Tensor | None = None,
               layer_name: str = "weight") -> Tensor:
        if candidates is not None and candidates.shape == scores.shape:  # element-shaped: the weight's layout
            candidates = out_first(candidates, self.axis)
        picked = self.inner.select(out_first(scores, self.axis), density, candidates, layer_name)
        return from_out_first(picked, self.axis)

    def __repr__(self) -> str:
        return f"Oriented({self.inner!r}, axis={self.axis})"


def oriented(gran: Granularity, axis: int) -> Granularity:
    """``gran`` for a weight whose out axis is ``axis`` (``gran`` itself for the usual axis 0).

    Example:
        >>> w = torch.tensor([[1.0, 5.0, 0.5], [2.0, 0.0, 0.5]])  # Conv1D [in=2, out=3]
        >>> oriented(get_granularity("filter"), 1).select(w, 1 / 3).int().tolist()
        [[0, 1, 0], [0, 1, 0]]
    """
    return Oriented(gran, axis) if axis else gran


def get_granularity(name: str | Granularity) -> Granularity:
    """A granularity by name: one of :data:`GRANULARITIES`, ``"N:M"``, ``"blockHxW"`` or ``"block:HxW"``.

    Example:
        >>> get_granularity("2:4").name, get_granularity("block:4x4").name, get_granularity("kernel").name
        ('2:4', 'block4x4', 'kernel')
    """
    if isinstance(name, Granularity):
        return name
    return lookup(GRANULARITIES, str(name).strip().lower())


def group_granularity(name: str | Granularity) -> Granularity:
    """A granularity of whole groups (every one but N:M), for the drop / grow / prune-to ops.

    Example:
        >>> group_granularity("kernel").name
        'kernel'
    """
    gran = get_granularity(name)
    if isinstance(gran, NMGranularity):
        raise SparsetrainError(f"{gran.name} sparsity is not made of whole groups, so this method cannot use it; "
                               "use granularity 'weight', 'kernel', 'row', 'column', 'filter', 'channel', "
                               "'in_channel' or 'blockHxW' (static, SET, RigL, DST and the prune method support N:M).")
    return gran


def structured_topk(scores: Tensor, k_groups: int, granularity: str | Granularity,
                    candidates: Tensor | None = None) -> Tensor:
    """Element mask of the ``k_groups`` whole groups with the highest mean score.

    Groups are ranked by :func:`sparsetrain.core.topk.topk_mask` (exact count,
    ties to the lower group index). ``candidates`` is either group-shaped or
    element-shaped; an element-shaped one makes a group a candidate when any
    of its weights is (AND the result with the old mask if masks must only
    shrink).

    Example:
        >>> w = torch.tensor([[1.0, 2.0], [5.0, 0.0], [0.5, 0.5]])
        >>> structured_topk(w, 1, "row").int().tolist()
        [[0, 0], [1, 1], [0, 0]]
    """
    gran = get_granularity(granularity)
    gran.check(scores.shape, "scores")
    group = gran.group_scores(scores)
    if candidates is not None:
        same = candidates.shape == group.shape
        candidates = candidates.bool() if same else gran.group_scores(candidates.float()) > 0
    return gran.expand(topk_mask(group, k_groups, candidates), scores.shape).to(scores.device)


def filter_dependents(model: nn.Module, weight_name: str) -> list[tuple[str, int]]:
    """Parameters that follow filter (output-unit) pruning of ``weight_name``: ``[(param_name, dim)]``.

    The layer's own bias (dim 0) and, if the next leaf module with parameters
    in **registration order** is a BatchNorm over the same number of
    features, its weight and bias (dim 0). Parameter-free leaves (ReLU,
    pooling) in between are skipped. Registration order is a heuristic that
    fits Sequential-style models (conv -> bn); dependency graphs from
    torch-pruning come with issue 4.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
        >>> filter_dependents(net, "0.weight")
        [('0.bias', 0), ('1.weight', 0), ('1.bias', 0)]
    """
    prefix, _, attr = weight_name.rpartition(".")
    modules = dict(model.named_modules())
    layer = modules.get(prefix)
    weight = getattr(layer, attr, None) if layer is not None else None
    if not isinstance(weight, Tensor):
        raise SparsetrainError(f"{weight_name!r} is not a parameter of the model.")
    join = (lambda n: f"{prefix}.{n}") if prefix else (lambda n: n)
    units = num_outputs(weight.shape, out_axis(layer, attr))
    out = []
    if isinstance(getattr(layer, "bias", None), Tensor) and tuple(layer.bias.shape) == (units,):
        out.append((join("bias"), 0))
    leaves = [n for n, m in model.named_modules() if not any(True for _ in m.children())]
    following = leaves[leaves.index(prefix) + 1:] if prefix in leaves else []
    for name in following:
        module = modules[name]
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.num_features == units:
            out += [(f"{name}.{p}", 0) for p, v in module.named_parameters(recurse=False) if v is not None]
        break
    return out
