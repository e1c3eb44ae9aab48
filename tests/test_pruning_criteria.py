"""fasterai's pruning criteria on hand-worked tensors (docs/algorithms.md, "Pruning criteria")."""

import pytest
import torch
from torch import nn

from sparsetrain.context import SparseContext
from sparsetrain.criteria import get_criterion, list_criteria, needs_grad
from sparsetrain.criteria.history import FASTERAI_CRITERIA
from sparsetrain.errors import SparsetrainError
from sparsetrain.ops import remember_weights

W0 = [1.0, -2.0, 0.5, 3.0]
W = [2.0, -1.0, -0.5, 3.0]
G = [0.5, 1.0, 2.0, 0.0]


def _ctx(remember=True):
    p = nn.Parameter(torch.tensor(W0))
    ctx = SparseContext({"w": p}, {"w": torch.ones(4, dtype=torch.bool)}, None, 10, torch.Generator().manual_seed(0))
    if remember:
        remember_weights("w0")(ctx)
    with torch.no_grad():
        p.copy_(torch.tensor(W))
    ctx.grads["w"] = torch.tensor(G)
    return ctx


@pytest.mark.parametrize("name, want", [
    ("large_final", [2.0, 1.0, 0.5, 3.0]),
    ("small_final", [-2.0, -1.0, -0.5, -3.0]),
    ("large_init", [1.0, 2.0, 0.5, 3.0]),
    ("small_init", [-1.0, -2.0, -0.5, -3.0]),
    ("large_init_large_final", [1.0, 1.0, 0.5, 3.0]),
    ("small_init_small_final", [-2.0, -2.0, -0.5, -3.0]),
    ("magnitude_increase", [1.0, -1.0, 0.0, 0.0]),
    ("movement", [1.0, 1.0, 1.0, 0.0]),
    ("movmag", [2.0, 1.0, 0.5, 0.0]),
    ("grad", [1.0, 1.0, 1.0, 0.0]),
    # before any w_prev is stored, the updating criteria measure from w0 (fasterai)
    ("updating_movement", [1.0, 1.0, 1.0, 0.0]),
    ("updating_magnitude_increase", [1.0, -1.0, 0.0, 0.0]),
])
def test_hand_worked(name, want):
    assert get_criterion(name)(_ctx(), "w").tolist() == want


def test_updating_criteria_follow_w_prev():
    ctx = _ctx()
    remember_weights("w_prev")(ctx)  # what a method chains after each mask computation: w_prev = W
    with torch.no_grad():
        ctx.params["w"].copy_(torch.tensor([2.0, 0.0, -1.5, 1.0]))
    assert get_criterion("updating_movement")(ctx, "w").tolist() == [0.0, 1.0, 1.0, 2.0]
    assert get_criterion("updating_magnitude_increase")(ctx, "w").tolist() == [0.0, -1.0, 1.0, -2.0]
    assert ctx.state["w0"]["w"].tolist() == W0  # w0 untouched


def test_remember_weights_is_a_detached_copy():
    ctx = _ctx()
    saved = ctx.state["w0"]["w"]
    assert not saved.requires_grad and saved.data_ptr() != ctx.params["w"].data_ptr()
    assert remember_weights().name == "remember_weights[w0]"


def test_random_and_registration():
    assert set(FASTERAI_CRITERIA) <= set(list_criteria(aliases=True))
    assert needs_grad("grad") and not needs_grad("movement")
    r = get_criterion("random")(_ctx(), "w")  # fasterai's random is the existing one
    assert r.shape == (4,) and ((0 <= r) & (r < 1)).all()


@pytest.mark.parametrize("name", ["large_init", "small_init", "large_init_large_final", "small_init_small_final",
                                  "magnitude_increase", "movement", "movmag", "updating_movement",
                                  "updating_magnitude_increase"])
def test_missing_w0_is_a_clear_error(name):
    with pytest.raises(SparsetrainError, match=r"compose remember_weights\('w0'\) into the method's init"):
        get_criterion(name)(_ctx(remember=False), "w")


def test_unknown_criterion_lists_choices():
    with pytest.raises(SparsetrainError, match="Did you mean: large_final.*Choices: .*movmag"):
        get_criterion("large_finale")


def test_aliases_are_one_function_and_the_old_module_still_imports_with_a_warning():
    assert get_criterion("large_final") is get_criterion("magnitude")
    assert get_criterion("grad") is get_criterion("taylor") and needs_grad("grad")
    assert "large_final" not in list_criteria() and "large_final" in list_criteria(aliases=True)
    import importlib
    import sys
    sys.modules.pop("sparsetrain.pruning_criteria", None)
    with pytest.warns(FutureWarning, match="sparsetrain.pruning_criteria is deprecated"):
        old = importlib.import_module("sparsetrain.pruning_criteria")
    assert old.remember_weights is remember_weights and old.movement is get_criterion("movement")


def test_a_second_criterion_under_a_taken_name_is_refused():
    from sparsetrain.criteria import criterion
    with pytest.raises(SparsetrainError, match="a criterion named 'large_final' is already registered"):
        criterion("large_final")(lambda ctx, name: ctx.params[name])


def test_a_criterion_is_a_frozen_record_that_says_what_it_reads():
    import dataclasses

    from sparsetrain.criteria import Criterion
    crit = get_criterion("movement")
    assert isinstance(crit, Criterion) and crit.remembers == ("w0",) and not crit.needs_grad
    assert get_criterion("updating_movement").remembers == ("w0", "w_prev")
    assert get_criterion("taylor").needs_grad and get_criterion("magnitude").remembers == ()
    assert crit.__doc__.startswith("|w - w0|") and crit.__name__ == "movement"
    with pytest.raises(dataclasses.FrozenInstanceError):
        crit.needs_grad = True


def test_a_users_function_becomes_a_criterion_keeping_its_needs_grad_attribute():
    def mine(ctx, name):
        return ctx.grad(name).abs()
    mine.needs_grad = True
    crit = get_criterion(mine)
    assert crit.name == "mine" and crit.needs_grad and needs_grad(mine)
    assert torch.equal(crit(_ctx(), "w"), torch.tensor(G))


@pytest.mark.parametrize("prune, remembered", [("movement", True), ("magnitude", False), ("threshold", False)])
def test_dst_stores_the_initial_weights_only_for_a_rule_that_reads_them(prune, remembered):
    import sparsetrain
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = sparsetrain.attach(model, opt, "dst", density=0.5, prune=prune, update_every=2, total_steps=4)
    assert ("w0" in sp.ctx.state) is remembered
