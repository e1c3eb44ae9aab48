"""The schedule curves (fasterai's pruning schedules) at hand-computed points."""

import math
from functools import partial

import pytest

from sparsetrain.errors import SparsetrainError
from sparsetrain.schedules import SparsitySchedule, plot_schedules
from sparsetrain.schedules.curves import (
    SPARSITY_SCHEDULES,
    agp,
    cos,
    dsd,
    exp,
    get_sparsity_schedule,
    iterative,
    lin,
    one_cycle,
    one_shot,
)


@pytest.mark.parametrize("fn, points", [
    (one_shot, [(0.0, 0.9), (0.5, 0.9), (1.0, 0.9)]),
    (lin, [(0.0, 0.0), (0.5, 0.45), (1.0, 0.9)]),
    (cos, [(0.0, 0.0), (0.5, 0.45), (0.25, 0.9 * (1 + math.cos(0.75 * math.pi)) / 2), (1.0, 0.9)]),
    (agp, [(0.0, 0.0), (0.5, 0.9 - 0.9 / 8), (1.0, 0.9)]),
    (dsd, [(0.0, 0.0), (0.25, 0.45), (0.5, 0.9), (0.75, 0.45), (1.0, 0.0)]),
])
def test_schedules_from_zero(fn, points):
    for pos, want in points:
        assert fn(0.0, 0.9, pos) == pytest.approx(want, abs=1e-12)


def test_agp_fixed_formula_with_nonzero_start():
    # 2021 bug: end + start - end*(1-pos)^3 is right at pos 0 (0.2) but not after:
    # at pos 0.5 the buggy value is 0.8 + 0.2 - 0.1 = 0.9, the fixed one 0.8 - 0.6/8 = 0.725
    assert agp(0.2, 0.8, 0.5) == pytest.approx(0.725)
    assert agp(0.2, 0.8, 0.0) == pytest.approx(0.2)


def test_iterative_steps():
    got = [iterative(0.0, 0.9, p) for p in (0.0, 0.01, 1 / 3, 0.34, 2 / 3, 0.7, 1.0)]
    assert got == pytest.approx([0.0, 0.3, 0.3, 0.6, 0.6, 0.9, 0.9])
    assert iterative(0.0, 0.8, 0.3, n_steps=4) == pytest.approx(0.4)


def test_exp():
    assert exp(0.01, 0.64, 0.0) == pytest.approx(0.01)
    assert exp(0.01, 0.64, 0.5) == pytest.approx(0.08)
    assert exp(0.01, 0.64, 1.0) == pytest.approx(0.64)
    with pytest.raises(SparsetrainError, match="start_sparsity > 0"):
        exp(0.0, 0.9, 0.5)
    with pytest.raises(SparsetrainError, match="start_sparsity > 0"):
        SparsitySchedule("exp", end_sparsity=0.9)  # caught at construction


def test_one_cycle_offset_and_betas():
    assert one_cycle(0.0, 1.0, 0.0) == pytest.approx((1 + math.exp(-9)) / (1 + math.exp(5)))
    assert one_cycle(0.0, 1.0, 0.0) == pytest.approx(0.0067, abs=5e-5)  # s(0) != start
    assert one_cycle(0.0, 0.9, 1.0) == pytest.approx(0.9)
    assert one_cycle(0.0, 1.0, 0.0, beta=6) == pytest.approx(0.0025, abs=5e-5)  # fasterai's code default
    mid = (1 + math.exp(-9)) / (1 + math.exp(5 - 7))
    assert one_cycle(0.1, 0.9, 0.5) == pytest.approx(0.1 + 0.8 * mid)


def test_window_hold_and_tail():
    s = SparsitySchedule("cos", end_sparsity=0.8, start=0.2, end=0.7)
    assert s(0, 100) == 0.0 and s(19, 100) == 0.0  # before start: start_sparsity
    assert s(20, 100) == pytest.approx(0.0)
    assert s(45, 100) == pytest.approx(0.4)  # pos 0.5
    assert s(70, 100) == pytest.approx(0.8)
    assert s(85, 100) == pytest.approx(0.8) and s(100, 100) == pytest.approx(0.8)  # the tail
    assert s.density(45, 100) == pytest.approx(0.6)


def test_window_holds_last_value_of_dsd_and_start_sparsity():
    s = SparsitySchedule("dsd", start_sparsity=0.1, end_sparsity=0.5, end=0.5)
    assert s(25, 100) == pytest.approx(0.5)
    assert s(50, 100) == pytest.approx(0.1) and s(90, 100) == pytest.approx(0.1)
    one = SparsitySchedule("one_shot", end_sparsity=0.95, start=0.4)
    assert one(39, 100) == 0.0 and one(40, 100) == 0.95 and one(100, 100) == 0.95


def test_iterative_n_steps_and_callable():
    s = SparsitySchedule("iterative", end_sparsity=0.8, n_steps=2)
    assert [s(t, 4) for t in (0, 1, 2, 3, 4)] == pytest.approx([0.0, 0.4, 0.4, 0.8, 0.8])
    custom = SparsitySchedule(partial(one_cycle, beta=6), end_sparsity=0.9)
    assert custom(0, 10) == pytest.approx(0.9 * one_cycle(0, 1, 0, beta=6))
    assert SparsitySchedule("lin").name == "lin"


def test_bad_inputs():
    with pytest.raises(SparsetrainError, match="Did you mean: cosine.*Choices: agp, cos, cosine, cubic, dsd, exp"):
        get_sparsity_schedule("cosin")
    assert get_sparsity_schedule("cosine") is cos and get_sparsity_schedule("cubic") is agp  # one of each
    with pytest.raises(SparsetrainError, match="percentage"):
        SparsitySchedule("agp", end_sparsity=95)
    with pytest.raises(SparsetrainError, match="start < end"):
        SparsitySchedule("agp", start=0.5, end=0.5)
    with pytest.raises(SparsetrainError, match="n_steps"):
        SparsitySchedule("iterative", n_steps=0)


def test_registry_and_plot(tmp_path):
    assert set(SPARSITY_SCHEDULES) == {"one_shot", "iterative", "agp", "lin", "cos", "exp", "one_cycle", "dsd"}
    pytest.importorskip("matplotlib")
    out = plot_schedules(str(tmp_path / "schedules.png"))
    assert (tmp_path / "schedules.png").stat().st_size > 1000 and out.endswith(".png")
