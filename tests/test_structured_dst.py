"""Dynamic sparse training on whole groups (kernels, rows, filters, blocks): issue 5's granularities in DST."""

import pytest
import torch
from torch import nn

import sparsetrain
from sparsetrain.core.granularity import get_granularity
from sparsetrain.core.topk import exact_count
from sparsetrain.errors import SparsetrainError


def conv_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 4))


@pytest.mark.parametrize("method", ["rigl", "set", "dst"])
@pytest.mark.parametrize("granularity", ["kernel", "row", "block2x2"])
def test_whole_groups_exact_counts_and_moving_topology(method, granularity):
    model = conv_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    exclude = ["5.*"] if granularity == "kernel" else []  # kernels exist only in conv layers
    sp = sparsetrain.attach(model, opt, method, density=0.3, granularity=granularity, update_every=3,
                            total_steps=30, exclude=exclude, distribution="uniform")
    gran = get_granularity(granularity)
    start = {n: int(torch.count_nonzero(m)) for n, m in sp.masks.items()}
    for n, m in sp.masks.items():  # exact number of whole groups at init
        groups = gran.num_groups(m.shape)
        assert start[n] == exact_count(0.3, groups) * (m.numel() // groups)
    for _ in range(30):
        opt.zero_grad()
        model(torch.randn(4, 4, 8, 8)).pow(2).mean().backward()
        opt.step()
        for n, m in sp.masks.items():
            assert set(gran.group_scores(m.float()).flatten().tolist()) <= {0.0, 1.0}, n  # whole groups
            assert int(torch.count_nonzero(m)) == start[n]
            assert torch.count_nonzero(dict(model.named_parameters())[n].detach()[~m]) == 0
    assert sum(h.get("changed", 0) for h in sp.history) > 0


def test_static_at_filter_granularity():
    model = conv_net()
    sp = sparsetrain.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), "static", density=0.5,
                            granularity="filter", distribution="uniform", total_steps=5)
    assert all(int(m.flatten(1).any(1).sum()) * m[0].numel() == int(m.sum()) for m in sp.masks.values())


def test_n_m_and_incompatible_options_are_refused():
    with pytest.raises(SparsetrainError, match="N < M"):
        sparsetrain.create_method("rigl", granularity="4:4")
    with pytest.raises(SparsetrainError, match="redistribution"):
        sparsetrain.create_method("dst", granularity="row", redistribution="nonzeros")
    model = conv_net()
    with pytest.raises(SparsetrainError, match="5.weight"):
        sparsetrain.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), "rigl", granularity="kernel",
                           total_steps=5)


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_n_m_dynamic_sparsity_keeps_n_of_every_m(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, method, granularity="2:4", update_every=2, total_steps=20,
                            drop_fraction=0.5)
    for _ in range(20):
        opt.zero_grad()
        model(torch.randn(4, 16)).pow(2).sum().backward()
        opt.step()
        for n, m in sp.masks.items():
            assert (m.view(m.shape[0], -1, 4).sum(-1) == 2).all(), n
            assert torch.count_nonzero(dict(model.named_parameters())[n].detach()[~m]) == 0
    assert sp.density() == 0.5
    assert sum(h.get("changed", 0) for h in sp.history) > 0
    assert all(h["dropped"] == h["grown"] for h in sp.history[1:])


def test_n_m_rigl_on_a_conv_net_groups_along_the_input_channels():
    model = conv_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, "rigl", granularity="2:4", update_every=2, total_steps=10)
    for _ in range(10):
        opt.zero_grad()
        model(torch.randn(4, 4, 8, 8)).pow(2).mean().backward()
        opt.step()
    conv = sp.masks["2.weight"]  # [out, in, kh, kw]: groups of 4 input channels at each (out, kh, kw)
    assert (conv.movedim(1, -1).reshape(-1, 4).sum(-1) == 2).all()


def train_in_whole_groups(model, opt, sp, gran, steps, check=lambda name, mask: None):
    """Train on random batches; after every step every mask is made of whole groups (and ``check`` holds)."""
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 4, 8, 8)).pow(2).mean().backward()
        opt.step()
        for n, m in sp.masks.items():
            assert set(gran.group_scores(m.float()).flatten().tolist()) <= {0.0, 1.0}, n
            check(n, m)


@pytest.mark.parametrize("method", ["gmp", "gmp_uniform", "granet", "granet_uniform"])
@pytest.mark.parametrize("granularity", ["kernel", "filter"])
def test_gradual_pruning_on_whole_groups(method, granularity):
    """The GMP family takes granularity= too: masks are whole groups, they only shrink (without regeneration),
    and a per-layer schedule ends at exact numbers of groups."""
    model = conv_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    exclude = ["5.*"] if granularity == "kernel" else []
    sp = sparsetrain.attach(model, opt, method, density=0.25, initial_density=1.0, granularity=granularity,
                            update_every=3, end=0.5, total_steps=24, exclude=exclude)
    gran = get_granularity(granularity)
    previous = {n: m.clone() for n, m in sp.masks.items()}

    def check(n, m):
        if not method.startswith("granet"):
            assert not bool((m & ~previous[n]).any()), n  # pruned stays pruned
        previous[n] = m.clone()

    train_in_whole_groups(model, opt, sp, gran, 24, check)
    if method == "gmp_uniform" and granularity == "kernel":  # two conv layers, uniform: 25 % of each one's kernels
        for m in sp.masks.values():
            assert int(gran.group_scores(m.float()).sum()) == exact_count(0.25, gran.num_groups(m.shape))
    total = sum(gran.num_groups(m.shape) for m in sp.masks.values())
    kept = sum(int(gran.group_scores(m.float()).sum()) for m in sp.masks.values())
    if method in ("gmp", "granet"):  # global: exactly 25 % of all groups
        assert kept == exact_count(0.25, total)


def test_prune_to_groups_by_hand():
    from sparsetrain import ops
    from sparsetrain.context import SparseContext
    w = nn.Parameter(torch.tensor([[[[1.0, 1.0]]], [[[0.1, 5.0]]], [[[0.5, 0.5]]]]))  # 3 filters of 2 weights
    ctx = SparseContext({"w": w}, {"w": torch.ones(3, 1, 1, 2, dtype=torch.bool)}, None, 10, torch.Generator())
    ops.prune_to(lambda t, T: 1 / 3, granularity="filter", scope="layer")(ctx)  # mean |w|: 1.0, 2.55, 0.5
    assert ctx.masks["w"].flatten().tolist() == [False, False, True, True, False, False]
    with pytest.raises(SparsetrainError, match="not made of whole groups"):
        ops.prune_to(lambda t, T: 0.5, granularity="2:4")


def test_drop_and_regrow_ops_take_a_granularity_by_hand():
    """The weight-level drop / regrow / init ops take ``granularity=`` (weight is the trivial case)."""
    from sparsetrain import ops
    from sparsetrain.context import SparseContext
    w = nn.Parameter(torch.tensor([[[[1.0, 1.0]]], [[[0.1, 5.0]]], [[[0.5, 0.5]]]]))  # 3 filters of 2 weights
    ctx = SparseContext({"w": w}, {"w": torch.ones(3, 1, 1, 2, dtype=torch.bool)}, None, 10, torch.Generator())
    ctx.grads["w"] = torch.tensor([[[[0.0, 0.0]]], [[[0.0, 0.0]]], [[[3.0, 1.0]]]])
    dropper = ops.drop_lowest(lambda t, T: 0.5, "magnitude", rounding="floor", granularity="filter")
    assert dropper.name == "drop_groups[filter]" and dropper(ctx) == {"w": 2}  # floor(0.5 * 3) = 1 filter
    assert ctx.masks["w"].flatten().tolist() == [True, True, True, True, False, False]  # mean |w| 0.5 goes
    ctx.masks["w"][0] = False  # and filter 0 too: regrowth of 1 filter picks the best inactive by mean |g|
    ops.regrow("gradient", granularity="filter")(ctx, {"w": 2}, None)
    assert ctx.masks["w"].flatten().tolist() == [False, False, True, True, True, True]
    assert ops.drop_lowest(lambda t, T: 0.5).name == "drop_lowest[layer]"
    with pytest.raises(SparsetrainError, match="use redistribution 'none'"):
        ops.regrow("gradient", "momentum", granularity="kernel")
    with pytest.raises(SparsetrainError, match="not made of whole groups"):
        ops.drop_lowest(lambda t, T: 0.5, granularity="2:4")
    with pytest.raises(SparsetrainError, match="prune 'threshold' drops single weights"):
        sparsetrain.create_method("dst", granularity="filter", prune="threshold")


@pytest.mark.parametrize("mode", ["em", "em_s"])
def test_mest_on_whole_kernels(mode):
    model = conv_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, "mest", density=0.3, mode=mode, granularity="kernel", update_every=3,
                            soft_end=0.5, total_steps=30, exclude=["5.*"], distribution="uniform")
    gran = get_granularity("kernel")
    train_in_whole_groups(model, opt, sp, gran, 30)
    for m in sp.masks.values():  # back at d_l after the soft bound
        assert int(gran.group_scores(m.float()).sum()) == exact_count(0.3, gran.num_groups(m.shape))
    assert sum(h.get("changed", 0) for h in sp.history) > 0
