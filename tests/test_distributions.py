"""Layer densities, hand-worked from docs/algorithms.md, "Sparse initialisation and layer densities" and "GMP"."""

import math

import pytest
import torch

from sparsetrain.distributions import er, erk, layer_densities, uniform, uniform_dense_classifier
from sparsetrain.errors import SparsetrainError

S = torch.Size


def test_erk_hand_worked():
    # raw(conv) = (4+2+3+3)/72 = 1/6, raw(fc) = (10+4)/40 = 0.35
    # eps = 0.5 * 112 / (1/6 * 72 + 0.35 * 40) = 56 / 26
    d = erk({"conv": S([4, 2, 3, 3]), "fc": S([10, 4])}, 0.5)
    assert d["conv"] == pytest.approx(56 / 26 / 6)
    assert d["fc"] == pytest.approx(0.35 * 56 / 26)


def test_erk_dense_layer_loop():
    # the small fc would get 110x its raw score: it goes dense, eps is solved again
    shapes = {"conv": S([64, 64, 3, 3]), "fc": S([2, 3])}
    d = erk(shapes, 0.5)
    assert d["fc"] == 1.0
    assert d["conv"] == pytest.approx((0.5 * 36864 - 0.5 * 6) / 36864)
    total = sum(d[n] * math.prod(s) for n, s in shapes.items())
    assert total == pytest.approx(0.5 * (36864 + 6))


def test_erk_density_one_is_all_dense():
    assert set(erk({"a": S([3, 3]), "b": S([5, 2, 3])}, 1.0).values()) == {1.0}


def test_er_ignores_kernel_dims():
    d = er({"conv": S([4, 2, 3, 3]), "fc": S([10, 4])}, 0.5)
    # raw(conv) = 6/8 uses only [4, 2]; raw(fc) = 0.35
    eps = 56 / (0.75 * 72 + 0.35 * 40)
    assert d["conv"] == pytest.approx(0.75 * eps)


def test_uniform_and_dense_first():
    shapes = {"a": S([3, 3]), "b": S([3, 3])}
    assert uniform(shapes, 0.3) == {"a": 0.3, "b": 0.3}
    assert layer_densities("uniform", shapes, 0.3, dense_first=True) == {"a": 1.0, "b": 0.3}


def test_gmp_uniform_classifier_rule():
    shapes = {"conv": S([900]), "fc": S([100])}
    d = uniform_dense_classifier(shapes, 0.1, "fc")
    assert d["fc"] == 0.2
    assert d["conv"] * 900 + 0.2 * 100 == pytest.approx(100)
    # above 0.2 density the rule is off
    assert uniform_dense_classifier(shapes, 0.5, "fc") == {"conv": 0.5, "fc": 0.5}


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, 90])
def test_density_out_of_range(bad):
    with pytest.raises(SparsetrainError, match=r"\(0, 1\]"):
        erk({"a": S([3, 3])}, bad)


def test_unknown_distribution_lists_choices():
    with pytest.raises(SparsetrainError, match="erk"):
        layer_densities("ekr", {"a": S([2, 2])}, 0.5)
