"""Method-level behaviour: each method does what its paper's algorithm box says."""

import pytest
import torch
from torch import nn

import sparsetrain
from sparsetrain.core.topk import exact_count
from sparsetrain.distributions import uniform_dense_classifier
from sparsetrain.errors import SparsetrainError
from sparsetrain.methods.granet import SPARSE_INITS


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 4))


def train(model, sp, opt, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 16, generator=g)
        y = torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def run(method, steps=40, **kw):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, method, total_steps=steps, **kw)
    train(model, sp, opt, steps)
    return model, sp


def layer_counts(sp):
    return {n: int(torch.count_nonzero(m)) for n, m in sp.masks.items()}


def test_registry_lists_and_globs():
    names = sparsetrain.list_methods()
    for expected in ["static", "set", "rigl", "snfs", "dst", "mest", "gmp", "gmp_uniform", "granet",
                     "granet_uniform"]:
        assert expected in names
    assert sparsetrain.list_methods("*rig*") == ["rigl"]
    assert sparsetrain.method_info("granet")["paper"].startswith("Liu")


def test_every_method_takes_a_granularity_with_weight_as_default():
    from sparsetrain.methods import method_signature
    for name in sparsetrain.list_methods():
        params = method_signature(name).parameters
        assert "granularity" in params, f"{name} takes no granularity"
        assert params["granularity"].default == "weight", f"{name}: granularity defaults to something else"
        with pytest.raises(SparsetrainError, match="unknown granularity 'kernal'. Did you mean: kernel"):
            sparsetrain.create_method(name, granularity="kernal", **({"update_every": 10} if name == "snfs" else {}))


def test_unknown_method_lists_close_names():
    with pytest.raises(SparsetrainError, match="Did you mean: rigl"):
        sparsetrain.create_method("rigll")


def test_unknown_argument_lists_valid_ones():
    with pytest.raises(SparsetrainError, match="update_every"):
        sparsetrain.create_method("rigl", delta=100)


@pytest.mark.parametrize("initial", [1.0, 0.5])
def test_gmp_and_granet_reach_final_density_exactly(initial):
    total = 16 * 32 + 32 * 24 + 24 * 4
    for method in ["gmp", "granet"]:  # global: the total is exact
        _, sp = run(method, density=0.1, initial_density=initial, update_every=4, end=0.5)
        assert sum(layer_counts(sp).values()) == exact_count(0.1, total), method
    for method in ["gmp_uniform", "granet_uniform"]:  # per layer: each layer is exact
        _, sp = run(method, density=0.1, initial_density=initial, update_every=4, end=0.5)
        dens = uniform_dense_classifier(sp.ctx.shapes, 0.1, "4.weight")
        assert layer_counts(sp) == {n: exact_count(d, sp.ctx.numel(n)) for n, d in dens.items()}, method


def test_granet_dense_to_sparse_starts_dense_and_regenerates_after_window():
    model, sp = run("granet", density=0.2, initial_density=1.0, update_every=4, end=0.5, steps=60)
    assert sp.history[0]["init"] == "dense"
    late = [h for h in sp.history if h["step"] > 30 and "dropped" in h]
    assert late and all(h["dropped"] == h["grown"] for h in late)
    assert any(h["changed"] > 0 for h in late)
    assert sp.itop_rate() == 1.0  # it started dense


def test_gmp_uniform_holds_classifier_at_20_percent():
    _, sp = run("gmp_uniform", density=0.1, update_every=4, end=0.5)
    counts = layer_counts(sp)
    assert counts["4.weight"] == exact_count(0.2, 24 * 4)


@pytest.mark.parametrize("mode", SPARSE_INITS)
def test_every_granet_sparse_init_runs(mode):
    _, sp = run("granet", density=0.2, initial_density=0.5, sparse_init=mode, update_every=4, end=0.5)
    assert sp.density() <= 0.2 + 1e-9


def test_granet_options_are_honoured():
    """The original CIFAR code ignored --prune/--growth/--redistribution; ours must not."""
    masks = {}
    for growth in ["gradient", "random", "momentum"]:
        _, sp = run("granet", density=0.2, initial_density=0.2, growth=growth, update_every=4)
        masks[growth] = torch.cat([m.flatten() for m in sp.masks.values()])
    assert not torch.equal(masks["gradient"], masks["random"])
    assert not torch.equal(masks["gradient"], masks["momentum"])
    _, base = run("granet", density=0.2, initial_density=0.2, update_every=4)
    _, redis = run("granet", density=0.2, initial_density=0.2, update_every=4, redistribution="nonzeros")
    assert sum(layer_counts(redis).values()) == sum(layer_counts(base).values())
    assert layer_counts(redis) != layer_counts(base)


def test_rigl_keeps_layer_counts_and_stops_at_end():
    _, sp = run("rigl", density=0.2, update_every=5, end=0.5, steps=40)
    first = sp.history[0]
    assert first["init"] == "random[erk]"
    steps = [h["step"] for h in sp.history[1:]]
    assert steps == [5, 10, 15]
    assert sp.itop_rate() > sp.density()


def test_static_never_changes():
    model = mlp()
    opt = torch.optim.Adam(model.parameters())
    sp = sparsetrain.attach(model, opt, "static", density=0.3, total_steps=20)
    before = {n: m.clone() for n, m in sp.masks.items()}
    train(model, sp, opt, 20)
    assert all(torch.equal(before[n], sp.masks[n]) for n in before)
    assert sp.itop_rate() == pytest.approx(sp.density())


def test_snfs_needs_epoch_length():
    with pytest.raises(SparsetrainError, match="steps_per_epoch"):
        sparsetrain.create_method("snfs")
    _, sp = run("snfs", density=0.2, steps_per_epoch=10, steps=40)
    assert [h["step"] for h in sp.history[1:]] == [10, 20, 30]  # not after the last epoch
    assert "grad_ema" in sp.ctx.state


def test_mest_soft_bound_above_target_then_exact():
    total = 16 * 32 + 32 * 24 + 24 * 4
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, "mest", density=0.2, bound=0.1, update_every=4, soft_end=0.5,
                            total_steps=40)
    assert sp.density() > 0.25  # starts at d + bound
    train(model, sp, opt, 40)
    assert sum(layer_counts(sp).values()) == pytest.approx(0.2 * total, abs=3)
    phase2 = [h for h in sp.history if h["step"] > 20]
    assert all(h["dropped"] == h["grown"] for h in phase2)


def test_report_and_repr():
    _, sp = run("set", density=0.25, update_every=5)
    text = str(sp.report())
    assert "0.weight" in text and "total" in text
    assert "set" in repr(sp)


def test_explicit_step_mode_matches_hooks():
    results = []
    for hooks in (True, False):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sp = sparsetrain.attach(model, opt, "rigl", density=0.2, update_every=3, total_steps=12, hooks=hooks)
        g = torch.Generator().manual_seed(1)
        for _ in range(12):
            opt.zero_grad()
            model(torch.randn(4, 16, generator=g)).sum().backward()
            sp.step()
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_detach_leaves_a_plain_model():
    model, sp = run("rigl", density=0.2, update_every=5)
    opt = sp.optimizer
    sp.detach()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    sparsetrain.attach(model, opt, "static", density=0.5, total_steps=5)  # re-attach works


def test_gmp_uniform_classifier_rule_never_asks_a_layer_to_regrow():
    """Regression: with a classifier too big for the 20 % rule at the final density, the rule used to apply
    mid-way and switch off at the end, so the first layer was asked to grow back (1 active, target 3)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 2, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3, bias=False))
    opt = torch.optim.Adam(model.parameters())
    sp = sparsetrain.attach(model, opt, "gmp_uniform", density=0.09375, update_every=3, start=0.125, end=0.5,
                            total_steps=24)
    for _ in range(24):
        opt.zero_grad()
        model(torch.randn(4, 2, 5, 5)).sum().backward()
        opt.step()
    assert layer_counts(sp) == {"0.weight": exact_count(0.09375, 36), "3.weight": exact_count(0.09375, 54)}
