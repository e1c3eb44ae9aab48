"""Regrown weights restart at 0 with zero optimizer state (issue 16, bugs 1 and 2).

A weight that an update removes and a *later point* of the same topology event
grows back must start at 0 with zero momentum, as in the original code, which
applies the masks in between: GraNet's ``pruning()`` before its regeneration,
Chase's and MEST's ``truncate_weights`` between their drop and grow halves.
Inside one drop-and-grow op without that point (RigL, GraNet's own
regeneration) a dropped-and-regrown weight keeps its value
(``tests/test_ops.py::test_engine_zeroes_new_weights_and_keeps_regrown_values``).

The tests record, per update, every position a mask turned off (a recording
dict around ``ctx.masks``) and check the weights that are active again after
the event.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsetrain
from sparsetrain.ops import Op, Update


class DropRecorder(dict):
    """``ctx.masks`` stand-in that remembers every position a write turned off."""

    def __init__(self, masks):
        super().__init__(masks)
        self.dropped = {n: torch.zeros_like(m, dtype=torch.bool) for n, m in masks.items()}

    def __setitem__(self, name, mask):
        self.dropped[name] |= self[name] & ~mask.to(self[name].device)
        super().__setitem__(name, mask)

    def update(self, other=(), **kw):
        for name, mask in dict(other, **kw).items():
            self[name] = mask


def recording(update: Update, log: list) -> Update:
    """The same update, logging ``(step, dropped masks)`` each time it runs."""
    def run(ctx):
        ctx.masks = DropRecorder(ctx.masks)
        try:
            return update.op(ctx)
        finally:
            log.append((ctx.step, ctx.masks.dropped))
            ctx.masks = dict(ctx.masks)
    return Update(update.cadence, Op(run, needs_grad=update.op.needs_grad, name=update.op.name))


def train(method: sparsetrain.Method, model: nn.Module, steps: int, check, seed: int = 0):
    """Train ``model`` on fixed random batches; ``check(sp, opt, step)`` after every step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, method, total_steps=steps, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    n_in, n_out = model[0].in_features, model[-1].out_features
    for step in range(steps):
        x, y = torch.randn(16, n_in, generator=gen), torch.randint(0, n_out, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        check(sp, opt, step + 1)
    return sp


def mlp(*widths: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def regrown_after(log: list, sp, step: int, which: slice = slice(None)) -> dict[str, torch.Tensor]:
    """Positions dropped by the logged updates at ``step`` (``which`` of them) and active now."""
    at_step = [dropped for s, dropped in log if s == step][which]
    return {n: torch.stack([d[n] for d in at_step]).any(0) & sp.masks[n] for n in sp.masks} if at_step else {}


def assert_fresh(sp, opt, regrown: dict[str, torch.Tensor]) -> int:
    """Every regrown position is 0 with zero momentum; returns how many there are."""
    total = 0
    for n, where in regrown.items():
        p = sp.ctx.params[n]
        total += int(where.sum())
        assert torch.all(p.detach()[where] == 0), f"{n}: regrown weights kept their old value"
        assert torch.all(opt.state[p]["momentum_buffer"][where] == 0), f"{n}: regrown weights kept momentum"
    return total


def test_granet_weight_pruned_by_gmp_and_regenerated_restarts_at_zero():
    """Bug 1: dense-to-sparse GraNet on a 20-40-5 MLP, update every 10 of 120 steps, end 8/12."""
    method = sparsetrain.create_method("granet", density=0.1, initial_density=1.0, update_every=10,
                                       start=0.0, end=8 / 12, drop_fraction=0.5)
    gmp, regenerate = method.updates
    log: list = []
    method = sparsetrain.Method(init=method.init, updates=(recording(gmp, log), regenerate), name="granet")
    counts = []

    def check(sp, opt, step):
        if any(s == step for s, _ in log):
            counts.append(assert_fresh(sp, opt, regrown_after(log, sp, step)))

    train(method, mlp(20, 40, 5), 120, check)
    assert len(counts) >= 6 and counts[0] > 0  # the first event regrows weights GMP had just pruned


@pytest.mark.parametrize("mest", [True, False], ids=["soft_bound_phase", "dst_phase"])
def test_chase_weights_dropped_and_regrown_at_once_restart_at_zero(mest):
    """Bug 2, Chase: both the soft-memory-bound update and the DST update zero between their halves."""
    method = sparsetrain.create_method("chase", density=0.2, channel_sparsity=0.0, update_every=5, mest=mest,
                                       soft_end=0.9)
    log: list = []
    method = sparsetrain.Method(init=method.init, updates=tuple(recording(u, log) for u in method.updates),
                                name="chase")
    counts = []

    def check(sp, opt, step):
        if any(s == step for s, _ in log):
            counts.append(assert_fresh(sp, opt, regrown_after(log, sp, step)))

    train(method, mlp(20, 40, 5), 60, check)
    assert sum(counts) > 0  # some weights were dropped and regrown at once, so the check was not vacuous


@pytest.mark.parametrize("mode", ["em_s", "em"])
def test_mest_weights_dropped_and_regrown_at_once_restart_at_zero(mode):
    method = sparsetrain.create_method("mest", density=0.2, mode=mode, update_every=5, soft_end=0.5)
    log: list = []
    method = sparsetrain.Method(init=method.init, updates=tuple(recording(u, log) for u in method.updates),
                                name="mest")
    counts = []

    def check(sp, opt, step):
        if any(s == step for s, _ in log):
            counts.append(assert_fresh(sp, opt, regrown_after(log, sp, step)))

    train(method, mlp(20, 40, 5), 60, check)
    assert sum(counts) > 0


def test_rigl_keeps_the_value_of_a_weight_dropped_and_regrown_in_one_update():
    """RigL's reinit_when_same=False: a deliberate exception, kept (docs/algorithms.md, "Regrown weights")."""
    method = sparsetrain.create_method("rigl", density=0.2, update_every=5, drop_fraction=0.5)
    log: list = []
    method = sparsetrain.Method(init=method.init, updates=tuple(recording(u, log) for u in method.updates),
                                name="rigl")
    kept = []

    def check(sp, opt, step):
        if any(s == step for s, _ in log):
            for n, where in regrown_after(log, sp, step).items():
                kept.append(int((sp.ctx.params[n].detach()[where] != 0).sum()))

    train(method, mlp(20, 40, 5), 60, check)
    assert sum(kept) > 0
