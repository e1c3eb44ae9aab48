"""Shrink while training (attach(..., shrink=True)): the narrowed model is the masked model.

A Chase run with shrink=True is compared step by step with its masked twin (same seed, same
batches): outputs, per-layer counts, densities and masks agree; optimizer state is shaped like
its parameter; zeros stay zero; a state_dict of a shrunk run resumes bit for bit; bad input gets
one message each.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparsetrain
from sparsetrain.deploy.shrink import NARROWABLE, narrow, narrow_state
from sparsetrain.deploy.widths import apply_widths
from sparsetrain.errors import SparsetrainError
from sparsetrain.train.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

CHASE = {"density": 0.5, "channel_sparsity": 0.5, "channel_every": 4, "channel_offset": 0, "end": 0.8,
         "min_ratio": 0.2, "update_every": 3}


def _net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
                         nn.Conv2d(24, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 5)).to(dtype)


def _batch(step: int, shape=(4, 3, 6, 6), dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(*shape, generator=g).to(dtype), torch.randint(0, 5, (shape[0],), generator=g)


def _run(net, shrink: bool, steps: int, opt_cls=torch.optim.SGD, total=20, shape=(4, 3, 6, 6), **kw):
    opt = opt_cls(net.parameters(), lr=0.05, **({"momentum": 0.9} if opt_cls is torch.optim.SGD else {}))
    sp = sparsetrain.attach(net, opt, "chase", total_steps=total,
                            example_input=_batch(99, shape, next(net.parameters()).dtype)[0],
                            shrink=shrink, **{**CHASE, **kw})
    for t in range(steps):
        _step(net, opt, t, shape)
    return sp, opt


def _step(net, opt, t, shape=(4, 3, 6, 6)):
    x, y = _batch(t, shape, next(net.parameters()).dtype)
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()


def _kept(twin_sp, small: nn.Module) -> dict[str, dict[int, torch.Tensor]]:
    """Positions of the twin's tensors that the shrunk model keeps: the twin's alive channels (from its plan)."""
    plan, keep = twin_sp.ctx.state["chase"], {}
    for g, alive in plan["alive"].items():
        kept = torch.nonzero(alive).flatten()
        for param, dim, pos in plan["producers"][g] + plan["consumers"][g]:
            keep.setdefault(param, {})[dim] = pos[kept].flatten()
    for name, p in small.named_parameters():  # biases and the BatchNorm after each conv follow its rows
        module, _ = name.rsplit(".", 1)
        source = {"1": "0", "4": "3"}.get(module, module) + ".weight"
        if p.dim() == 1 and 0 in keep.get(source, {}):
            keep[name] = {0: keep[source][0]}
    return {n: keep.get(n, {}) for n, _ in small.named_parameters()}


def _check_invariants(sp, opt, net):
    for n, p in net.named_parameters():
        for key, value in opt.state.get(p, {}).items():
            if torch.is_tensor(value) and value.dim():
                assert value.shape == p.shape, (n, key)
    for n, p in sp.ctx.params.items():
        assert sp.masks[n].shape == p.shape and sp.fired[n].shape == p.shape
        assert not p[~sp.masks[n]].any(), n  # zeros stay zero
        for value in opt.state.get(p, {}).values():
            if torch.is_tensor(value) and value.shape == p.shape:
                assert not value[~sp.masks[n]].any(), n


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_shrunk_run_matches_its_masked_twin(opt_cls):
    # float64: the narrower convolutions sum in another order; Adam would amplify float32 rounding
    masked, small = _net(torch.float64), _net(torch.float64)
    sp_m, opt_m = _run(masked, False, 0, opt_cls)
    sp_s, opt_s = _run(small, True, 0, opt_cls)
    for t in range(12):
        _step(masked, opt_m, t)
        _step(small, opt_s, t)
        _check_invariants(sp_s, opt_s, small)
        # exact per-layer counts and the same density over the original sizes
        assert {n: sp_s.ctx.active(n) for n in sp_s.masks} == {n: sp_m.ctx.active(n) for n in sp_m.masks}
        assert {n: sp_s.ctx.numel(n) for n in sp_s.masks} == {n: sp_m.ctx.numel(n) for n in sp_m.masks}
        assert sp_s.density() == sp_m.density()
        assert [(r["numel"], r["active"]) for r in sp_s.report().rows] == \
            [(r["numel"], r["active"]) for r in sp_m.report().rows]
        assert sp_s.itop_rate() == pytest.approx(sp_m.itop_rate())
        x, _ = _batch(1000 + t, dtype=torch.float64)
        masked.eval(), small.eval()
        with torch.no_grad():
            torch.testing.assert_close(small(x), masked(x), rtol=1e-9, atol=1e-10)
        masked.train(), small.train()
        # masks and momentum of the shrunk run are the twin's, restricted to the kept channels
        keep = _kept(sp_m, small)
        for n in sp_s.masks:
            assert torch.equal(sp_s.masks[n], narrow(sp_m.masks[n], keep[n])), (t, n)
        pm = dict(masked.named_parameters())
        for n, p in small.named_parameters():
            for key, value in opt_s.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim():
                    torch.testing.assert_close(value, narrow(opt_m.state[pm[n]][key], keep[n]), rtol=1e-9,
                                               atol=1e-12)
    shrinks = [h for h in sp_s.history if "shrunk" in h]
    assert [h["step"] for h in shrinks] == [0, 4, 8, 12] and shrinks[1]["shrunk"] > 0
    assert shrinks[0]["parameters"] == sum(p.numel() for p in masked.parameters())
    assert shrinks[-1]["parameters"] == sum(p.numel() for p in small.parameters()) < shrinks[0]["parameters"]
    assert shrinks[0]["widths"]["3"] == [24, 16] and shrinks[-1]["widths"]["3"] == [small[3].out_channels,
                                                                                     small[3].in_channels]
    assert small[3].out_channels < 24 and small[4].num_features == small[3].out_channels == small[6].in_channels


def test_removed_channel_rows_are_exactly_the_frozen_ones():
    net = _net()
    sp, _ = _run(net, False, 4)
    alive = dict(sp.ctx.state["chase"]["alive"])
    widths = {"0": 16, "3": 24, "6": 16}
    assert set(alive) == set(widths) and sum(int((~a).sum()) for a in alive.values()) > 0
    sp.shrink()
    left = {g: int(a.sum()) for g, a in alive.items()}
    assert {g: int(a.numel()) for g, a in sp.ctx.state["chase"]["alive"].items()} == left
    assert all(bool(a.all()) for a in sp.ctx.state["chase"]["alive"].values())
    assert (net[0].out_channels, net[3].out_channels, net[6].out_channels) == (left["0"], left["3"], left["6"])
    assert net[3].in_channels == net[0].out_channels and net[6].in_channels == net[3].out_channels
    assert net[9].in_features == 16 * left["6"] and net[4].num_features == left["3"]
    assert sp.ctx.removed.get("3.weight", 0) == (24 * 16 - left["3"] * left["0"]) * 9
    assert sp.ctx.removed.get("0.weight", 0) == (16 - left["0"]) * 3 * 9
    assert sp.history[-1]["shrunk"] == sum(widths[g] - left[g] for g in widths)
    assert sp.shrink()["shrunk"] == 0  # nothing left to remove


def test_residual_network_follows_its_masked_twin():
    torch.manual_seed(0)
    net = create_model("resnet20").double()
    twin = copy.deepcopy(net)
    shape = (2, 3, 8, 8)
    sp, opt = _run(net, True, 8, shape=shape, channel_every=2, prune_skip=True)
    sp_m, opt_m = _run(twin, False, 8, shape=shape, channel_every=2, prune_skip=True)
    assert sum(bool(h.get("shrunk")) for h in sp.history) >= 2
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in twin.parameters())
    counts = [[(r["numel"], r["active"]) for r in s.report().rows] for s in (sp, sp_m)]
    assert counts[0] == counts[1]
    _check_invariants(sp, opt, net)
    net.eval(), twin.eval()
    with torch.no_grad():
        x = _batch(7, shape, torch.float64)[0]
        torch.testing.assert_close(net(x), twin(x), rtol=1e-9, atol=1e-10)


def test_state_dict_of_a_shrunk_run_resumes_bit_for_bit():
    net = _net()
    sp, opt = _run(net, True, 6)
    state = {"model": copy.deepcopy(net.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
             "sp": copy.deepcopy(sp.state_dict())}
    for t in range(6, 14):
        _step(net, opt, t)
    fresh = apply_widths(_net(), state["sp"]["width_spec"])
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.05, momentum=0.9)
    sp2 = sparsetrain.attach(fresh, opt2, "chase", total_steps=20, example_input=_batch(99)[0], shrink=True, **CHASE)
    fresh.load_state_dict(state["model"])
    sp2.load_state_dict(state["sp"])
    opt2.load_state_dict(state["opt"])
    for t in range(6, 14):
        _step(fresh, opt2, t)
    for (n, a), b in zip(net.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert all(torch.equal(sp.masks[n], sp2.masks[n]) for n in sp.masks)
    assert sp.density() == sp2.density() and sp.itop_rate() == sp2.itop_rate()


def test_a_shrunk_state_loaded_into_a_full_width_model_says_how_to_narrow_it():
    net = _net()
    sp, _ = _run(net, True, 5)
    fresh = _net()
    sp2 = sparsetrain.attach(fresh, torch.optim.SGD(fresh.parameters(), lr=0.1), "chase", total_steps=20,
                             example_input=_batch(99)[0], **CHASE)
    with pytest.raises(SparsetrainError, match="shrank while training.*apply_widths"):
        sp2.load_state_dict(sp.state_dict())


def test_narrow_state_narrows_what_is_filed_under_a_parameter():
    keep = {"w": {0: torch.tensor([0, 2])}}
    state = {"ema": {"w": torch.arange(3.0), "v": torch.arange(3.0)}, "n": 3, "other": [torch.ones(3)]}
    out = narrow_state(state, keep, {"w": torch.Size([3])})
    assert out["ema"]["w"].tolist() == [0.0, 2.0] and out["ema"]["v"].tolist() == [0.0, 1.0, 2.0]
    assert out["n"] == 3 and out["other"][0].shape == (3,)


# --------------------------------------------------------------------------- bad input
def test_a_method_that_never_removes_channels_has_nothing_to_shrink():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(SparsetrainError, match="'rigl' never removes whole channels.*nothing to shrink"):
        sparsetrain.attach(net, opt, "rigl", density=0.5, total_steps=10, shrink=True)
    with pytest.raises(SparsetrainError, match="nothing to shrink"):
        sparsetrain.attach(net, opt, "chase", density=0.5, channel_sparsity=0.0, total_steps=10, shrink=True)


def test_an_optimizer_whose_state_cannot_be_narrowed_is_named_before_training():
    net = _net()
    opt = torch.optim.LBFGS(net.parameters())
    with pytest.raises(SparsetrainError, match="LBFGS keeps state sparsetrain cannot narrow"):
        sparsetrain.attach(net, opt, "chase", total_steps=20, example_input=_batch(0)[0], shrink=True, **CHASE)
    with pytest.raises(SparsetrainError, match="shrink_every must be a positive int"):
        sparsetrain.attach(net, torch.optim.SGD(net.parameters(), lr=0.1), "chase", total_steps=20,
                           example_input=_batch(0)[0], shrink=True, shrink_every=0, **CHASE)


class _Functional(nn.Module):
    """A matmul with a raw 2-D parameter after the head: a weight the dependency graph cannot see as a layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, 2)
        self.mix = nn.Parameter(torch.randn(2, 2))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3))) @ self.mix


def _train(net, opt, x, steps):
    for _ in range(steps):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()


def test_a_raw_parameter_layer_is_reported_and_the_rest_still_shrinks():
    net = _Functional()
    x = torch.randn(2, 3, 6, 6)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="channels that pass through 'mix' stay"):
        sp = sparsetrain.attach(net, opt, "chase", total_steps=10, example_input=x, shrink=True,
                                **{**CHASE, "channel_every": 2, "exclude": ("mix",)})
        _train(net, opt, x, 4)
    assert any(h.get("shrunk") for h in sp.history) and net.conv.out_channels < 8
    assert net.head.in_features == net.conv.out_channels and net.mix.shape == (2, 2)


class _RawConv(nn.Module):
    """``F.conv2d`` over a raw ``nn.Parameter``: 8 channels in, 4 out, outside ``nn.Conv2d``."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 8, 3, 3) * 0.2)

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight, padding=1)


def _raw_conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), _RawConv(), nn.ReLU(),
                         nn.Conv2d(4, 12, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(12, 5))


@pytest.mark.parametrize("shrink", [False, True])
def test_a_functional_conv_on_a_raw_parameter_keeps_its_channels(shrink):
    """Regression: the dependency graph took ``F.conv2d(x, self.weight)`` for an element-wise op and paired
    conv 0's 8 channels with the 4 input columns of conv 5, so Chase's remove_channels raised an IndexError."""
    net = _raw_conv_net()
    x = torch.randn(4, 3, 8, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    with pytest.warns(UserWarning, match="channels that pass through '3.weight' stay"):
        sp = sparsetrain.attach(net, opt, "chase", total_steps=20, example_input=x, shrink=shrink,
                                include=["*.weight"], exclude=["1.*"], **{**CHASE, "channel_every": 2})
        _train(net, opt, x, 10)
    assert set(sp.ctx.state["chase"]["alive"]) == {"5"}  # conv 0's channels go through the raw conv: kept
    assert int(sp.masks["0.weight"].flatten(1).any(1).sum()) > 0 and net[3].weight.shape == (4, 8, 3, 3)
    assert sp.ctx.state["chase"]["alive"]["5"].numel() == (12 if not shrink else net[5].out_channels)
    if shrink:
        assert net[5].out_channels < 12 and net[9].in_features == net[5].out_channels
        _check_invariants(sp, opt, net)


def test_shrink_every_sets_the_cadence():
    net = _net()
    sp, _ = _run(net, True, 12, shrink_every=5)
    assert [h["step"] for h in sp.history if "shrunk" in h] == [0, 5, 10]


def test_a_graph_kept_alive_across_the_shrink_does_not_break_the_next_backward():
    """Regression: autograd cached each parameter's gradient accumulator with its old shape while the last
    step's output was alive (every loop that keeps ``out`` for its accuracy count)."""
    net = _net()
    sp, opt = _run(net, True, 0)
    kept = []
    for t in range(6):
        x, y = _batch(t)
        out = net(x)
        opt.zero_grad(set_to_none=False)  # grads narrowed with their parameters, or dropped
        nn.functional.cross_entropy(out, y).backward()
        opt.step()
        kept.append(out)
    assert any(h.get("shrunk") for h in sp.history)
    assert all(p.grad is None or p.grad.shape == p.shape for p in net.parameters())


def test_torch_compile_recompiles_once_per_shrink_and_computes_what_eager_does():
    net = _net()
    twin = copy.deepcopy(net)
    graphs = []

    def count_graphs(gm, example_inputs):  # a dynamo backend that runs the captured graph eagerly
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(net, backend=count_graphs)
    runs = [(compiled, *_run(compiled, True, 0)), (twin, *_run(twin, True, 0))]
    for t in range(12):
        for model, _, opt in runs:
            _step(model, opt, t)
    shrinks = [h["step"] for h in runs[0][1].history if h.get("shrunk")]
    # one graph at the start, one more after each shrink that a later step's forward saw
    assert len(shrinks) >= 2 and len(graphs) == 1 + len([s for s in shrinks if s < 12])
    net.eval(), twin.eval()
    with torch.no_grad():
        x = _batch(5)[0]
        assert torch.equal(compiled(x), twin(x))


def test_amp_training_shrinks_and_keeps_the_invariants():
    net = _net()
    sp, opt = _run(net, True, 0)
    scaler = torch.amp.GradScaler("cpu")
    for t in range(10):
        x, y = _batch(t)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _check_invariants(sp, opt, net)
    assert any(h.get("shrunk") for h in sp.history) and net[3].out_channels < 24


@pytest.mark.parametrize("opt_cls", NARROWABLE, ids=lambda c: c.__name__)
def test_every_optimizer_we_accept_gets_its_state_narrowed(opt_cls):
    net = _net()
    opt = opt_cls(net.parameters(), lr=0.01, **({"momentum": 0.9} if opt_cls is torch.optim.SGD else {}))
    sp = sparsetrain.attach(net, opt, "chase", total_steps=20, example_input=_batch(99)[0], shrink=True, **CHASE)
    for t in range(9):
        _step(net, opt, t)
    assert any(h.get("shrunk") for h in sp.history)
    _check_invariants(sp, opt, net)
    assert all(any(torch.is_tensor(v) and v.dim() for v in opt.state[p].values()) for p in net.parameters())


@pytest.mark.parametrize("granularity", ["weight", "kernel"])
def test_counts_of_a_shrunk_run_are_over_the_original_sizes_at_every_granularity(granularity):
    """Regression: the group ops counted a narrowed layer's groups at its new size, so a shrunk Chase
    on kernels grew back to its density of the *smaller* network and fell behind its masked twin."""
    def conv_net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(24, 5, 6), nn.Flatten()).double()
    masked, small = conv_net(), conv_net()
    kw = {"granularity": granularity, "bound": 0.2, "soft_end": 0.5}
    sp_m, opt_m = _run(masked, False, 0, **kw)
    sp_s, opt_s = _run(small, True, 0, **kw)
    for t in range(12):
        _step(masked, opt_m, t)
        _step(small, opt_s, t)
        assert {n: sp_s.ctx.active(n) for n in sp_s.masks} == {n: sp_m.ctx.active(n) for n in sp_m.masks}, t
    assert small[2].out_channels < 24  # it did shrink
