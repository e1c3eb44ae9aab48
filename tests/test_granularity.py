"""Granularities: masks made of whole groups, exact counts, N:M, misfits (docs/algorithms.md, "Pruning criteria")."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsetrain.core.granularity import (
    GRANULARITIES,
    filter_dependents,
    get_granularity,
    nm_mask,
    structured_topk,
)
from sparsetrain.errors import SparsetrainError

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)
shapes_2d = st.tuples(st.integers(1, 12), st.integers(1, 12))
shapes_4d = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4))


def _scores(shape, seed, ties):
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 3, shape, generator=g).float() if ties else torch.randn(shape, generator=g)
    return s


def _groups_of(name, shape):
    """Reference grouping: a tensor of group ids built by hand from the table in the module docstring."""
    idx = torch.arange(torch.Size(shape).numel()).view(shape)
    coords = torch.stack(torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij"), -1)
    keep = {"weight": range(len(shape)), "row": range(len(shape) - 1),
            "column": [d for d in range(len(shape)) if d != len(shape) - 2],
            "vector": [d for d in range(len(shape)) if d != 2], "kernel": [0, 1],
            "channel": [d for d in range(len(shape)) if d != 1], "in_channel": [1], "filter": [0]}[name]
    key = coords[..., list(keep)] if keep else torch.zeros_like(idx)[..., None]
    _, ids = torch.unique(key.reshape(idx.numel(), -1), dim=0, return_inverse=True)
    return ids.view(shape)


def _whole_groups(mask, ids):
    for gid in ids.unique():
        vals = mask[ids == gid]
        assert vals.all() or not vals.any()


@FAST
@given(name=st.sampled_from(sorted(GRANULARITIES)), conv=st.booleans(), s2=shapes_2d, s4=shapes_4d,
       frac=st.floats(0, 1), seed=st.integers(0, 1000), ties=st.booleans())
def test_group_masks_are_whole_groups_with_exact_counts(name, conv, s2, s4, frac, seed, ties):
    shape = s4 if conv else s2
    gran = get_granularity(name)
    if not conv and name in ("vector", "kernel", "channel", "in_channel"):
        with pytest.raises(SparsetrainError, match="layer 'fc.weight'"):
            gran.check(shape, "fc.weight")
        return
    ids = _groups_of(name, shape)
    n_groups = int(ids.max()) + 1
    assert gran.num_groups(shape) == n_groups
    scores = _scores(shape, seed, ties)
    k = round(frac * n_groups)
    mask = structured_topk(scores, k, gran)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    _whole_groups(mask, ids)
    kept = {int(g) for g in ids[mask].unique()}
    assert len(kept) == k
    # the kept groups are the best by mean score (ties: lower group index)
    means = torch.stack([scores[ids == g].mean() for g in range(n_groups)])
    assert kept == set(torch.sort(-means, stable=True).indices[:k].tolist())
    assert torch.equal(mask, structured_topk(scores, k, gran))  # deterministic


@FAST
@given(h=st.integers(1, 4), w=st.integers(1, 4), a=st.integers(1, 4), b=st.integers(1, 4), conv=st.booleans(),
       frac=st.floats(0, 1), seed=st.integers(0, 1000))
def test_block_masks(h, w, a, b, conv, frac, seed):
    shape = (h * a, w * b, 1, 1) if conv else (h * a, w * b)
    gran = get_granularity(f"block{h}x{w}")
    assert gran.num_groups(shape) == a * b
    k = round(frac * a * b)
    scores = _scores(shape, seed, False)
    mask = structured_topk(scores, k, gran)
    if k:
        assert torch.equal(gran.select(scores, k / (a * b)), mask)
    blocks = mask.reshape(a, h, b, w)
    per_block = blocks.sum(dim=(1, 3))
    assert set(per_block.unique().tolist()) <= {0, h * w}
    assert int((per_block > 0).sum()) == k


@FAST
@given(nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (2, 8), (4, 8)]), out=st.integers(1, 5),
       groups=st.integers(1, 4), kernel=st.sampled_from([(), (1, 1), (3, 3), (2,)]), seed=st.integers(0, 1000),
       ties=st.booleans())
def test_nm_exact_in_every_group(nm, out, groups, kernel, seed, ties):
    n, m = nm
    shape = (out, groups * m, *kernel)
    scores = _scores(shape, seed, ties)
    mask = nm_mask(scores, n, m)
    assert mask.shape == scores.shape
    per_group = mask.movedim(1, -1).reshape(-1, m).sum(1)
    assert (per_group == n).all()
    # the kept ones are the n best of each group, ties to the lower index
    s = scores.movedim(1, -1).reshape(-1, m)
    best = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :n]
    assert torch.equal(mask.movedim(1, -1).reshape(-1, m), torch.zeros_like(s).scatter_(1, best, 1).bool())
    assert torch.equal(get_granularity(f"{n}:{m}").select(scores, n / m), mask)


def test_nm_hand_worked_and_ties():
    s = torch.tensor([[1.0, 1.0, 1.0, 1.0, 3.0, float("nan"), 2.0, 2.0]])
    assert nm_mask(s, 2, 4).int().tolist() == [[1, 1, 0, 0, 1, 0, 1, 0]]
    conv = torch.zeros(1, 4, 1, 2)
    conv[0, :, 0, 0] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    conv[0, :, 0, 1] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = nm_mask(conv, 2, 4)  # groups run along the input channel
    assert mask[0, :, 0, 0].tolist() == [True, True, False, False]
    assert mask[0, :, 0, 1].tolist() == [False, False, True, True]


def test_hand_worked_groups():
    w = torch.arange(24.0).view(2, 3, 2, 2)
    assert structured_topk(w, 1, "filter")[1].all() and not structured_topk(w, 1, "filter")[0].any()
    assert structured_topk(w, 1, "in_channel")[:, 2].all() and int(structured_topk(w, 1, "in_channel").sum()) == 8
    # fasterai's channel: one group per (filter, kernel position) across the input channels; w[1, :, 1, 1] is largest
    assert structured_topk(w, 1, "channel")[1, :, 1, 1].all() and int(structured_topk(w, 1, "channel").sum()) == 3
    assert structured_topk(w, 1, "kernel").int().sum() == 4 and structured_topk(w, 1, "kernel")[1, 2].all()
    lin = torch.tensor([[1.0, 9.0], [2.0, 3.0]])
    assert structured_topk(lin, 1, "column").tolist() == [[False, True], [False, True]]
    assert structured_topk(lin, 1, "row").tolist() == [[True, True], [False, False]]


def test_candidates():
    lin = torch.tensor([[1.0, 9.0], [2.0, 3.0], [5.0, 5.0]])
    old = torch.tensor([[True, True], [True, False], [False, False]])  # row 2 fully pruned
    assert structured_topk(lin, 3, "row", old).tolist() == [[True, True], [True, True], [False, False]]
    assert structured_topk(lin, 1, "row", torch.tensor([False, True, True])).tolist()[2] == [True, True]


def test_names_and_errors():
    assert get_granularity("block:2x4").name == "block2x4" and get_granularity(" Kernel ").name == "kernel"
    with pytest.raises(SparsetrainError, match="Choices: .*N:M .*blockHxW"):
        get_granularity("kernels")
    for bad in ("4:4", "5:4", "0:4"):
        with pytest.raises(SparsetrainError, match="1 <= N < M"):
            get_granularity(bad)
    with pytest.raises(SparsetrainError, match="1 <= N < M"):
        nm_mask(torch.zeros(2, 4), 4, 4)
    with pytest.raises(SparsetrainError, match="layer 'conv1.weight'.*not divisible by M=4"):
        get_granularity("2:4").check((8, 3, 3, 3), "conv1.weight")
    with pytest.raises(SparsetrainError, match="layer 'fc.weight'.*4 x 4 blocks"):
        get_granularity("block4x4").check((10, 8), "fc.weight")
    with pytest.raises(SparsetrainError, match="layer 'fc.weight'.*use 'column'"):
        get_granularity("in_channel").check((10, 8), "fc.weight")
    with pytest.raises(SparsetrainError, match="layer 'fc.weight'.*use 'row'"):
        get_granularity("channel").check((10, 8), "fc.weight")
    with pytest.raises(SparsetrainError, match="nm_mask"):
        structured_topk(torch.zeros(2, 4), 1, "2:4")
    with pytest.raises(SparsetrainError, match="fixes the density at 0.5"):
        get_granularity("2:4").select(torch.zeros(2, 4), 0.3)


def test_filter_dependents():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3, bias=False),
                        nn.Flatten(), nn.Linear(8, 3))
    assert filter_dependents(net, "0.weight") == [("0.bias", 0), ("2.weight", 0), ("2.bias", 0)]
    assert filter_dependents(net, "3.weight") == []  # no bias, next params are the Linear's
    assert filter_dependents(net, "5.weight") == [("5.bias", 0)]
    assert filter_dependents(nn.Linear(2, 2), "weight") == [("bias", 0)]
    with pytest.raises(SparsetrainError, match="not a parameter"):
        filter_dependents(net, "9.weight")


def test_granularities_are_a_registry_with_families():
    from sparsetrain.core.registry import REGISTRIES, Registry
    assert REGISTRIES["granularity"] is GRANULARITIES and isinstance(GRANULARITIES, Registry)
    assert GRANULARITIES.families() == ["N:M (e.g. 2:4)", "blockHxW (e.g. block4x4)"]
    assert GRANULARITIES.get("3:8").name == "3:8" and GRANULARITIES.get("block2x2").name == "block2x2"
    assert "2:4" not in GRANULARITIES and "kernel" in GRANULARITIES  # families build, they are not entries
    with pytest.raises(SparsetrainError, match="family 'N:M .*already registered"):
        GRANULARITIES.register_family("N:M (e.g. 2:4)", lambda name: None)
    saved = GRANULARITIES.snapshot()
    GRANULARITIES.register_family("Nx (test)", lambda name: GRANULARITIES.get("weight") if name == "1x" else None)
    assert get_granularity("1x").name == "weight"
    GRANULARITIES.restore(saved)
    with pytest.raises(SparsetrainError, match="unknown granularity '1x'"):
        get_granularity("1x")
