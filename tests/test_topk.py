"""Exact, deterministic top-k (docs/concepts.md, "Guarantees")."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsetrain.core.topk import bottomk_mask, exact_count, kth_largest, random_mask, topk_mask


def test_exact_count_rounding_rule():
    assert exact_count(0.1, 25) == 3  # 2.5 rounds half up
    assert exact_count(0.1, 24) == 2  # 2.4 rounds down
    assert exact_count(0.0001, 10) == 1  # a positive density never empties a layer
    assert exact_count(1.0, 7) == 7
    assert exact_count(0.0, 7) == 0


def test_ties_break_by_lower_index():
    scores = torch.tensor([2.0, 1.0, 2.0, 2.0, 0.0])
    assert topk_mask(scores, 2).tolist() == [True, False, True, False, False]
    assert bottomk_mask(torch.tensor([1.0, 0.0, 0.0, 1.0]), 1).tolist() == [False, True, False, False]


def test_candidates_restrict_choice_and_clamp_k():
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0])
    cand = torch.tensor([False, True, False, True])
    assert topk_mask(scores, 1, cand).tolist() == [False, True, False, False]
    assert int(topk_mask(scores, 10, cand).sum()) == 2


def test_nan_is_lowest():
    assert topk_mask(torch.tensor([float("nan"), 0.0, -1.0]), 1).tolist() == [False, True, False]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), frac=st.floats(0, 1), seed=st.integers(0, 10_000), ties=st.booleans())
def test_topk_count_is_exact_and_selects_the_best(n, frac, seed, ties):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (n,), generator=g).float() if ties else torch.rand(n, generator=g)
    k = round(frac * n)
    mask = topk_mask(scores, k)
    assert int(torch.count_nonzero(mask)) == k
    if 0 < k < n:
        assert scores[mask].min() >= scores[~mask].max()
    # same scores, same mask: the rule is a pure function of the scores
    assert torch.equal(mask, topk_mask(scores.clone(), k))


def test_random_mask_is_exact_and_seeded():
    a = random_mask(torch.Size([7, 9]), 20, torch.Generator().manual_seed(3))
    b = random_mask(torch.Size([7, 9]), 20, torch.Generator().manual_seed(3))
    assert int(torch.count_nonzero(a)) == 20 and torch.equal(a, b)


def test_exact_count_ignores_float_noise():
    # 1 - (1 - 0.1) is 0.09999999999999998: still 2.5 -> 3 (regression: the GMP schedule's last event)
    assert exact_count(1 - (1 - 0.1), 25) == 3


def _reference_topk(scores, k, candidates):
    """Sort-based reference: highest score first, lower index first among ties, NaN lowest."""
    flat = scores.flatten().float()
    clean = torch.where(torch.isnan(flat), torch.tensor(float("-inf")), flat).tolist()
    allowed = [i for i in range(len(clean)) if candidates is None or bool(candidates.flatten()[i])]
    order = sorted(allowed, key=lambda i: (-clean[i], i))
    out = torch.zeros(len(clean), dtype=torch.bool)
    out[order[:k]] = True
    return out.view_as(scores)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 120), k=st.integers(0, 130), seed=st.integers(0, 10_000),
       kind=st.sampled_from(["continuous", "ties", "special"]), cand_frac=st.sampled_from([None, 0.1, 0.5, 0.9]))
def test_topk_matches_a_sort_based_reference(n, k, seed, kind, cand_frac):
    """Both internal paths (rank only the candidates, or mask the others) agree with a plain sort."""
    g = torch.Generator().manual_seed(seed)
    if kind == "continuous":
        scores = torch.randn(n, generator=g)
    elif kind == "ties":
        scores = torch.randint(-2, 3, (n,), generator=g).float()
    else:
        pool = torch.tensor([float("nan"), float("-inf"), float("inf"), 0.0, 1.0, -1.0])
        scores = pool[torch.randint(0, 6, (n,), generator=g)]
    cand = None if cand_frac is None else torch.rand(n, generator=g) < cand_frac
    assert torch.equal(topk_mask(scores, k, cand), _reference_topk(scores, k, cand))
    no_nan = torch.where(torch.isnan(scores), torch.tensor(float("-inf")), scores)
    assert torch.equal(bottomk_mask(scores, k, cand), _reference_topk(-no_nan, k, cand))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(65_537, 300_000), frac=st.floats(0, 1), seed=st.integers(0, 10_000),
       kind=st.sampled_from(["continuous", "ties", "sorted", "spiky"]))
def test_sampled_kth_largest_is_exact_on_large_vectors(n, frac, seed, kind):
    """Above 65536 entries the threshold comes from a sampled bracket; it must equal torch.kthvalue."""
    g = torch.Generator().manual_seed(seed)
    if kind == "continuous":
        x = torch.randn(n, generator=g)
    elif kind == "ties":
        x = torch.randint(0, 4, (n,), generator=g).float()
    elif kind == "sorted":
        x = torch.arange(n, dtype=torch.float32)
    else:
        x = torch.zeros(n)
        x[::7] = torch.randn(len(x[::7]), generator=g) * 1e6
        x[3] = float("-inf")
    k = max(1, min(n, round(frac * n)))
    assert kth_largest(x, k) == torch.kthvalue(x, n - k + 1).values
    mask = topk_mask(x, k)
    assert int(torch.count_nonzero(mask)) == k
    if k < n:
        assert x[mask].min() >= x[~mask].max()
