"""Shrink while training with the methods that empty whole filters (issue 14): prune / static / RigL / SET at
``granularity="filter"``. A shrunk run is compared with its masked twin (same seed, batches and example input)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import sparsetrain
from sparsetrain.errors import SparsetrainError
from test_shrink import _check_invariants

pytestmark = pytest.mark.usefixtures("one_thread")


class _Block(nn.Module):
    """A residual block: its inner width may go, the channels tied by the addition go only all together."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.c2, self.b2 = nn.Conv2d(12, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), _Block(8), _Block(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).double()


def _batch(t: int):
    g = torch.Generator().manual_seed(t)
    return torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (4,), generator=g)


def _twins(method: str, steps: int, total: int = 20, seed: int = 0, **kw):
    """Masked and shrunk runs of ``method``, stepped together; invariants checked after every step."""
    runs = []
    for shrink in (False, True):
        net = _net()
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        sp = sparsetrain.attach(net, opt, method, total_steps=total, seed=seed, example_input=_batch(99)[0],
                                shrink=shrink, **kw)
        runs.append((net, opt, sp))
    for t in range(steps):
        x, y = _batch(t)
        for net, opt, _ in runs:
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        (masked, _, sp_m), (small, opt_s, sp_s) = runs
        _check_invariants(sp_s, opt_s, small)
        assert {n: sp_s.ctx.numel(n) for n in sp_s.masks} == {n: sp_m.ctx.numel(n) for n in sp_m.masks}
        assert {n: sp_s.ctx.active(n) for n in sp_s.masks} == {n: sp_m.ctx.active(n) for n in sp_m.masks}
        assert {n: _filters(m) for n, m in sp_s.masks.items()} == {n: _filters(m) for n, m in sp_m.masks.items()}
        masked.eval(), small.eval()
        with torch.no_grad():
            probe = _batch(1000 + t)[0]
            torch.testing.assert_close(small(probe), masked(probe), rtol=1e-9, atol=1e-10)
        masked.train(), small.train()
    return runs


def _filters(mask: torch.Tensor) -> int:
    return int(mask.flatten(1).any(1).sum())


def _shrinks(sp) -> list[tuple[int, int]]:
    return [(h["step"], h["shrunk"]) for h in sp.history if h.get("shrunk")]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_filter_pruning_shrinks_and_keeps_its_masked_twins_filters(scope):
    """Regression (issue 14): filter pruning counted its targets from the current shapes, so after a shrink it
    pruned against the narrowed widths; the targets now count the original filters, as Chase counts channels."""
    runs = _twins("prune", 20, sparsity=0.5, granularity="filter", schedule="agp", end=0.6, update_every=2,
                  scope=scope)
    (masked, _, sp_m), (small, _, sp_s) = runs
    assert len(_shrinks(sp_s)) >= 2 and sum(p.numel() for p in small.parameters()) < \
        sum(p.numel() for p in masked.parameters())
    assert small[3].c1.out_channels < 12 and small[3].c2.in_channels == small[3].c1.out_channels
    conv = [n for n in sp_m.masks if n != "7.weight"]
    if scope == "layer":  # exactly half of every conv's original filters are kept
        want = {"0.weight": 4, "3.c1.weight": 6, "3.c2.weight": 4, "4.c1.weight": 6, "4.c2.weight": 4}
        assert {n: _filters(sp_s.masks[n]) for n in conv} == want
    # a closed channel's readers are masked in both runs, and the channel is gone from the shrunk model
    assert sp_m.ctx.state["chase"]["total"] == sp_s.ctx.state["chase"]["total"]
    closed = sum(int((~a).sum()) for a in sp_m.ctx.state["chase"]["alive"].values())
    assert closed == sum(s for _, s in _shrinks(sp_s)) > 0


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_a_regrowing_method_shrinks_only_after_its_last_update(method):
    runs = _twins(method, 20, density=0.5, granularity="filter", update_every=2, end=0.5, distribution="uniform")
    shrinks = _shrinks(runs[1][2])
    assert shrinks and all(step >= 10 for step, _ in shrinks)  # nothing before the window (t < 10) ends
    assert runs[1][0][3].c1.out_channels < 12


def test_static_filter_masks_shrink_at_the_first_step():
    runs = _twins("static", 3, density=0.5, granularity="filter", distribution="uniform")
    assert [step for step, _ in _shrinks(runs[1][2])] == [1]


@pytest.mark.parametrize("kw", [{"method": "rigl"}, {"method": "rigl", "granularity": "2:4"},
                                {"method": "prune", "granularity": "weight"},
                                {"method": "prune", "granularity": "kernel"}])
def test_methods_that_empty_no_channel_on_purpose_have_nothing_to_shrink(kw):
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    kw = dict(kw)
    with pytest.raises(SparsetrainError, match="nothing to shrink"):
        sparsetrain.attach(net, torch.optim.SGD(net.parameters(), lr=0.1), kw.pop("method"), total_steps=10,
                           example_input=torch.randn(2, 4, 8, 8), shrink=True, **kw)


def test_a_shrunk_filter_pruning_run_resumes_bit_for_bit():
    from sparsetrain.deploy.widths import apply_widths
    kw = {"sparsity": 0.5, "granularity": "filter", "schedule": "agp", "end": 0.6, "update_every": 2}

    def attach(net):
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        return opt, sparsetrain.attach(net, opt, "prune", total_steps=20, example_input=_batch(99)[0], shrink=True,
                                       **kw)

    def step(net, opt, t):
        x, y = _batch(t)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    net = _net()
    opt, sp = attach(net)
    for t in range(8):
        step(net, opt, t)
    assert _shrinks(sp)
    saved = copy.deepcopy({"model": net.state_dict(), "opt": opt.state_dict(), "sp": sp.state_dict()})
    for t in range(8, 20):
        step(net, opt, t)
    fresh = apply_widths(_net(), saved["sp"]["width_spec"])
    opt2, sp2 = attach(fresh)
    fresh.load_state_dict(saved["model"])
    sp2.load_state_dict(saved["sp"])
    opt2.load_state_dict(saved["opt"])
    for t in range(8, 20):
        step(fresh, opt2, t)
    for (n, a), b in zip(net.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert all(torch.equal(sp.masks[n], sp2.masks[n]) for n in sp.masks)


def test_every_method_with_a_filter_granularity_declares_a_shrink_and_none_does_at_weight_level():
    from sparsetrain.methods.registry import list_methods, method_signature
    with_filter = [m for m in list_methods() if "granularity" in method_signature(m).parameters]
    assert {"prune", "static", "rigl", "set", "dst"} <= set(with_filter)
    for name in with_filter:
        # methods that update once per epoch need its length
        extra = {"steps_per_epoch": 10} if "steps_per_epoch" in method_signature(name).parameters else {}
        if name in ("prune", "static", "rigl", "set", "dst"):
            assert sparsetrain.create_method(name, granularity="filter").shrink is not None, name
        # Chase removes channels by its own channel pruning, whatever granularity its weight-level DST uses
        channel_pruning = name == "chase"
        weight_level = sparsetrain.create_method(name, granularity="weight", **extra)
        assert (weight_level.shrink is not None) == channel_pruning, name


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["prune", "static", "rigl", "set"]), density=st.floats(0.2, 0.8),
       seed=st.integers(0, 1000))
def test_property_every_shrinkable_filter_method_computes_its_masked_twins_function(method, density, seed):
    kw = {"granularity": "filter", "density": density, "seed": seed}
    if method == "prune":
        kw.update(schedule="agp", end=0.5, update_every=2)
    else:
        kw.update(distribution="uniform", **({} if method == "static" else {"update_every": 2, "end": 0.4}))
    _twins(method, 12, total=12, **kw)  # outputs, counts and kept filters equal after every step
