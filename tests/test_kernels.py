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


def test_python_thresholds_are_cast_to_the_tensor_dtype_as_torch_does():
    """float32(0.1) > 0.1 is False in torch (0.1 is cast to float32); a float64 comparison would say True."""
    x = torch.tensor([0.1, 0.2], dtype=torch.float32)
    assert kernels.count_greater(x, 0.1) == int((x > 0.1).sum()) == 1
    assert kernels.greater_equal(x, 0.1).tolist() == (x >= 0.1).tolist() == [True, True]
    assert kernels.between(x, 0.1, 0.1).tolist() == [x[0].item()]
    half = torch.tensor([1.0, 60000.0], dtype=torch.float16)
    assert kernels.count_greater(half, 1e6) == int((half > 1e6).sum())  # out of range: +inf, no warning


def test_inputs_numpy_cannot_view_take_the_torch_path():
    x = torch.randn(10, requires_grad=True)
    cases = [x, torch.randn(6, 4)[:, 1], torch.tensor(1.0), torch._neg_view(torch.randn(5)),
             torch.randn(5, dtype=torch.bfloat16)]
    for t in cases:
        assert kernels._host(t) is None
        plain = t.detach()
        assert torch.equal(kernels.greater_equal(t, 0.0), plain >= 0.0)
        assert kernels.count_greater(t, 0.0) == int((plain > 0.0).sum())
        assert torch.equal(kernels.between(t, -0.5, 0.5), plain[(plain >= -0.5) & (plain <= 0.5)])
    assert kernels._host(torch.randn(5)) is not None
    several = torch.tensor([0.0, 10.0])  # a threshold per element broadcasts, as in torch
    assert kernels.greater_equal(torch.tensor([1.0, 2.0]), several).tolist() == [True, False]


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
