"""Mask ops on hand-worked tensors (docs/algorithms.md, "Death and growth" and "GMP")."""

import torch
from torch import nn

import sparsetrain
from sparsetrain import ops
from sparsetrain.context import SparseContext
from sparsetrain.methods.common import death, regeneration
from sparsetrain.ops.regrow import allocate, regrow
from sparsetrain.schedules import constant

W8 = [0.5, -0.1, 0.0, 0.3, -0.7, 0.0, 0.2, 0.05]
G8 = [0.9, 0.8, 0.7, 0.1, 0.2, 0.6, 0.3, 0.05]
ACTIVE8 = [True, True, False, True, True, False, True, True]


def make_ctx(weights, mask, grad=None):
    p = nn.Parameter(torch.tensor(weights))
    ctx = SparseContext(params={"w": p}, masks={"w": torch.tensor(mask)}, optimizer=None, total_steps=100,
                        generator=torch.Generator().manual_seed(0))
    if grad is not None:
        ctx.grads = {"w": torch.tensor(grad)}
    return ctx


def test_magnitude_drop_gradient_grow_on_8_elements():
    # 6 active, r = 0.5 -> drop ceil(3) = 3 smallest |w|: positions 7 (0.05), 1 (-0.1), 6 (0.2)
    ctx = make_ctx(W8, ACTIVE8, G8)
    removed = death("magnitude", constant(0.5))(ctx)
    assert removed == {"w": 3}
    assert ctx.masks["w"].tolist() == [True, False, False, True, True, False, False, False]
    # regrow 3 by |g| among inactive {1: .8, 2: .7, 5: .6, 6: .3, 7: .05} -> 1, 2, 5
    grown = regrow("gradient")(ctx, removed)
    assert grown == {"w": 3}
    assert ctx.masks["w"].tolist() == [True, True, True, True, True, True, False, False]


def test_rounding_ceil_vs_floor():
    ctx = make_ctx(W8, ACTIVE8)
    assert death("magnitude", constant(0.3))(ctx) == {"w": 2}  # GraNet: ceil(1.8)
    ctx = make_ctx(W8, ACTIVE8)
    assert death("magnitude", constant(0.3), rounding="floor")(ctx) == {"w": 1}  # RigL: floor(1.8)
    ctx = make_ctx([1.0] * 10, [True] * 10)
    assert death("magnitude", constant(0.3))(ctx) == {"w": 3}  # 0.3 * 10 is not 4


def test_set_sign_split_removes_both_sides_closest_to_zero():
    w = [0.5, -0.1, 0.3, -0.7, 0.2, 0.05, -0.02, -0.3]
    ctx = make_ctx(w, [True] * 8)
    death("set", constant(0.5))(ctx)  # k = 4: two positives, two negatives
    removed = [i for i, keep in enumerate(ctx.masks["w"].tolist()) if not keep]
    assert removed == [1, 4, 5, 6]  # 0.05, 0.2 and -0.02, -0.1


def test_threshold_drop():
    ctx = make_ctx([0.5, 0.0005, -0.002, 0.001], [True] * 4)
    assert death("threshold", constant(0.0))(ctx) == {"w": 2}


def test_allocate_sums_exactly_with_caps():
    assert allocate(10, {"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 1, "b": 9, "c": 9}) == {"a": 1, "b": 3, "c": 6}
    out = allocate(7, {"a": 0.3, "b": 0.3, "c": 0.3}, {"a": 5, "b": 5, "c": 5})
    assert sum(out.values()) == 7
    assert allocate(50, {"a": 1.0}, {"a": 4}) == {"a": 4}


def test_prune_to_global_keeps_largest_overall():
    a, b = nn.Parameter(torch.tensor([0.1, 0.9, 0.3])), nn.Parameter(torch.tensor([0.5, 0.05]))
    ctx = SparseContext(params={"a": a, "b": b}, masks={"a": torch.ones(3, dtype=torch.bool),
                                                         "b": torch.ones(2, dtype=torch.bool)},
                        optimizer=None, total_steps=10, generator=torch.Generator())
    ops.prune_to(constant(0.4), scope="global")(ctx)  # keep round(0.4 * 5) = 2: 0.9 and 0.5
    assert ctx.masks["a"].tolist() == [False, True, False] and ctx.masks["b"].tolist() == [True, False]


def test_engine_zeroes_new_weights_and_keeps_regrown_values():
    """Through the engine: a weight dropped and regrown keeps its value; new ones start at 0."""
    lin = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([W8]))
    opt = torch.optim.SGD(lin.parameters(), lr=0.0, momentum=0.9)
    update = ops.when(lambda t, T: t == 1, regeneration("magnitude", "gradient", constant(0.5)))
    init = ops.Op(lambda ctx: ctx.masks.__setitem__("weight", torch.tensor([ACTIVE8])))
    method = sparsetrain.Method(init=init, updates=(update,))
    sp = sparsetrain.attach(lin, opt, method, total_steps=10)
    lin.weight.grad = torch.tensor([G8])
    opt.step()  # lr 0: weights unchanged, then the update runs
    assert sp.masks["weight"].tolist() == [[True, True, True, True, True, True, False, False]]
    assert torch.equal(lin.weight.detach()[0], torch.tensor([0.5, -0.1, 0.0, 0.3, -0.7, 0.0, 0.0, 0.0]))
    assert torch.count_nonzero(opt.state[lin.weight]["momentum_buffer"][~sp.masks["weight"]]) == 0
    assert sp.history[-1]["dropped"] == 3 and sp.history[-1]["grown"] == 3
