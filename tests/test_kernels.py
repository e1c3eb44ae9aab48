"""The selection primitives give the same results through NumPy and through torch (core/kernels.py)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsetrain.core import kernels
from sparsetrain.core.topk import topk_mask, topk_masks

POOL = torch.tensor([float("-inf"), float("inf"), 0.0, -0.0, 1.0, -1.0, 2.5])


def _vector(n: int, seed: int, kind: str, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "continuous":
        return torch.randn(n, generator=g).to(dtype)
    return POOL[torch.randint(0, len(POOL), (n,), generator=g)].to(dtype)


def _all_primitives(x: torch.Tensor, low: float, high: float) -> list:
    mask = x > low
    return [kernels.greater_equal(x, high), kernels.count_greater(x, low), kernels.count_greater(x, low, True),
            kernels.between(x, low, high), kernels.nonzero(mask), kernels.count_true(mask)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 3000), seed=st.integers(0, 10_000), kind=st.sampled_from(["continuous", "special"]),
       low=st.sampled_from([-1.0, 0.0, 0.5, float("-inf")]), width=st.sampled_from([0.0, 0.3, 2.0, float("inf")]),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]))
def test_numpy_and_torch_primitives_agree(n, seed, kind, low, width, dtype):
    x = _vector(n, seed, kind, dtype)
    high = low + width
    fast = _all_primitives(x, low, high)
    kernels.USE_NUMPY = False
    try:
        slow = _all_primitives(x, low, high)
    finally:
        kernels.USE_NUMPY = kernels.np is not None
    for a, b in zip(fast, slow, strict=True):
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a, b)
        else:
            assert a == b


def test_tensor_thresholds_are_compared_in_the_tensor_dtype():
    """0.1 as a float32 threshold must not be promoted to float64 (it would exclude 0.1f itself)."""
    x = torch.tensor([0.1, 0.2], dtype=torch.float32)
    th = torch.tensor(0.1, dtype=torch.float32)
    assert kernels.greater_equal(x, th).tolist() == [True, True]
    assert kernels.count_greater(x, th, inclusive=True) == 2


def test_tensors_needing_grad_or_strided_take_the_torch_path():
    x = torch.randn(10, requires_grad=True)
    assert kernels.count_greater(x.detach(), 0.0) == kernels.count_greater(x, 0.0)
    y = torch.randn(6, 4)[:, 1]  # not contiguous
    assert torch.equal(kernels.greater_equal(y, 0.0), y >= 0.0)


@pytest.mark.parametrize("numpy_path", [True, False])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["continuous", "special"]),
       mode=st.sampled_from(["plain", "candidates", "exclude"]))
def test_topk_masks_equal_the_per_tensor_masks(numpy_path, seed, kind, mode):
    """The concatenated pass (used by every per-layer drop) equals one topk_mask per tensor, ties included."""
    g = torch.Generator().manual_seed(seed)
    sizes = [int(s) for s in torch.randint(1, 40_000, (3,), generator=g)]
    scores = [_vector(s, seed + i, kind) for i, s in enumerate(sizes)]
    masks = [torch.rand(s, generator=g) < 0.3 for s in sizes]
    ks = [int(k) for k in torch.randint(-1, 12_000, (3,), generator=g)]
    old = kernels.USE_NUMPY
    kernels.USE_NUMPY = numpy_path and kernels.np is not None
    try:
        if mode == "candidates":
            counts = [int(m.sum()) for m in masks]
            got = topk_masks(scores, ks, masks, n_candidates=counts)
            want = [topk_mask(s, k, m) if k > 0 else None for s, k, m in zip(scores, ks, masks, strict=True)]
        elif mode == "exclude":
            got = topk_masks(scores, ks, exclude=masks)
            want = [topk_mask(s, k, exclude=m) if k > 0 else None for s, k, m in zip(scores, ks, masks, strict=True)]
        else:
            got = topk_masks(scores, ks)
            want = [topk_mask(s, k) if k > 0 else None for s, k in zip(scores, ks, strict=True)]
    finally:
        kernels.USE_NUMPY = old
    for a, b in zip(got, want, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
