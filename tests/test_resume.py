"""Contract 5: state is a state_dict, and resuming gives the same result as not stopping.

For every registered method: train, stop after k steps, ``torch.save`` the
model / optimizer / sparsifier state_dicts, ``torch.load(weights_only=True)``
them into a freshly built model + optimizer + ``sparsetrain.attach`` (same
arguments) and finish. Final weights, masks, optimizer state and sparsifier
state must be bit-identical to an uninterrupted run, with k exactly on an
update step, between updates, and at the last update.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import pytest
import torch

import sparsetrain

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kit import (  # noqa: E402
    OPTIMIZERS,
    TOTAL_STEPS,
    ModelSpec,
    Variant,
    all_variants,
    batch,
    build_model,
    train_step,
)

VARIANTS = {v.id: v for v in all_variants()}
DENSITY = 0.3
SEED = 7
SPECS = {  # one optimizer per architecture keeps the matrix small
    "sgd_nesterov_wd": ModelSpec("conv", (4, 6), bias=True, batchnorm=True, in_channels=2, side=5),
    "adam": ModelSpec("mlp", (20, 12), bias=True, in_features=10),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _start(variant: Variant, opt_name: str, model_seed: int = 0):
    spec = SPECS[opt_name]
    model = build_model(spec, model_seed)
    opt = OPTIMIZERS[opt_name](model.parameters())
    sp = sparsetrain.attach(model, opt, variant.method, total_steps=TOTAL_STEPS, seed=SEED,
                            **variant.method_kwargs(DENSITY))
    return spec, model, opt, sp


def _train(spec, model, opt, steps: range) -> None:
    for t in steps:
        x, y = batch(spec, t, seed=SEED)
        train_step(model, opt, x, y)


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def _assert_same(a, b, where: str) -> None:
    """Bit-identical nested state (tensors with torch.equal, everything else with ==)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@cache
def _reference(variant_id: str, opt_name: str) -> dict:
    """The uninterrupted run (cached across stop points)."""
    spec, model, opt, sp = _start(VARIANTS[variant_id], opt_name)
    _train(spec, model, opt, range(TOTAL_STEPS))
    return {"model": _clone(model.state_dict()), "optimizer": _clone(opt.state_dict()),
            "sparsifier": _clone(sp.state_dict()), "history": _clone(sp.history)}


def _stop_step(variant_id: str, opt_name: str, where: str) -> int:
    """k for ``where``: on an update step, just after one (between updates), or at the last update."""
    updates = [e["step"] for e in _reference(variant_id, opt_name)["history"] if e["step"] > 0]
    if not updates:
        return {"on_update": 6, "between": 7, "last_update": 20}[where]
    if where == "on_update":
        return updates[len(updates) // 2]
    if where == "last_update":
        return updates[-1] if updates[-1] < TOTAL_STEPS else updates[-2]
    k = updates[len(updates) // 2] + 1
    while k in updates:
        k += 1
    return k


@pytest.mark.parametrize("where", ["on_update", "between", "last_update"])
@pytest.mark.parametrize("opt_name", sorted(SPECS))
@pytest.mark.parametrize("variant_id", list(VARIANTS))
def test_resume_is_bit_identical(variant_id, opt_name, where, tmp_path):
    variant = VARIANTS[variant_id]
    ref = _reference(variant_id, opt_name)
    k = _stop_step(variant_id, opt_name, where)
    assert 0 < k < TOTAL_STEPS

    spec, model, opt, sp = _start(variant, opt_name)
    _train(spec, model, opt, range(k))
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "sparsifier": sp.state_dict()}, path)
    del model, opt, sp

    # a fresh process would build everything again: different initial weights on purpose
    spec, model, opt, sp = _start(variant, opt_name, model_seed=1234)
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sp.load_state_dict(state["sparsifier"])
    assert sp.step_count == k
    _train(spec, model, opt, range(k, TOTAL_STEPS))

    where_ = f"{variant_id}/{opt_name} resumed at {k}"
    _assert_same(ref["model"], model.state_dict(), f"{where_}: model")
    _assert_same(ref["sparsifier"], sp.state_dict(), f"{where_}: sparsifier")
    _assert_same(ref["optimizer"], opt.state_dict(), f"{where_}: optimizer")
    tail = [e for e in ref["history"] if e["step"] > k]
    assert sp.history[1:] == tail, f"{where_}: updates after the resume differ"


def test_set_random_growth_depends_on_the_saved_generator(tmp_path):
    """Sanity check of the resume test: without the sparsifier state, SET's random regrowth differs."""
    variant = VARIANTS["set"]
    ref = _reference("set", "adam")
    spec, model, opt, sp = _start(variant, "adam")
    _train(spec, model, opt, range(7))
    state = {"model": _clone(model.state_dict()), "optimizer": _clone(opt.state_dict())}
    spec, model, opt, sp = _start(variant, "adam", model_seed=1234)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sp.ctx.step = 7  # the masks and generator of a fresh attach: not a resume
    _train(spec, model, opt, range(7, TOTAL_STEPS))
    assert not all(torch.equal(ref["sparsifier"]["masks"][n], sp.masks[n]) for n in sp.masks)


# --------------------------------------------------------------------------- refusing foreign states
def _sparsifier(spec: ModelSpec, method: str = "rigl", **kw) -> sparsetrain.Sparsifier:
    model = build_model(spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return sparsetrain.attach(model, opt, method, density=0.3, update_every=3, total_steps=TOTAL_STEPS, **kw)


@pytest.mark.parametrize("other", [
    ModelSpec("mlp", (20, 13), in_features=10),  # one shape differs
    ModelSpec("mlp", (20,), in_features=10),  # a layer fewer
    ModelSpec("mlp", (20, 12, 5), in_features=10),  # a layer more
    ModelSpec("conv", (4,), in_channels=2),  # another architecture
])
def test_state_from_a_different_model_is_refused(other, tmp_path):
    source = _sparsifier(ModelSpec("mlp", (20, 12), in_features=10))
    path = tmp_path / "sparsifier.pt"
    torch.save(source.state_dict(), path)
    target = _sparsifier(other)
    masks_before = {n: m.clone() for n, m in target.masks.items()}
    with pytest.raises(sparsetrain.SparsetrainError, match="different model"):
        target.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(masks_before[n], target.masks[n]) for n in masks_before), "a refused load changed masks"
    assert target.step_count == 0


def test_state_from_a_different_method_or_not_a_state_is_refused():
    spec = ModelSpec("mlp", (20, 12), in_features=10)
    state = _sparsifier(spec, "rigl").state_dict()
    with pytest.raises(sparsetrain.SparsetrainError, match="saved by method 'rigl'"):
        _sparsifier(spec, "set").load_state_dict(state)
    target = _sparsifier(spec, "rigl")
    for bad in ({}, {"masks": state["masks"]}, _clone(build_model(spec).state_dict()), [state]):
        with pytest.raises(sparsetrain.SparsetrainError, match="not a sparsetrain Sparsifier state_dict"):
            target.load_state_dict(bad)
