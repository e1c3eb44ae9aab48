"""Unstructured-sparse inference (ISSUE 4 export): CSR / 2:4 per layer, chosen by measuring."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from sparsetrain.deploy import inference
from sparsetrain.deploy.inference import CSRLinear, choose, is_two_four, sparsify_for_inference
from sparsetrain.errors import SparsetrainError

pytestmark = pytest.mark.usefixtures("one_thread")


def _sparse_mlp(density: float, sizes=(64, 256, 128, 10), seed: int = 0) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers[:-1]).eval()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(torch.rand(m.weight.shape, generator=gen) < density)
    return net


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 32), (2, 3, 32), (32,)])
def test_csr_linear_equals_dense(bias, shape):
    linear = nn.Linear(32, 16, bias=bias)
    with torch.no_grad():
        linear.weight.mul_(torch.rand(16, 32) < 0.1)
    x = torch.randn(*shape)
    torch.testing.assert_close(CSRLinear(linear)(x), linear(x), rtol=1e-5, atol=1e-6)


def test_measured_conversion_keeps_outputs_and_records_times():
    net = _sparse_mlp(0.05)
    x = torch.randn(64, 64)
    fast, decisions = sparsify_for_inference(net, x, reps=5)
    assert set(decisions) == {"0", "2", "4"}
    for d in decisions.values():
        assert set(d.times) == {"dense", "csr"} and all(t > 0 for t in d.times.values())
        assert d.skipped["2:4"] == "2:4 semi-structured kernels need CUDA"
        assert d.choice == choose(d.times)
    assert [type(fast[i]).__name__ == "CSRLinear" for i in (0, 2, 4)] == [
        decisions[k].choice == "csr" for k in ("0", "2", "4")]
    torch.testing.assert_close(fast(x), net(x), rtol=1e-5, atol=1e-5)
    assert all(type(m) is nn.Linear for m in net if not isinstance(m, nn.ReLU))  # the original is untouched


def _fixed(times: dict[str, float]):
    calls = []

    def timer(label, fn):
        fn()  # the candidate must run on the captured input
        calls.append(label)
        return times[label]
    return timer, calls


def test_decision_follows_the_timer_not_the_sparsity():
    net = _sparse_mlp(0.01)
    x = torch.randn(4, 64)
    timer, calls = _fixed({"dense": 1.0, "csr": 2.0})  # very sparse, but measured slower: stays dense
    fast, decisions = sparsify_for_inference(net, x, timer=timer)
    assert all(d.choice == "dense" for d in decisions.values()) and all(type(fast[i]) is nn.Linear for i in (0, 2))
    assert calls.count("dense") == calls.count("csr") == 3
    timer, _ = _fixed({"dense": 1.0, "csr": 0.95})  # faster, but not by min_speedup 1.1
    assert all(d.choice == "dense" for d in sparsify_for_inference(net, x, timer=timer)[1].values())
    timer, _ = _fixed({"dense": 1.0, "csr": 0.5})
    fast, _ = sparsify_for_inference(net, x, timer=timer)
    assert isinstance(fast[0], CSRLinear)
    dense_net = _sparse_mlp(1.0)  # no zeros: nothing to decide
    assert sparsify_for_inference(dense_net, x, timer=timer)[1] == {}


class _FakeTwoFour(nn.Module):
    """Stands in for the CUDA 2:4 kernel on CPU (same maths, dense)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return self.linear(x)


def test_two_four_decision_logic_with_mocked_timer_and_kernel(monkeypatch):
    net = _sparse_mlp(1.0, sizes=(64, 64, 8))
    with torch.no_grad():  # a 2:4 pattern: keep the first two of every four inputs
        net[0].weight.mul_(torch.tensor([1.0, 1.0, 0.0, 0.0]).repeat(16))
    assert is_two_four(net[0].weight) and not is_two_four(net[2].weight)
    available = lambda linear: None if is_two_four(linear.weight) else "weight is not 2:4 sparse"  # noqa: E731
    monkeypatch.setitem(inference.FORMATS, "2:4", (available, _FakeTwoFour))
    timer, _ = _fixed({"dense": 1.0, "csr": 0.8, "2:4": 0.4})
    x = torch.randn(8, 64)
    fast, decisions = sparsify_for_inference(net, x, timer=timer)
    assert decisions["0"].choice == "2:4" and isinstance(fast[0], _FakeTwoFour)
    assert "2" not in decisions  # dense layer: nothing to decide
    timer, _ = _fixed({"dense": 1.0, "csr": 0.3, "2:4": 0.4})
    assert sparsify_for_inference(net, x, timer=timer)[1]["0"].choice == "csr"


def test_two_four_is_guarded_on_cpu():
    linear = nn.Linear(8, 4)
    with torch.no_grad():
        linear.weight.mul_(torch.tensor([1.0, 0.0, 1.0, 0.0]).repeat(2))
    assert inference.FORMATS["2:4"][0](linear) == "2:4 semi-structured kernels need CUDA"


@pytest.mark.gpu
def test_two_four_on_cuda_matches_dense():
    linear = nn.Linear(128, 128).half().cuda().eval()
    with torch.no_grad():
        linear.weight.mul_(torch.tensor([1.0, 1.0, 0.0, 0.0], device="cuda").repeat(32).half())
    x = torch.randn(64, 128, device="cuda").half()
    fast, decisions = sparsify_for_inference(linear, x, formats=("2:4",), timer=lambda label, fn: {"2:4": 0.1}.get(
        label, 1.0))
    assert decisions[""].choice == "2:4"
    torch.testing.assert_close(fast(x), linear(x), rtol=1e-2, atol=1e-2)


@given(st.dictionaries(st.sampled_from(["csr", "2:4"]), st.floats(1e-6, 10.0), max_size=2),
       st.floats(1e-6, 10.0), st.floats(1.0, 2.0))
def test_choose_never_picks_a_format_slower_than_the_margin(others, dense, margin):
    times = {"dense": dense, **others}
    pick = choose(times, margin)
    assert pick == "dense" or (times["dense"] >= margin * times[pick] and times[pick] == min(times.values()))


def test_unknown_format():
    with pytest.raises(SparsetrainError, match="unknown inference format"):
        sparsify_for_inference(nn.Linear(2, 2), torch.randn(1, 2), formats=("bsr",))
