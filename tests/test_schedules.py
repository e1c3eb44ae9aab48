"""Schedules and cadences at hand-computed points (docs/algorithms.md, "Update schedule" and "GMP" and "SET, SNFS and
RigL")."""

import math

import pytest

from sparsetrain.cadence import epoch_end, every
from sparsetrain.errors import SparsetrainError
from sparsetrain.schedules import constant, cosine_decay, gmp_density


def test_cosine_rate_granet():
    r = cosine_decay(0.5, 0.005)  # docs/algorithms.md, "Update schedule": eta_min absolute
    assert r(0, 1000) == 0.5
    assert r(500, 1000) == pytest.approx(0.005 + 0.495 * 0.5)
    assert r(250, 1000) == pytest.approx(0.005 + 0.495 * (1 + math.cos(math.pi / 4)) / 2)
    assert r(1000, 1000) == pytest.approx(0.005)


def test_rigl_drop_fraction_with_t_end():
    f = cosine_decay(0.3, 0.0, horizon=0.75)
    assert f(375, 1000) == pytest.approx(0.15)
    assert f(750, 1000) == pytest.approx(0.0)
    assert f(900, 1000) == pytest.approx(0.0)


def test_cubic_schedule_hand_worked():
    # s_i = 0, s_f = 0.9, dT = 10, t0 = 0, tf = 100: kf = 10
    f = gmp_density(1.0, 0.1, 0.0, 1.0, 10)
    for step, k in [(0, 0), (10, 1), (50, 5), (90, 9)]:
        expected = 1 - (0.9 + (0.0 - 0.9) * (1 - k / 10) ** 3)
        assert f(step, 100) == pytest.approx(expected)
    assert f(55, 100) == f(50, 100)  # quantised to update events
    assert f(100, 100) == pytest.approx(0.1)  # fixed: the last event reaches s_f exactly


def test_cubic_schedule_sparse_start_and_window():
    # s_i = 0.5, s_f = 0.9, pruning between 20% and 60% of 1000 steps, every 100
    f = gmp_density(0.5, 0.1, 0.2, 0.6, 100)
    assert f(100, 1000) == pytest.approx(0.5)  # before the window: s_i
    assert f(400, 1000) == pytest.approx(1 - (0.9 - 0.4 * 0.5 ** 3))  # k=4, k0=2, kf=6
    assert f(800, 1000) == pytest.approx(0.1)


def test_constant():
    assert constant(0.3)(5, 10) == 0.3


def test_every_window_and_epoch_end():
    assert [t for t in range(1, 41) if every(10)(t, 40)] == [10, 20, 30]
    assert [t for t in range(1, 41) if every(10, end=0.5, include_end=True)(t, 40)] == [10, 20]
    assert [t for t in range(1, 41) if every(10, start=0.5)(t, 40)] == [20, 30]
    assert [t for t in range(1, 13) if epoch_end(4)(t, 12)] == [4, 8]


# ---------------------------------------------------------------- the one learning-rate schedule
def test_lr_schedule_matches_the_trainer_formulas_exactly():
    """Hand-worked steps of the formulas the trainer used before the schedule was shared (bit for bit)."""
    from sparsetrain.schedules import lr_schedule
    cosine = lr_schedule("cosine", warmup=2)
    assert [cosine(t, 10) for t in (0, 1)] == [0.5, 1.0]  # (step + 1) / warmup
    for step in (2, 3, 5, 7, 9):  # t = (step - 2) / 8
        assert cosine(step, 10) == 0.5 * (1 + math.cos(math.pi * ((step - 2) / 8)))
    assert cosine(6, 10) == 0.5  # the middle of the cosine: 0.5 * (1 + cos(pi / 2)) rounds to 0.5
    multistep = lr_schedule("multistep", milestones=[5, 8], gamma=0.5)
    assert [multistep(t, 10) for t in (0, 4, 5, 7, 8, 9)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    onecycle = lr_schedule("onecycle")
    assert [onecycle(t, 8) for t in (0, 1)] == [0.0, 0.5]  # 4 t over the first quarter
    assert onecycle(2, 8) == 1.0 and onecycle(5, 8) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_schedule("constant", warmup=1)(0, 10) == 1.0 and lr_schedule("Constant")(9, 10) == 1.0


def test_epoch_lr_matches_the_rare_gems_policies_exactly():
    """Gem-Miner's per-epoch policies: base * the shared schedule, as the old per-epoch formula on these epochs."""
    from sparsetrain.procedures.finetune import epoch_lr
    for epoch in range(5):  # E = 5: pi * e / E and pi * (e / E) agree, so the old figures are reproduced
        assert epoch_lr("cosine", 0.1, epoch, 5, [], 0.1) == 0.5 * (1 + math.cos(math.pi * epoch / 5)) * 0.1
    assert [epoch_lr("multistep", 0.01, e, 150, [80, 120], 0.1) for e in (79, 80, 120)] == [0.01, 0.01 * 0.1,
                                                                                           0.01 * 0.1 ** 2]
    assert epoch_lr("constant", 0.3, 7, 10, [], 0.1) == 0.3


def test_unknown_lr_schedule_lists_the_choices():
    from sparsetrain.schedules import lr_schedule
    with pytest.raises(SparsetrainError, match=r"unknown LR schedule 'cosin'. Did you mean: cosine\? Choices: "
                                               r"constant, cosine, multistep, onecycle"):
        lr_schedule("cosin")
