"""Exact, deterministic top-k masks (docs/concepts.md, "Guarantees").

Every mask in sparsetrain is chosen by :func:`topk_mask`: the ``k`` highest
scores win, and ties at the threshold are broken by the lower flat index, so
the same scores give the same mask on CPU and GPU. Counts are exact; random
masks are exact-count too (random scores, then top-k), never Bernoulli.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sparsetrain.core.kernels import between, count_greater, count_true, greater_equal, nonzero


def exact_count(density: float, numel: int) -> int:
    """Number of active weights for ``density`` over ``numel`` weights.

    The rounding rule is round-half-up, ``floor(density * numel + 0.5)``,
    clamped to ``[1, numel]`` for a positive density so that no layer is ever
    left empty by rounding alone (docs/algorithms.md, "Sparse initialisation and layer densities" recommends exact
    counts).
    ``density * numel`` is first rounded to 6 decimals so that float noise such
    as ``1 - (1 - 0.1) = 0.09999999999999998`` does not flip a half.

    Example:
        >>> exact_count(0.1, 25), exact_count(0.5, 3), exact_count(0.001, 10)
        (3, 2, 1)
    """
    if density <= 0.0:
        return 0
    return int(min(numel, max(1, math.floor(round(density * numel, 6) + 0.5))))


def _clean(scores: Tensor) -> Tensor:
    """Flat float scores with NaN read as -inf (the lowest score; infinities are kept)."""
    scores = scores.detach().flatten()
    if not scores.is_floating_point():
        scores = scores.float()
    return torch.nan_to_num(scores, nan=-math.inf, posinf=math.inf, neginf=-math.inf)


_DIRECT = 1 << 14
_SAMPLE = 1 << 12


def _kthvalue(values: Tensor, rank: int) -> Tensor:
    """``torch.kthvalue`` (rank-th smallest), on the CPU for backends that lack it."""
    if values.device.type == "mps":
        return torch.kthvalue(values.cpu(), rank).values.to(values.device)
    return torch.kthvalue(values, rank).values


def kth_largest(flat: Tensor, k: int) -> Tensor:
    """The k-th largest value of a flat tensor without NaN (1 <= k <= n), exactly.

    ``torch.kthvalue`` slows down sharply and erratically on large vectors
    (0.1-1.7 ms at 36864 entries on 2 CPU cores, depending on the rank and
    on the machine's load), so for more than 16384 entries a deterministic
    strided sample brackets the answer: with
    ``hi`` and ``lo`` sample values just above and below the expected rank,
    the k-th largest lies in [lo, hi] whenever fewer than k values exceed hi
    and at least k reach lo; then only that band is ranked. Otherwise (a
    sample that missed) the whole vector is ranked. Either way the result is
    exact.

    Example:
        >>> float(kth_largest(torch.arange(100_000.0), 3))
        99997.0
    """
    n = flat.numel()
    if n <= _DIRECT:
        return _kthvalue(flat, n - k + 1)
    sample = flat[:: n // _SAMPLE]
    m = sample.numel()
    expected = k * m / n
    margin = 4.0 * math.sqrt(expected * (1.0 - k / n) + 1.0) + 8.0
    # the r-th largest of the sample is its (m - r + 1)-th smallest
    hi = _kthvalue(sample, m - max(1, math.floor(expected - margin)) + 1)
    lo = _kthvalue(sample, m - min(m, math.ceil(expected + margin)) + 1)
    above = count_greater(flat, hi)
    band = between(flat, lo, hi)
    rank = k - above
    if 1 <= rank <= band.numel():
        return _kthvalue(band, band.numel() - rank + 1)
    return _kthvalue(flat, n - k + 1)


def _select(flat: Tensor, k: int) -> tuple[Tensor, float]:
    """(mask of the k largest of a clean flat vector, ties to the lower index; the threshold), 0 < k."""
    n = flat.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=flat.device), -math.inf
    threshold = kth_largest(flat, k)
    out = greater_equal(flat, threshold)
    surplus = count_true(out) - k
    if surplus > 0:  # only with ties at the threshold: the highest indices give way
        ties = torch.nonzero(flat == threshold).flatten()
        out[ties[ties.numel() - surplus:]] = False
    return out, float(threshold)


def _topk_clean(flat: Tensor, k: int, candidates: Tensor | None, shape: torch.Size,
                exclude: Tensor | None = None, n_cand: int | None = None) -> Tensor:
    n = flat.numel()
    if exclude is not None:
        # candidates are the positions where ``exclude`` is False (no inverted copy is made)
        return _topk_excluded(flat, int(k), exclude.flatten(), shape)
    if candidates is None:
        k = min(int(k), n)
        return (_select(flat, k)[0] if k > 0 else torch.zeros(n, dtype=torch.bool, device=flat.device)).view(shape)
    cand = candidates.flatten()
    if n_cand is None:
        n_cand = count_true(cand)
    k = min(int(k), n_cand)
    if k <= 0:
        return torch.zeros(shape, dtype=torch.bool, device=flat.device)
    if n_cand <= n // 2:
        # few candidates (e.g. the active weights at low density): rank only them
        idx = nonzero(cand).to(flat.device)
        out = torch.zeros(n, dtype=torch.bool, device=flat.device)
        chosen = nonzero(_select(flat[idx], k)[0]).to(idx.device)  # bool indexing is slow on the CPU
        out[idx[chosen]] = True
        return out.view(shape)
    out, threshold = _select(flat.masked_fill(~cand, -math.inf), k)
    if threshold == -math.inf:
        # the threshold reached -inf, where candidates tie with non-candidates:
        # lift candidates just above the non-candidates and select again
        low = torch.finfo(flat.dtype).min
        out = _select(torch.where(cand, flat.clamp(min=low), torch.full_like(flat, -math.inf)), k)[0]
    return out.view(shape)


def _topk_excluded(flat: Tensor, k: int, excl: Tensor, shape: torch.Size) -> Tensor:
    """The k best positions where ``excl`` is False: ``_topk_clean`` with candidates ``~excl``.

    The candidates are not counted first: a threshold above -inf means at least
    k candidates beat every excluded position, so clamping k to the candidate
    count changes nothing and the selection is the one ``_topk_clean`` makes
    (both keep the k highest candidates, ties to the lower index). Only when
    the threshold reaches -inf are the candidates counted and the candidates
    form run as is.
    """
    n = flat.numel()
    if k <= 0:
        return torch.zeros(shape, dtype=torch.bool, device=flat.device)
    out, threshold = _select(flat.masked_fill(excl, -math.inf), min(k, n))
    if threshold == -math.inf:  # rare: do exactly what the candidates form does
        return _topk_clean(flat, k, ~excl, shape, n_cand=n - count_true(excl))
    return out.view(shape)


def topk_mask(scores: Tensor, k: int, candidates: Tensor | None = None, *, exclude: Tensor | None = None,
              n_candidates: int | None = None) -> Tensor:
    """Boolean mask (shape of ``scores``) of the ``k`` highest-scoring positions.

    Args:
        scores: any real tensor; NaN counts as -inf, the lowest score.
        k: how many positions to select; clamped to the number of candidates.
        candidates: optional bool tensor; only these positions may be chosen.
        exclude: optional bool tensor, the complement of ``candidates`` (give
            one or the other): positions that may not be chosen. ``exclude=m``
            selects exactly what ``candidates=~m`` does, without the inversion.
        n_candidates: the number of True entries of ``candidates`` if the
            caller knows it (saves counting them); it must be exact.

    Returns:
        A bool tensor with exactly ``min(k, #candidates)`` True entries. Ties at
        the k-th value are broken by the lower flat index (deterministic).

    Example:
        >>> topk_mask(torch.tensor([1.0, 3.0, 3.0, 2.0]), 2).tolist()
        [False, True, True, False]
        >>> topk_mask(torch.tensor([1.0, 1.0, 1.0]), 2).tolist()
        [True, True, False]
    """
    if exclude is not None and candidates is not None:
        raise ValueError("topk_mask: pass candidates or exclude, not both")
    return _topk_clean(_clean(scores), k, candidates, scores.shape, exclude, n_candidates)


def topk_masks(scores: list[Tensor], ks: list[int], candidates: list[Tensor] | None = None, *,
               exclude: list[Tensor] | None = None, n_candidates: list[int] | None = None) -> list[Tensor | None]:
    """``[topk_mask(s, k, c) for ...]`` over many tensors in one concatenated pass.

    Gives exactly the masks of the per-tensor calls (``candidates=`` with
    ``n_candidates=``, or ``exclude=``), or None where ``k <= 0`` (the caller
    keeps its mask). The element-wise work (NaN cleaning, masking, the
    threshold comparison, the counts) runs once over the concatenation; only
    the k-th value is found per tensor. A tensor whose threshold has ties
    (more than k reach it) or reaches -inf is redone with :func:`topk_mask`,
    so every result is the per-tensor one.

    Example:
        >>> a, b = torch.tensor([1.0, 3.0, 2.0]), torch.tensor([5.0, 4.0])
        >>> [m.tolist() for m in topk_masks([a, b], [2, 1])]
        [[False, True, True], [True, False]]
    """
    device = scores[0].device if scores else None
    if (len(scores) < 2 or any(s.device != device or s.dtype != torch.float32 for s in scores)
            or (candidates is not None and n_candidates is None)):
        return [_one(s, int(k), candidates, exclude, n_candidates, i)
                for i, (s, k) in enumerate(zip(scores, ks, strict=True))]
    live = [i for i, k in enumerate(ks) if k > 0]
    out: list[Tensor | None] = [None] * len(scores)
    if not live:
        return out
    flat = torch.cat([scores[i].detach().reshape(-1) for i in live])
    sizes = [scores[i].numel() for i in live]
    if candidates is not None:
        # rank only the candidates (their flat indices, in order, grouped by tensor)
        cand = torch.cat([candidates[i].reshape(-1) for i in live])
        idx = nonzero(cand).to(flat.device)
        values = torch.nan_to_num(flat[idx], nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        lengths = [n_candidates[i] for i in live]
        keep = [min(int(ks[i]), n_candidates[i]) for i in live]
    else:
        values = torch.nan_to_num(flat, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        if exclude is not None:
            values = values.masked_fill(torch.cat([exclude[i].reshape(-1) for i in live]), -math.inf)
        lengths = sizes
        keep = [min(int(ks[i]), n) for i, n in zip(live, sizes, strict=True)]
    # per tensor: its k-th value, then its chosen positions and their count (one pass each)
    pieces, counts, thresholds, start = [], [], [], 0
    on_host = values.device.type == "cpu"
    for n, k in zip(lengths, keep, strict=True):
        part = values[start:start + n]
        if k > 0:
            threshold = kth_largest(part, k)
            pieces.append(greater_equal(part, threshold).to(part.device))
            # on the CPU count now; on an accelerator count on the device and read all counts at once
            counts.append(count_true(pieces[-1]) if on_host else pieces[-1].count_nonzero())
            thresholds.append(threshold.reshape(()))
        else:  # nothing is to be kept
            pieces.append(torch.zeros(n, dtype=torch.bool, device=values.device))
            counts.append(0 if on_host else values.new_zeros((), dtype=torch.int64))
            thresholds.append(values.new_tensor(math.nan))
        start += n
    reached = counts if on_host else torch.stack(counts).tolist()
    th_list = torch.stack(thresholds).tolist() if thresholds else []
    chosen = torch.cat(pieces) if pieces else values.new_zeros(0, dtype=torch.bool)
    if candidates is not None:
        mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        mask[idx[nonzero(chosen).to(idx.device)]] = True
    else:
        mask = chosen
    start = 0
    for j, i in enumerate(live):
        n = sizes[j]
        if keep[j] > 0 and (reached[j] != keep[j] or th_list[j] == -math.inf):
            out[i] = _one(scores[i], ks[i], candidates, exclude, n_candidates, i)  # ties or -inf: as is
        else:
            out[i] = mask[start:start + n].view(scores[i].shape)
        start += n
    return out


def _one(scores: Tensor, k: int, candidates, exclude, n_candidates, i: int) -> Tensor | None:
    if k <= 0:
        return None
    return topk_mask(scores, k, None if candidates is None else candidates[i],
                     exclude=None if exclude is None else exclude[i],
                     n_candidates=None if n_candidates is None else n_candidates[i])


def bottomk_mask(scores: Tensor, k: int, candidates: Tensor | None = None) -> Tensor:
    """Mask of the ``k`` lowest scores among ``candidates`` (ties: lower index; NaN lowest).

    Example:
        >>> bottomk_mask(torch.tensor([1.0, 3.0, 1.0, 2.0]), 1).tolist()
        [True, False, False, False]
    """
    # Negation maps ties to ties, so lower index still wins.
    return _topk_clean(-_clean(scores), k, candidates, scores.shape)


def random_mask(shape: torch.Size, k: int, generator: torch.Generator, device=None) -> Tensor:
    """Exact-count uniform random mask with ``k`` True entries.

    Random numbers come from ``generator`` on the CPU so that every device and
    every DDP rank draws the same mask from the same seed.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> int(random_mask(torch.Size([4, 5]), 7, g).sum())
        7
    """
    scores = torch.rand(shape, generator=generator)
    return topk_mask(scores, k).to(device)


def random_scores(like: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform [0, 1) scores shaped like ``like``, drawn on the CPU generator."""
    return torch.rand(like.shape, generator=generator).to(like.device)


def split_global(flat_mask: Tensor, shapes: dict[str, torch.Size]) -> dict[str, Tensor]:
    """Cut a concatenated flat mask back into per-name tensors of ``shapes``."""
    out, start = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        out[name] = flat_mask[start : start + n].view(shape)
        start += n
    return out


def global_topk(scores: dict[str, Tensor], k: int, candidates: dict[str, Tensor] | None = None, *,
                exclude: dict[str, Tensor] | None = None, lowest: bool = False,
                n_candidates: int | None = None) -> dict[str, Tensor]:
    """One exact top-k over several tensors ranked as one, cut back per name.

    The "flatten every layer, rank globally, split back" step of every global
    rule: the tensors are concatenated in the order of ``scores`` (ties go to the
    earlier name, then the lower index), ranked with :func:`topk_mask`
    (``lowest``: :func:`bottomk_mask`), and the mask is split into ``scores``'
    shapes. ``candidates`` / ``exclude`` are per-name masks.

    Example:
        >>> out = global_topk({"a": torch.tensor([0.1, 0.9]), "b": torch.tensor([0.5])}, 2)
        >>> {n: m.tolist() for n, m in out.items()}
        {'a': [False, True], 'b': [True]}
    """
    def flat(masks: dict[str, Tensor] | None) -> Tensor | None:
        return None if masks is None else torch.cat([masks[n].reshape(-1) for n in scores])

    values = torch.cat([s.reshape(-1) for s in scores.values()])
    if lowest:
        if exclude is not None or n_candidates is not None:
            raise ValueError("global_topk(lowest=True) takes candidates only")
        keep = bottomk_mask(values, k, flat(candidates))
    else:
        keep = topk_mask(values, k, flat(candidates), exclude=flat(exclude), n_candidates=n_candidates)
    return split_global(keep, {n: s.shape for n, s in scores.items()})


def ceil_count(x: float) -> int:
    """``ceil(x)`` of a count computed in floating point: 0.1 * 3 * 10 is 3, not 4.

    Example:
        >>> 0.1 * 3 * 10, ceil_count(0.1 * 3 * 10), ceil_count(2.5)
        (3.0000000000000004, 3, 3)
    """
    return math.ceil(x - 1e-9)


def floor_count(x: float) -> int:
    """``floor(x)`` of a count computed in floating point: 0.29 * 100 is 29, not 28.

    Example:
        >>> 0.29 * 100, floor_count(0.29 * 100), floor_count(2.5)
        (28.999999999999996, 29, 2)
    """
    return math.floor(x + 1e-9)


#: how a fraction of a count becomes a whole number, by name (the ``rounding=`` of the drop ops)
ROUNDING = {
    "ceil": ceil_count,    # GraNet / ITOP magnitude death (docs/algorithms.md, "Death and growth")
    "floor": floor_count,  # RigL n_prune (section 4, 7)
}
