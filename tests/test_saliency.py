"""Saliency scores (sparsetrain.saliency) against hand formulas and independent autograd (docs/algorithms.md, "Rare
Gems / Gem-Miner and edge-popup" and "Pruning at initialisation").

- SNIP: |g * w| with g from the closed-form softmax-regression gradient.
- GraSP: -w * (H g) with H g from ``torch.autograd.functional.hvp`` on a
  functional copy of the net (paper's sign: remove the highest, keep the lowest).
- SynFlow: the hand formula for two layers, and the conservation law (every
  layer's saliencies sum to R) on bias-free MLP and conv chains.
- Scoring leaves weights, BatchNorm statistics, modes, dtypes and the RNG as they were.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sparsetrain.errors import SparsetrainError
from sparsetrain.saliency import grasp_scores, preserved, snip_scores, synflow_scores, take_batches

pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}


def _batch(n: int = 12, d: int = 4, classes: int = 3, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


# --------------------------------------------------------------------------- SNIP
def test_snip_matches_the_softmax_regression_gradient_by_hand():
    """One linear layer, no bias: dL/dW = (softmax(X W^T) - Y)^T X / N, score = |g * W|."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=False).double()
    x, y = _batch()
    probs = torch.softmax(x @ model.weight.detach().T, dim=1)
    g = (probs - F.one_hot(y, 3).double()).T @ x / x.shape[0]
    scores = snip_scores(model, {"weight": model.weight}, [(x, y)])
    torch.testing.assert_close(scores["weight"], (g * model.weight.detach()).abs())


def test_snip_sums_the_gradients_of_several_batches_before_the_absolute_value():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    params = _weights(model)
    b1, b2 = _batch(seed=1), _batch(seed=2)
    g1 = torch.autograd.grad(F.cross_entropy(model(b1[0]), b1[1]), list(params.values()))
    g2 = torch.autograd.grad(F.cross_entropy(model(b2[0]), b2[1]), list(params.values()))
    scores = snip_scores(model, params, [b1, b2])
    for (n, p), a, b in zip(params.items(), g1, g2, strict=True):
        torch.testing.assert_close(scores[n], ((a + b) * p.detach()).abs())


def test_snip_uses_the_given_loss():
    torch.manual_seed(2)
    model = nn.Linear(4, 3, bias=False).double()
    x, y = _batch()

    def mse(out, target):
        return ((out - F.one_hot(target, 3).double()) ** 2).mean()
    g = torch.autograd.grad(mse(model(x), y), model.weight)[0]
    scores = snip_scores(model, {"weight": model.weight}, [(x, y)], mse)
    torch.testing.assert_close(scores["weight"], (g * model.weight.detach()).abs())


# --------------------------------------------------------------------------- GraSP
def _independent_hg(model: nn.Module, names: list[str], x, y, temperature: float) -> list[torch.Tensor]:
    """H g of L(w) = CE(f(x; w) / T, y) by torch.autograd.functional.hvp on a functional copy."""
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    start = tuple(model.get_parameter(n).detach().clone() for n in names)

    def loss(*ws):
        out = functional_call(model, {**fixed, **dict(zip(names, ws, strict=True))}, (x,))
        return F.cross_entropy(out / temperature, y)
    w = tuple(t.requires_grad_() for t in start)
    g = torch.autograd.grad(loss(*w), w)
    _, hg = torch.autograd.functional.hvp(loss, tuple(t.detach() for t in start), tuple(gi.detach() for gi in g))
    return list(hg)


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_is_minus_w_times_hessian_gradient_product(temperature):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    params = _weights(model)
    x, y = _batch(seed=3)
    hg = _independent_hg(model, list(params), x, y, temperature)
    scores = grasp_scores(model, params, [(x, y)], temperature=temperature)
    for (n, p), h in zip(params.items(), hg, strict=True):
        expected = -(p.detach() * h)
        assert expected.abs().max() > 0
        torch.testing.assert_close(scores[n], expected, rtol=1e-7, atol=1e-12 / temperature ** 3)


def test_grasp_sign_on_a_hand_case():
    """Softmax regression W (2x2), inputs e1, e2 with labels 0, 1, near W = 0.

    At W = 0 the probabilities are 1/2: g = (P - Y)^T X / 2 = [[-1/4, 1/4], [1/4, -1/4]]. The
    cross-entropy Hessian is block-diagonal over the columns (one per sample), each block
    (diag(p) - p p^T) / 2, which maps a zero-sum column v to v / 4: H g = g / 4. With W = eps * g
    the paper's score S = -W * H g = -eps g^2 / 4 is negative everywhere (GraSP would keep these:
    removing them would reduce the gradient flow), and W = 0 scores exactly 0.
    """
    model = nn.Linear(2, 2, bias=False).double()
    x = torch.eye(2, dtype=torch.float64)
    y = torch.tensor([0, 1])
    with torch.no_grad():
        model.weight.zero_()
    scores = grasp_scores(model, {"weight": model.weight}, [(x, y)], temperature=1.0)
    assert torch.equal(scores["weight"].abs(), torch.zeros(2, 2, dtype=torch.float64))
    g = torch.tensor([[-0.25, 0.25], [0.25, -0.25]], dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        model.weight.copy_(eps * g)
    scores = grasp_scores(model, {"weight": model.weight}, [(x, y)], temperature=1.0)
    torch.testing.assert_close(scores["weight"], -(eps * g) * (g / 4), rtol=1e-4, atol=0.0)
    assert (scores["weight"] < 0).all()


def test_grasp_on_batchnorm_conv_net_runs_and_restores_the_statistics():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(8, 1, 8), torch.randint(0, 3, (8,))
    scores = grasp_scores(model, _weights(model), [(x, y)])
    assert all(torch.isfinite(s).all() for s in scores.values())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# --------------------------------------------------------------------------- SynFlow
def test_synflow_two_layer_hand_formula():
    """R = 1^T |W2| |W1| 1: score(W1[i, j]) = |W1[i, j]| * sum_k |W2[k, i]|,
    score(W2[k, i]) = |W2[k, i]| * sum_j |W1[i, j]|."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    w1, w2 = model[0].weight.detach().abs().double(), model[2].weight.detach().abs().double()
    scores = synflow_scores(model, _weights(model), torch.randn(5, 3))
    torch.testing.assert_close(scores["0.weight"], w1 * w2.sum(0)[:, None])
    torch.testing.assert_close(scores["2.weight"], w2 * w1.sum(1)[None, :])


def _chain(kind: str) -> nn.Module:
    torch.manual_seed(6)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 7, bias=False), nn.ReLU(),
                             nn.Linear(7, 3, bias=False))
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(3, 4, 3, bias=False),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 3, bias=False))


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("masked", [False, True])
def test_synflow_conservation_every_layer_sums_to_r(kind, masked):
    """Tanaka et al. 2020, theorem 2: without biases, each layer's synaptic saliencies sum to R."""
    model = _chain(kind)
    params = _weights(model)
    x = torch.randn(2, 6) if kind == "mlp" else torch.randn(2, 2, 5, 5)
    g = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(p.shape, generator=g) < 0.7 for n, p in params.items()} if masked else None
    scores = synflow_scores(model, params, x, masks)
    with torch.no_grad():  # R of the masked |W| chain, computed directly
        for n, p in params.items():
            p.data = p.data.abs().double() * (masks[n].double() if masked else 1.0)
        r = float(model(torch.ones((1, *x.shape[1:]), dtype=torch.float64)).sum())
    assert r > 0
    for n, score in scores.items():
        assert float(score.sum()) == pytest.approx(r, rel=1e-10), n


def test_synflow_leaves_the_model_exactly_as_it_was():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3))
    with torch.no_grad():  # negative values everywhere, also in the BN statistics
        model[1].running_mean.uniform_(-1, 1)
        model[1].bias.uniform_(-1, 1)
    model.train()
    model[1].eval()
    params = _weights(model)
    ids = {n: id(p) for n, p in model.named_parameters()}
    storage = {n: p.data.data_ptr() for n, p in model.named_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 1, 8)
    rng = torch.get_rng_state()
    synflow_scores(model, params, x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and not model[1].training and model[0].training
    for n, p in model.named_parameters():
        assert id(p) == ids[n] and p.data.data_ptr() == storage[n] and p.dtype == torch.float32
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
        if v.is_floating_point():  # bit-identical, -0.0 included
            assert torch.equal(torch.signbit(v), torch.signbit(before[k])), k


def test_snip_keeps_batchnorm_statistics_modes_and_rng():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 6, 3))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 1, 8),
                                                                        torch.randint(0, 3, (16,))),
                                         batch_size=8, shuffle=True)  # shuffling draws from the global RNG
    rng = torch.get_rng_state()
    snip_scores(model, _weights(model), take_batches(loader, 1, "snip"))
    assert torch.equal(torch.get_rng_state(), rng)
    assert not any(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_preserved_restores_after_an_exception():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError), preserved(model):
        model[0].weight.data = model[0].weight.data.abs().double()
        model(torch.randn(4, 2).double())
        raise RuntimeError("boom")
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k


# --------------------------------------------------------------------------- data
def test_take_batches_reads_only_what_it_needs():
    drawn = []

    def gen():
        for i in range(10):
            drawn.append(i)
            yield torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    assert len(take_batches(gen(), 2, "snip")) == 2
    assert drawn == [0, 1]


@pytest.mark.parametrize("data, match", [
    (None, r"pass data=.*sparsetrain.attach\(\)"),
    ([], "yielded no batches"),
    (iter([]), "yielded no batches"),
    (5, "iterable of"),
    ([torch.zeros(2, 3)], r"\(inputs, targets\) pair"),
])
def test_take_batches_bad_input(data, match):
    with pytest.raises(SparsetrainError, match=match):
        take_batches(data, 1, "grasp")
