"""The scheduled ``prune`` method (docs/algorithms.md, "The pruning-schedule study"): targets, granularities, in-run
lottery tickets."""

import pytest
import torch
from torch import nn

import sparsetrain
from sparsetrain.core.granularity import get_granularity
from sparsetrain.core.topk import exact_count
from sparsetrain.errors import SparsetrainError


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 8))


def run(steps=20, **kwargs):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, "prune", total_steps=steps, **{"layer_type": "all", **kwargs})
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 4, 8, 8, generator=g)).pow(2).mean().backward()
        opt.step()
    return model, sp


@pytest.mark.parametrize("schedule", ["one_shot", "iterative", "agp", "lin", "cos", "one_cycle"])
def test_every_schedule_ends_at_the_target_per_layer(schedule):
    _, sp = run(sparsity=0.8, schedule=schedule)
    for mask in sp.masks.values():
        assert int(torch.count_nonzero(mask)) == exact_count(0.2, mask.numel())


def test_exp_needs_a_positive_start_and_reaches_the_target():
    with pytest.raises(SparsetrainError, match="start"):
        sparsetrain.create_method("prune", schedule="exp")
    _, sp = run(sparsity=0.8, schedule="exp", start_sparsity=0.0001)
    assert sp.density() == pytest.approx(0.2, abs=0.01)


def test_masks_change_only_when_the_scheduled_sparsity_changes():
    # one_shot at 50 %: a single pruning event in the whole run
    _, sp = run(sparsity=0.5, schedule="one_shot", start=0.5)
    events = [h for h in sp.history if "sparsity_target" in h]
    assert [h["step"] for h in events] == [10]


def test_tail_holds_the_final_sparsity():
    _, sp = run(sparsity=0.7, schedule="lin", end=0.5)
    events = [h["step"] for h in sp.history if "sparsity_target" in h]
    assert max(events) <= 10


@pytest.mark.parametrize("granularity", ["row", "kernel", "filter", "channel", "in_channel"])
def test_structured_granularities_prune_whole_groups(granularity):
    conv_only = {"exclude": ["3.*"]} if granularity in ("kernel", "channel", "in_channel") else {}  # conv-only
    _, sp = run(sparsity=0.5, granularity=granularity, schedule="one_shot", start=0.2, **conv_only)
    fraction_on = get_granularity(granularity).group_scores(sp.masks["0.weight"].float())
    assert set(fraction_on.flatten().tolist()) <= {0.0, 1.0}  # every group is all on or all off
    assert 0.0 in fraction_on and 1.0 in fraction_on


def test_channel_on_a_linear_layer_names_the_layer():
    with pytest.raises(SparsetrainError, match="3.weight"):
        run(sparsity=0.5, granularity="channel", schedule="one_shot", start=0.2)


def test_n_m_holds_in_every_group():
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = sparsetrain.attach(model, opt, "prune", granularity="2:4", sparsity=0.5, schedule="one_shot",
                            total_steps=4, layer_type="Linear")
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(3, 16)).sum().backward()
        opt.step()
    for mask in sp.masks.values():
        assert (mask.view(mask.shape[0], -1, 4).sum(-1) == 2).all()


def test_lth_rewinds_surviving_weights_to_the_saved_values():
    model = net()
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, "prune", sparsity=0.6, schedule="one_shot", start=0.5, lth=True,
                            total_steps=10)
    for t in range(10):
        opt.zero_grad()
        model(torch.randn(4, 4, 8, 8)).pow(2).mean().backward()
        opt.step()
        if t + 1 == 5:  # right after the pruning event: survivors hold exactly their rewind values
            for n, mask in sp.masks.items():
                w = dict(model.named_parameters())[n].detach()
                assert torch.equal(w[mask], saved[n][mask])
                assert torch.count_nonzero(w[~mask]) == 0


def test_rewind_point_and_reset_end():
    model, sp = run(steps=20, sparsity=0.5, schedule="iterative", n_steps=2, start=0.5, lth=True, rewind=0.25,
                    reset_end=True)
    rewind = sp.ctx.state["rewind"]
    for n, mask in sp.masks.items():
        w = dict(model.named_parameters())[n].detach()
        assert torch.equal(w[mask], rewind[n][mask])  # reset at the very end


def test_global_scope_and_bad_inputs():
    _, sp = run(sparsity=0.9, scope="global")
    total = sum(m.numel() for m in sp.masks.values())
    assert sum(int(torch.count_nonzero(m)) for m in sp.masks.values()) == exact_count(0.1, total)
    _, by_alias = run(sparsity=0.9, context="global")  # fasterai's word
    assert all(torch.equal(sp.masks[n], by_alias.masks[n]) for n in sp.masks)
    with pytest.raises(SparsetrainError, match="local"):
        sparsetrain.create_method("prune", context="everywhere")
    with pytest.raises(SparsetrainError, match="unknown scope 'local'"):
        sparsetrain.create_method("prune", scope="local")
    with pytest.raises(SparsetrainError, match="agp"):
        sparsetrain.create_method("prune", schedule="agpp")
    with pytest.raises(SparsetrainError, match="large_final"):
        sparsetrain.create_method("prune", criterion="large_finall")
    with pytest.raises(SparsetrainError, match="N < M"):
        sparsetrain.create_method("prune", granularity="2:2")
    with pytest.raises(SparsetrainError, match="0.9"):
        sparsetrain.create_method("prune", sparsity=90)


def test_filter_pruning_masks_bias_and_the_following_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 4))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sp = sparsetrain.attach(model, opt, "prune", sparsity=0.5, granularity="filter", schedule="one_shot",
                            start=0.25, total_steps=12)
    for _ in range(12):
        opt.zero_grad()
        model(torch.randn(4, 3, 8, 8)).pow(2).mean().backward()
        opt.step()
        dead = ~sp.masks["0.weight"].flatten(1).any(1)
        for p in (model[0].bias, model[1].weight, model[1].bias):
            assert torch.count_nonzero(p.detach()[dead]) == 0
            for v in opt.state[p].values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    assert torch.count_nonzero(v[dead]) == 0
    assert int(dead.sum()) == 4
    model.eval()
    out = model[:3](torch.randn(2, 3, 8, 8))
    assert torch.count_nonzero(out[:, dead]) == 0  # removed channels output exactly zero


def test_default_layer_type_prunes_conv2d_only_as_fasterai():
    """fasterai's Sparsifier prunes nn.Conv2d by default (issue 16, item 3): the Linear stays dense."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = sparsetrain.attach(model, opt, "prune", sparsity=0.5, schedule="one_shot", start=0.5, total_steps=4)
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(2, 4, 8, 8)).pow(2).mean().backward()
        opt.step()
    assert int(sp.masks["0.weight"].sum()) == exact_count(0.5, sp.masks["0.weight"].numel())
    assert bool(sp.masks["3.weight"].all())
    _, sp = run(sparsity=0.5, schedule="one_shot", start=0.5, layer_type="Linear")
    assert bool(sp.masks["0.weight"].all()) and not bool(sp.masks["3.weight"].all())


def test_layer_type_that_matches_nothing_says_what_to_pass():
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(SparsetrainError, match="layer_type='Linear' or layer_type='all'"):
        sparsetrain.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), "prune", total_steps=4)
