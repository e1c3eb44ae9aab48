"""The rigl-torch drop-in: ``RigLScheduler`` semantics (docs/algorithms.md, "rigl-torch") and our fixes."""

import copy
import math
import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparsetrain.compat.rigl_torch import RigLScheduler
from sparsetrain.core.topk import exact_count
from sparsetrain.distributions import erk
from sparsetrain.errors import SparsetrainError

pytestmark = pytest.mark.usefixtures("one_thread")


def convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 4))  # N = 36, 288, 2048, 64


def batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]


def train(model, opt, pruner, data):
    returned = []
    for x, y in data:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        returned.append(pruner())
        if returned[-1]:
            opt.step()
    return returned


def counts(pruner):
    return [None if m is None else int(m.sum()) for m in pruner.backward_masks]


def make(seed=0, opt="sgd", **kw):
    model = convnet(seed)
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt == "sgd"
                 else torch.optim.Adam(model.parameters(), lr=1e-2))
    kw = {"dense_allocation": 0.1, "T_end": 40, "delta": 5, **kw}
    return model, optimizer, RigLScheduler(model, optimizer, **kw)


def test_drop_fraction_values():
    _, _, p = make(T_end=1000, alpha=0.3)
    for step, expected in [(0, 0.3), (250, 0.15 * (1 + math.cos(math.pi / 4))), (500, 0.15), (1000, 0.0)]:
        p.step = step
        assert p.cosine_annealing() == pytest.approx(expected, abs=1e-12)


def test_exact_counts_first_layer_dense_and_linear_layers():
    _, _, p = make(dense_allocation=0.1)  # ignore_linear_layers=True (rigl-torch default)
    assert p.N == [36, 288, 2048, 64] and p._linear_layers_mask == [0, 0, 1, 1]
    assert p.S == [0, pytest.approx(0.9), 0, 0]
    assert counts(p) == [None, exact_count(0.1, 288), None, None] == [None, 29, None, None]
    assert all(int(torch.count_nonzero(w)) == w.numel() for w in (p.W[0], p.W[2], p.W[3]))
    assert int(torch.count_nonzero(p.W[1])) == 29
    _, _, p = make(dense_allocation=0.1, ignore_linear_layers=False)
    assert counts(p) == [None, 29, 205, 6]  # round-half-up of d * N, exact
    single = nn.Linear(10, 10)
    p = RigLScheduler(single, torch.optim.SGD(single.parameters(), lr=0.1), dense_allocation=0.3, T_end=10,
                      ignore_linear_layers=False)
    assert counts(p) == [30]  # a single layer is not kept dense
    two = nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 5))
    p = RigLScheduler(two, torch.optim.SGD(two.parameters(), lr=0.1), 0.1, T_end=10, ignore_linear_layers=False)
    assert counts(p) == [None, 3]  # d * N = 2.5 rounds half up, despite S = 1 - 0.1 = 0.9 in floating point


def test_erk_distribution():
    _, _, p = make(dense_allocation=0.2, sparsity_distribution="erk", ignore_linear_layers=False)
    dens = erk({str(i): w.shape for i, w in enumerate(p.W)}, 0.2)
    assert counts(p) == [None if dens[str(i)] >= 1 else exact_count(dens[str(i)], n) for i, n in enumerate(p.N)]
    assert sum(c if c is not None else n for c, n in zip(counts(p), p.N, strict=True)) == pytest.approx(
        0.2 * sum(p.N), abs=len(p.N))


def test_only_conv_and_linear_weights_are_layers():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.BatchNorm1d(3), nn.LayerNorm(8),
                          nn.LayerNorm(8, elementwise_affine=False), nn.Linear(8, 8))
    p = RigLScheduler(model, torch.optim.SGD(model.parameters(), lr=0.1), 0.5, T_end=10, ignore_linear_layers=False)
    assert [w is model[i].weight for i, w in zip((1, 5), p.W, strict=True)] == [True, True]


def test_pruner_return_pattern_and_static_topo():
    model, opt, p = make(delta=3, T_end=10)
    returned = train(model, opt, p, batches(12))
    assert [i + 1 for i, r in enumerate(returned) if not r] == [3, 6, 9]  # not 12: step >= T_end
    assert p.step == 12 and p.rigl_steps == 3
    model, opt, p = make(delta=3, T_end=10, static_topo=True)
    before = [m.clone() for m in p.backward_masks if m is not None]
    assert all(train(model, opt, p, batches(12))) and p.rigl_steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, [m for m in p.backward_masks if m is not None], strict=True))


def test_optimizer_step_skipped_on_rigl_step_and_counts_stay_exact():
    model, opt, p = make(delta=4, ignore_linear_layers=False)
    data = batches(4)
    train(model, opt, p, data[:3])
    old = [m.clone() if m is not None else torch.ones_like(w, dtype=torch.bool) for m, w in
           zip(p.backward_masks, p.W, strict=True)]
    weights = [w.detach().clone() for w in p.W]
    assert train(model, opt, p, data[3:]) == [False]
    for w, w0, m0, m in zip(p.W, weights, old, p.backward_masks, strict=True):
        m = torch.ones_like(m0) if m is None else m
        assert torch.equal(w[m0 & m], w0[m0 & m])  # no optimizer update on a RigL step
        assert torch.all(w[m & ~m0] == 0) and torch.all(w[~m] == 0)  # new connections start at 0
        assert int(m.sum()) == int(m0.sum())


def test_hand_worked_rigl_step():
    model = nn.Linear(4, 2, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    p = RigLScheduler(model, opt, 0.5, T_end=10**6, delta=2, alpha=0.6, ignore_linear_layers=False)
    with torch.no_grad():
        p.backward_masks[0].copy_(torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool).view(2, 4))
        model.weight.copy_(torch.tensor([0.1, -0.5, 0.3, 0.05, 0, 0, 0, 0]).view(2, 4))
    grad = torch.tensor([0.9, 0.0, 0.0, 0.1, 0.2, -0.8, 0.05, 0.3]).view(2, 4)
    for _ in range(2):  # drop fraction ~0.6: prune int(4 * 0.6) = 2 of 4
        model.weight.grad = None
        (model.weight * grad).sum().backward()
        assert torch.equal(model.weight.grad, grad * p.backward_masks[0])  # masked by the hook
        returned = p()
    assert returned is False and p.rigl_steps == 1
    # keep |w| top-2 {1, 2}; grow top-2 |g| among the rest {0, 5}: 0 was dropped and regrown, keeps 0.1
    assert p.backward_masks[0].flatten().nonzero().flatten().tolist() == [0, 1, 2, 5]
    assert model.weight.flatten().tolist() == pytest.approx([0.1, -0.5, 0.3, 0, 0, 0, 0, 0])
    assert model.weight.grad.flatten()[[3, 4, 6, 7]].tolist() == [0, 0, 0, 0]


def test_hook_accumulates_dense_grad_in_window():
    model, opt, p = make(delta=5, grad_accumulation_n=3, ignore_linear_layers=False)
    ref = copy.deepcopy(model)  # no hooks on the copy: its gradients are dense
    data, acc = batches(4), [torch.zeros_like(w) for w in p.W]
    for t, (x, y) in enumerate(data):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        ref_w = [m.weight for m in ref if isinstance(m, (nn.Conv2d, nn.Linear))]
        for i, (w, m) in enumerate(zip(p.W, p.backward_masks, strict=True)):
            if m is not None:
                assert torch.equal(w.grad, ref_w[i].grad * m)  # masked when backward() returns
                if t >= 2:
                    acc[i] += ref_w[i].grad / 3
        hooks = [h for h in p.backward_hook_objects if h is not None]
        assert all(h.dense_grad is None for h in hooks) if t < 2 else all(h.dense_grad is not None for h in hooks)
        p()  # no optimizer step: weights stay equal to the reference copy
    for h in p.backward_hook_objects[1:]:
        assert torch.allclose(h.dense_grad, acc[h.layer], atol=1e-7)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_weights_and_optimizer_state_masked(opt):
    model, optimizer, p = make(opt=opt, delta=4, ignore_linear_layers=False)
    train(model, optimizer, p, batches(10))
    assert p.rigl_steps == 2
    for w, m in zip(p.W[1:], p.backward_masks[1:], strict=True):
        assert torch.all(w[~m] == 0)
        state = [v for v in optimizer.state[w].values() if torch.is_tensor(v) and v.shape == w.shape]
        assert state and all(torch.all(v[~m] == 0) for v in state)
    assert counts(p) == [None, 29, 205, 6]


def test_no_accumulated_grad_falls_back_instead_of_crashing():
    model, opt, p = make(delta=2, ignore_linear_layers=False)
    x, y = batches(1)[0]
    F.cross_entropy(model(x), y).backward()  # step 0: outside the window, nothing accumulated
    p.W[3].grad = None  # this layer has no gradient at all: its mask must stay
    before = p.backward_masks[3].clone()
    assert p() is True and p() is False  # rigl-torch: TypeError on abs(None)
    assert counts(p) == [None, 29, 205, 6] and torch.equal(p.backward_masks[3], before)


def test_state_dict_round_trip_weights_only(tmp_path):
    kw = {"delta": 6, "grad_accumulation_n": 3, "ignore_linear_layers": False, "opt": "adam"}
    model, opt, p = make(**kw)
    data = batches(20)
    train(model, opt, p, data[:10])  # stop inside the accumulation window of the RigL step at 12
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "pruner": p.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt["pruner"]) >= {"dense_allocation", "S", "N", "hyperparams", "step", "rigl_steps",
                                   "backward_masks", "_linear_layers_mask"}
    model2 = convnet(seed=1)
    model2.load_state_dict(ckpt["model"])
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(ckpt["opt"])
    p2 = RigLScheduler(model2, opt2, state_dict=ckpt["pruner"])
    assert (p2.step, p2.rigl_steps, p2.T_end, p2.delta_T, p2.grad_accumulation_n) == (10, 1, 40, 6, 3)
    train(model, opt, p, data[10:])
    train(model2, opt2, p2, data[10:])
    assert p.rigl_steps == p2.rigl_steps == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values(),
                                                 strict=True))
    bad = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    with pytest.raises(SparsetrainError, match="sizes"):
        RigLScheduler(bad, torch.optim.SGD(bad.parameters(), lr=0.1), state_dict=ckpt["pruner"])


def test_str_lists_layers_and_schedule():
    _, _, p = make(ignore_linear_layers=False)
    text = str(p)
    for part in ["layers=4", "36/36", "29/288", "10.07%", "step=0", "num_rigl_steps=0", "T_end=40", "delta=5",
                 "alpha=0.3", "sparsity_distribution=uniform"]:
        assert part in text


@pytest.mark.parametrize("kw, match", [
    ({"dense_allocation": 0}, "dense_allocation"), ({"dense_allocation": 1.5}, "dense_allocation"),
    ({"dense_allocation": 10}, "percentage"), ({"T_end": None}, "T_end"),
    ({"grad_accumulation_n": 0}, "grad_accumulation_n"), ({"grad_accumulation_n": 5}, "grad_accumulation_n"),
    ({"sparsity_distribution": "er_k"}, "sparsity_distribution"), ({"delta": 0}, "delta"),
    ({"alpha": 1.5}, "alpha"),
])
def test_bad_inputs(kw, match):
    with pytest.raises(SparsetrainError, match=match):
        make(**kw)


def test_model_registered_once_and_other_errors():
    model, opt, p = make()
    with pytest.raises(SparsetrainError, match="already"):
        RigLScheduler(model, opt, 0.1, T_end=10)
    p.remove()
    RigLScheduler(model, opt, 0.1, T_end=10)
    with pytest.raises(SparsetrainError, match="Optimizer"):
        RigLScheduler(convnet(), None, 0.1, T_end=10)
    with pytest.raises(SparsetrainError, match="no nn.Linear"):
        RigLScheduler(nn.ReLU(), opt, 0.1, T_end=10)


def _rigl_torch(monkeypatch):
    try:
        import torchvision  # noqa: F401  # rigl_torch.util imports it for two isinstance checks
    except Exception:
        resnet = types.ModuleType("torchvision.models.resnet")
        resnet.Bottleneck = type("Bottleneck", (nn.Module,), {})
        resnet.BasicBlock = type("BasicBlock", (nn.Module,), {})
        models = types.ModuleType("torchvision.models")
        models.resnet = resnet
        stub = types.ModuleType("torchvision")
        stub.models = models
        for name, mod in [("torchvision", stub), ("torchvision.models", models), ("torchvision.models.resnet", resnet)]:
            monkeypatch.setitem(sys.modules, name, mod)
    return pytest.importorskip("rigl_torch.RigL")


def test_matches_rigl_torch(monkeypatch):
    RigLTorch = _rigl_torch(monkeypatch).RigLScheduler
    kw = {"dense_allocation": 0.25, "T_end": 30, "delta": 5, "grad_accumulation_n": 2, "ignore_linear_layers": False}
    ours_model = convnet()
    theirs_model = copy.deepcopy(ours_model)
    ours_opt = torch.optim.SGD(ours_model.parameters(), lr=0.05, momentum=0.9)
    theirs_opt = torch.optim.SGD(theirs_model.parameters(), lr=0.05, momentum=0.9)
    ours, theirs = RigLScheduler(ours_model, ours_opt, **kw), RigLTorch(theirs_model, theirs_opt, **kw)
    first = [m.clone() for m in ours.backward_masks if m is not None]
    assert ours.S == theirs.S and ours.N == theirs.N
    assert counts(ours) == [None if m is None else int(m.sum()) for m in theirs.backward_masks]
    # Their init is randperm, ours exact top-k of random scores: start both from our masks and weights.
    for a, b in zip(ours.backward_masks, theirs.backward_masks, strict=True):
        if a is not None:
            b.copy_(a)
    theirs_model.load_state_dict(ours_model.state_dict())
    for x, y in batches(26):
        for model, opt, pruner in ((ours_model, ours_opt, ours), (theirs_model, theirs_opt, theirs)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if pruner():
                opt.step()
        for a, b in zip(ours.backward_masks, theirs.backward_masks, strict=True):
            assert (a is None and b is None) or torch.equal(a, b)
        assert all(torch.equal(a, b) for a, b in zip(ours.W, theirs.W, strict=True))
    assert ours.rigl_steps == theirs.rigl_steps == 5
    resumed_model = copy.deepcopy(theirs_model)  # a rigl-torch checkpoint resumes with ours
    resumed = RigLScheduler(resumed_model, torch.optim.SGD(resumed_model.parameters(), lr=0.05),
                            state_dict=theirs.state_dict())
    assert (resumed.step, resumed.rigl_steps, resumed.S) == (theirs.step, theirs.rigl_steps, theirs.S)
    assert all(a is None or torch.equal(a, b) for a, b in zip(resumed.backward_masks, theirs.backward_masks,
                                                               strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(first, [m for m in ours.backward_masks if m is not None],
                                                     strict=True))


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from torch import nn
from sparsetrain.compat.rigl_torch import RigLScheduler

def worker(rank, out):
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    torch.manual_seed(rank)  # different global RNG per rank: init masks must still agree
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    model = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = RigLScheduler(model, opt, dense_allocation=0.2, T_end=40, delta=4, ignore_linear_layers=False)
    first = [m.clone() for m in pruner.backward_masks if m is not None]
    g = torch.Generator().manual_seed(100 + rank)  # different data per rank
    for _ in range(12):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if pruner():
            opt.step()
    masks = [m for m in pruner.backward_masks if m is not None]
    torch.save({"first": first, "masks": masks, "weights": [w.detach() for w in pruner.W],
                "rigl_steps": pruner.rigl_steps}, f"{out}/rank{rank}.pt")
    dist.barrier()  # gloo can abort ("terminate called ...") if one rank tears down while the other talks
    dist.destroy_process_group()

if __name__ == "__main__":
    worker(int(sys.argv[1]), sys.argv[2])
"""


@pytest.mark.ddp
def test_ddp_masks_identical_on_every_rank(tmp_path):
    script = tmp_path / "ddp_rigl.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in (0, 1)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["rigl_steps"] == r1["rigl_steps"] == 3
    for key in ("first", "masks", "weights"):
        assert all(torch.equal(a, b) for a, b in zip(r0[key], r1[key], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(r0["first"], r0["masks"], strict=True))  # topology moved
