"""Engine mechanics: hooks, gradient snapshot, AMP, double attach."""

import pytest
import torch
from torch import nn

import sparsetrain
from sparsetrain import ops
from sparsetrain.errors import SparsetrainError


def model_and_opt():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def spy_method(seen):
    """A method whose update records the dense gradient it is given."""
    def record(ctx):
        seen.append({n: g.clone() for n, g in ctx.grads.items()})
    update = ops.when(lambda t, T: t == 1, ops.Op(record, needs_grad=True, name="spy"))
    return sparsetrain.Method(init=ops.init_random("uniform", 0.5), updates=(update,), name="spy")


def test_update_sees_dense_gradient_while_optimizer_sees_masked_one():
    model, opt = model_and_opt()
    seen = []
    sp = sparsetrain.attach(model, opt, spy_method(seen), total_steps=5)
    model(torch.randn(4, 6)).sum().backward()
    dense = {n: p.grad.clone() for n, p in sp.ctx.params.items()}
    opt.step()
    for n in dense:
        assert torch.equal(seen[0][n], dense[n])  # dense: inactive positions included
        assert torch.count_nonzero(sp.ctx.params[n].grad[~sp.masks[n]]) == 0  # masked for the optimizer


def test_growth_sees_unscaled_gradient_under_gradscaler():
    model, opt = model_and_opt()
    seen = []
    sp = sparsetrain.attach(model, opt, spy_method(seen), total_steps=5)
    x = torch.randn(4, 6)
    model(x).sum().backward()
    reference = {n: p.grad.clone() for n, p in sp.ctx.params.items()}
    opt.zero_grad()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(model(x).sum()).backward()
    scaler.step(opt)
    scaler.update()
    for n in reference:
        torch.testing.assert_close(seen[0][n], reference[n])


def test_no_update_no_snapshot():
    model, opt = model_and_opt()
    sp = sparsetrain.attach(model, opt, "rigl", density=0.3, update_every=10, total_steps=100)
    model(torch.randn(2, 6)).sum().backward()
    opt.step()
    assert sp.ctx.grads == {} and len(sp.history) == 1


def test_double_attach_is_refused():
    model, opt = model_and_opt()
    sparsetrain.attach(model, opt, "static", density=0.5, total_steps=5)
    with pytest.raises(SparsetrainError, match="already has a sparsifier"):
        sparsetrain.attach(model, opt, "static", density=0.5, total_steps=5)


def test_total_steps_is_required():
    model, opt = model_and_opt()
    with pytest.raises(SparsetrainError, match="total_steps"):
        sparsetrain.attach(model, opt, "rigl", density=0.1)


def test_skipped_step_is_not_counted():
    """GradScaler skips optimizer.step() on inf gradients: no step, no update."""
    model, opt = model_and_opt()
    sp = sparsetrain.attach(model, opt, "static", density=0.5, total_steps=5)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(model(torch.randn(2, 6)).sum()).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    scaler.step(opt)
    assert sp.step_count == 0


@pytest.mark.slow
def test_torch_compile_model():
    model, opt = model_and_opt()
    sp = sparsetrain.attach(model, opt, "rigl", density=0.3, update_every=2, total_steps=6)
    compiled = torch.compile(model)
    for _ in range(6):
        opt.zero_grad()
        compiled(torch.randn(4, 6)).sum().backward()
        opt.step()
    for n, p in sp.ctx.params.items():
        assert torch.count_nonzero(p[~sp.masks[n]]) == 0


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.1),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
])
def test_zeros_stay_zero_for_any_optimizer(make_opt):
    """Optimizers outside ZERO_PRESERVING get the post-step re-mask of weights and state."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    opt = make_opt(model.parameters())
    sp = sparsetrain.attach(model, opt, "set", density=0.3, update_every=2, total_steps=8)
    for _ in range(8):
        opt.zero_grad()
        model(torch.randn(4, 6)).sum().backward()
        opt.step(lambda: None) if isinstance(opt, torch.optim.SGD) else opt.step()
        for n, p in sp.ctx.params.items():
            assert torch.count_nonzero(p[~sp.masks[n]]) == 0
            for v in opt.state[p].values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    assert torch.count_nonzero(v[~sp.masks[n]]) == 0


def test_example_input_and_data_reach_the_method_context():
    """attach() hands example_input / data / loss_fn to the method's init op (Chase, SNIP, GraSP read them)."""
    from sparsetrain.methods import Method

    seen = {}

    def init(ctx):
        seen.update(example=ctx.example_input, batches=list(ctx.data), loss=ctx.loss_fn)
        return ops.init_random("uniform", 0.5)(ctx)

    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(2, 4), torch.tensor([0, 1])
    sparsetrain.attach(net, opt, Method(init=init), total_steps=10, example_input=x, data=[(x, y)],
                       loss_fn=torch.nn.functional.cross_entropy)
    assert seen["example"] is x and len(seen["batches"]) == 1 and seen["loss"] is torch.nn.functional.cross_entropy


def test_attach_with_the_optimizer_forgotten_or_a_meta_model_says_what_to_do():
    import torch
    from torch import nn

    import sparsetrain
    from sparsetrain.errors import SparsetrainError
    with pytest.raises(SparsetrainError, match="the second argument is the optimizer"):
        sparsetrain.attach(nn.Linear(4, 4), "rigl", density=0.1, total_steps=10)
    meta = nn.Linear(4, 4, device="meta")
    with pytest.raises(SparsetrainError, match="meta device"):
        sparsetrain.attach(meta, torch.optim.SGD(meta.parameters(), lr=0.1), "rigl", total_steps=10)
