"""SNFS momentum redistribution (docs/algorithms.md, "Redistribution" and "SET, SNFS and RigL"): no layer drains to
zero (issue 2).

sparse_learning gathers the statistic before death from the optimizer's
momentum buffer (weight decay included) and rounds each layer's share up.
Our first version read a weight-decay-free gradient EMA after death and
floored the shares: behind BatchNorm a channel with one active weight has
gradient 0, so the small first conv got statistic ~0 and emptied for good.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparsetrain
from sparsetrain.ops.regrow import _layer_statistic, allocate

STEPS_PER_EPOCH = 6
EPOCHS = 8


def bn_net() -> nn.Sequential:
    """A tiny cnn1d: a 24-weight stem behind BatchNorm (its lone weights get gradient 0)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 3, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Conv1d(8, 8, 3, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 12, 4))


def train_snfs(density: float = 0.1, weight_decay: float = 5e-4):
    model = bn_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sp = sparsetrain.attach(model, opt, "snfs", density=density, steps_per_epoch=STEPS_PER_EPOCH,
                            total_steps=STEPS_PER_EPOCH * EPOCHS)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 16, generator=g)
    y = (x[:, 0, :8].sum(1) > 0).long() + 2 * (x[:, 0, 8:].sum(1) > 0).long()
    for _ in range(STEPS_PER_EPOCH * EPOCHS):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt, sp


def test_small_bn_stem_is_not_drained():
    _, _, sp = train_snfs()
    counts = {n: int(torch.count_nonzero(m)) for n, m in sp.masks.items()}
    assert len(sp.history) == EPOCHS  # init + one update per epoch but the last
    assert all(c > 0 for c in counts.values()), counts
    assert sp.density() == sp.history[0]["density"]  # redistribution keeps the total exact
    assert all(h["dropped"] == h["grown"] for h in sp.history[1:])  # zero-cost, exact totals


def test_statistic_reads_the_optimizer_buffer_with_weight_decay():
    """A lone weight behind BN: gradient (and its EMA) 0, SGD buffer ~ wd w / (1 - mu) (docs/algorithms.md,
    "Redistribution")."""
    model, opt, sp = train_snfs()
    name = "0.weight"
    buf = opt.state[sp.ctx.params[name]]["momentum_buffer"]
    mask = sp.masks[name]
    expected = float(buf.abs()[mask].mean())
    assert _layer_statistic(sp.ctx, "momentum", name) == pytest.approx(expected)
    assert expected > 0


def test_statistic_falls_back_to_the_ema_without_a_buffer():
    model, opt, sp = train_snfs()
    opt.state.clear()
    name = "3.weight"
    mask = sp.masks[name]
    expected = float(sp.ctx.state["grad_ema"][name].abs()[mask].mean())
    assert _layer_statistic(sp.ctx, "momentum", name) == pytest.approx(expected)


def test_statistic_over_the_masks_before_death():
    _, _, sp = train_snfs()
    name = "3.weight"
    empty = torch.zeros_like(sp.masks[name])
    assert _layer_statistic(sp.ctx, "magnitude", name, empty) == 0.0
    full = torch.ones_like(sp.masks[name])
    w = sp.ctx.params[name].detach().abs()
    assert _layer_statistic(sp.ctx, "magnitude", name, full) == pytest.approx(float(w.mean()))


def test_layer_with_one_weight_killed_by_death_regrows():
    """ceil(r * 1) = 1 removes a layer's only weight; its pre-death statistic still earns it >= 1 back."""
    model = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sp = sparsetrain.attach(model, opt, "dst", density=0.5, update_every=1, redistribution="magnitude",
                            growth="random", total_steps=4)
    sp.ctx.masks["0.weight"] = torch.zeros(2, 4, dtype=torch.bool)
    sp.ctx.masks["0.weight"][0, 0] = True
    sp.apply_masks()
    with torch.no_grad():
        model[0].weight[0, 0] = 0.5
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    total = sum(int(m.sum()) for m in sp.masks.values())
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert int(sp.masks["0.weight"].sum()) >= 1
    assert sum(int(m.sum()) for m in sp.masks.values()) == total


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 10.0), st.integers(0, 20)), min_size=1, max_size=6),
       st.integers(0, 80))
def test_allocate_at_least_one_is_exact_and_capped(layers, total):
    weights = {f"l{i}": w for i, (w, _) in enumerate(layers)}
    caps = {f"l{i}": c for i, (_, c) in enumerate(layers)}
    out = allocate(total, weights, caps, at_least_one=True)
    assert sum(out.values()) == min(total, sum(caps.values()))
    assert all(0 <= out[n] <= caps[n] for n in out)
    eligible = [n for n in weights if weights[n] > 0 and caps[n] > 0]
    if total >= len(eligible):
        assert all(out[n] >= 1 for n in eligible)


def test_allocate_without_floor_keeps_old_shares():
    assert allocate(10, {"a": 1e-6, "b": 1.0}, {"a": 9, "b": 20}) == {"a": 0, "b": 10}
    assert allocate(10, {"a": 1e-6, "b": 1.0}, {"a": 9, "b": 20}, at_least_one=True) == {"a": 1, "b": 9}
    assert allocate(10, {"a": 0.0, "b": 1.0}, {"a": 9, "b": 20}, at_least_one=True) == {"a": 0, "b": 10}


def test_adjusted_death_spares_a_dense_growing_layer():
    """adjust_prune_rate (docs/algorithms.md, "Redistribution"): sparsity < 0.2 and share > 1/L gives r_l = min(s_l,
    r)."""
    from sparsetrain.ops.regrow import adjusted_death

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10, bias=False), nn.Linear(10, 4, bias=False), nn.Linear(4, 10, bias=False))
    sp = sparsetrain.attach(model, None, "static", density=0.5, total_steps=1)
    masks = sp.ctx.masks
    masks["0.weight"] = torch.ones(10, 20, dtype=torch.bool)  # sparsity 0, share 200/269 > 1/3: spared
    masks["1.weight"] = torch.ones(4, 10, dtype=torch.bool)
    masks["1.weight"][:, :1] = False                           # 36 active, sparsity 0.1, share 36/275 < 1/3
    masks["2.weight"] = torch.ones(10, 4, dtype=torch.bool)
    masks["2.weight"][:, 0] = False                            # 30 active, sparsity 0.25: ordinary rate
    old = dict(masks)
    removed = adjusted_death(lambda step, total: 0.5, "nonzeros")(sp.ctx)
    assert removed == {"0.weight": 0, "1.weight": 18, "2.weight": 15}  # ceil(.5 * 36), ceil(.5 * 30)
    assert [int(m.sum()) for m in masks.values()] == [200, 18, 15]
    w = model[2].weight.detach().abs()
    assert w[masks["2.weight"]].min() > w[old["2.weight"] & ~masks["2.weight"]].max()  # smallest |w| went


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, True])
def test_ema_momentum_outside_0_1_is_refused(bad):
    from sparsetrain.errors import SparsetrainError
    with pytest.raises(SparsetrainError, match=r"momentum must be in \[0, 1\)"):
        sparsetrain.create_method("snfs", momentum=bad, update_every=10)


def test_a_state_from_the_two_pass_ema_is_rescaled_once():
    """States saved before the lerp form hold m = sum of momentum^i g; the first step brings them to (1 - mu) m."""
    from types import SimpleNamespace

    from sparsetrain.methods.common import grad_ema
    old = SimpleNamespace(state={"grad_ema": {"w": torch.tensor([10.0])}})
    observe = grad_ema(0.9)
    observe(old, {"w": torch.tensor([1.0])})
    new = SimpleNamespace(state={"grad_ema": {"w": torch.tensor([1.0])}, "grad_ema_scaled": True})
    observe(new, {"w": torch.tensor([1.0])})
    assert float(old.state["grad_ema"]["w"]) == pytest.approx(float(new.state["grad_ema"]["w"]))
    assert old.state["grad_ema_scaled"] is True


def test_adjusted_death_on_rows_counts_and_drops_whole_groups():
    """The same rule over whole rows: n_l and s_l count rows, the rows of lowest mean |w| go."""
    from sparsetrain.ops.regrow import adjusted_death

    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.1, 0.2, 0.3], [5.0, 0.0, 0.0], [0.5, 0.5, 0.5]]))
        model[1].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.1, 0.1, 0.1, 0.1]]))
    sp = sparsetrain.attach(model, None, "static", density=1.0, total_steps=1)
    masks = sp.ctx.masks
    masks["0.weight"] = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)  # 3 of 4 rows
    removed = adjusted_death(lambda step, total: 0.5, "none", "row")(sp.ctx)
    # layer 0: 3 alive rows of 4 (sparsity 0.25, ordinary rate): ceil(1.5) = 2 rows go, the lowest mean |w|
    # over the whole row: row 1 (0.2) and row 0 (1.0); row 2 (5/3) stays with its one active weight
    assert masks["0.weight"].tolist() == [[False] * 3, [False] * 3, [True, False, False], [False] * 3]
    # layer 1: dense (sparsity 0) but its share 8 / (12 + 8) = 0.4 < 1/2 layers: rate 0.5, ceil(1) row goes
    assert masks["1.weight"].tolist() == [[True] * 4, [False] * 4]
    assert removed == {"0.weight": 6, "1.weight": 4}


def test_snfs_on_row_groups_and_n_m_keeps_its_structure():
    """SNFS with a granularity: masks stay whole rows (or exactly 2 of every 4), counts per layer unchanged."""
    for granularity, check in (("row", lambda m: bool(((m.sum(1) == 0) | (m.sum(1) == m.shape[1])).all())),
                               ("2:4", lambda m: bool((m.reshape(-1, 4).sum(1) == 2).all()))):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sp = sparsetrain.attach(model, opt, "snfs", density=0.5, update_every=2, total_steps=12,
                                granularity=granularity, redistribution="none")
        counts = {n: int(m.sum()) for n, m in sp.masks.items()}
        x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
        for _ in range(12):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        assert len(sp.history) == 6 and all(h["dropped"] == h["grown"] > 0 for h in sp.history[1:]), sp.history
        assert any(h["changed"] > 0 for h in sp.history[1:]), f"{granularity}: the topology never moved"
        assert {n: int(m.sum()) for n, m in sp.masks.items()} == counts
        assert all(check(m) for m in sp.masks.values()), granularity


def test_snfs_groups_with_redistribution_is_refused_with_what_to_do():
    from sparsetrain.errors import SparsetrainError
    with pytest.raises(SparsetrainError, match="granularity 'kernel' pass redistribution='none'"):
        sparsetrain.create_method("snfs", update_every=10, granularity="kernel")
    with pytest.raises(SparsetrainError, match="unknown granularity 'kernal'"):
        sparsetrain.create_method("snfs", update_every=10, granularity="kernal", redistribution="none")
