"""Property tests of DESIGN section 1 contracts 1-3 for every registered method.

After every optimizer step, over random small MLPs / conv nets, densities in
(0.05, 0.9) and SGD (momentum, nesterov, weight decay) / Adam / AdamW:

(a) every weight is exactly 0 where its mask is off;
(b) active counts (``torch.count_nonzero`` of the bool masks) hit their exact
    targets: per layer for zero-cost DST, in total for redistributing DST,
    ``exact_count(density, N)`` after the end of a GMP window;
(c) every optimizer state tensor shaped like a masked weight is 0 where the mask is off;
(d) a DST update drops and grows the same number, ``history`` tells the truth,
    and the topology really changes.

Also: bad input gives a ``SparsetrainError`` with a helpful message.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import sparsetrain
from sparsetrain.core.topk import exact_count
from sparsetrain.distributions import layer_densities, uniform_dense_classifier
from sparsetrain.schedules import cosine_decay

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kit import (  # noqa: E402
    LAST_GMP_EVENT,
    OPTIMIZERS,
    PRUNE_DONE,
    TOTAL_STEPS,
    ModelSpec,
    Variant,
    all_variants,
    batch,
    build_model,
    count,
    one_variant_per_method,
    to_device,
    train_step,
)

VARIANTS = all_variants()
PROPERTY_SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None, print_blob=True,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def model_specs(draw) -> ModelSpec:
    kind = draw(st.sampled_from(["mlp", "conv"]))
    if kind == "mlp":
        widths = tuple(draw(st.lists(st.integers(2, 24), min_size=0, max_size=2)))
        return ModelSpec("mlp", widths, bias=draw(st.booleans()), in_features=draw(st.integers(3, 16)))
    widths = tuple(draw(st.lists(st.integers(2, 8), min_size=1, max_size=2)))
    return ModelSpec("conv", widths, bias=draw(st.booleans()), batchnorm=draw(st.booleans()),
                     in_channels=draw(st.integers(1, 3)), side=draw(st.integers(3, 5)))


pytestmark = pytest.mark.usefixtures("one_thread")


densities = st.floats(0.05, 0.9, exclude_min=True, exclude_max=True, allow_nan=False)


# --------------------------------------------------------------------------- the checker
def _snapshot(sp: sparsetrain.Sparsifier) -> dict[str, torch.Tensor]:
    return {n: m.clone() for n, m in sp.masks.items()}


def _counts(masks: dict[str, torch.Tensor]) -> dict[str, int]:
    return {n: count(m) for n, m in masks.items()}


def _check_exact_zeros(params, masks, optimizer, where: str) -> None:
    """Contracts 1 and 3: weights and same-shaped optimizer state are 0 where masks are off."""
    for n, p in params.items():
        m = masks[n]
        assert m.dtype == torch.bool and m.shape == p.shape, f"{where}: mask of {n} is {m.dtype} {tuple(m.shape)}"
        off = ~m
        assert count(p.detach()[off]) == 0, f"{where}: {n} has {count(p.detach()[off])} nonzero inactive weights"
        for key, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                bad = count(value[off])
                assert bad == 0, f"{where}: optimizer state {key!r} of {n} is nonzero at {bad} inactive positions"


def _expected_init_counts(variant: Variant, kwargs: dict, shapes, numel) -> dict[str, int] | None:
    if variant.kind.startswith(("gmp", "granet")):
        init_density = kwargs.get("initial_density", 1.0)
        if init_density >= 1.0:
            return dict(numel)
        dens = layer_densities("erk", shapes, init_density)
        return {n: exact_count(dens[n], numel[n]) for n in shapes}
    if variant.init_distribution is None:
        return None
    dens = layer_densities(variant.init_distribution, shapes, kwargs["density"],
                           dense_first=variant.extra.get("dense_first", False))
    bound = variant.extra.get("bound", 0.0) if variant.kind == "mest_em_s" else 0.0
    return {n: exact_count(min(1.0, dens[n] + bound), numel[n]) for n in shapes}


def run_and_check(variant: Variant, spec: ModelSpec, opt_name: str, density: float, seed: int = 0,
                  hooks: bool = True, device: str = "cpu",
                  dtype: torch.dtype | None = None) -> tuple[sparsetrain.Sparsifier, list[dict], list[tuple]]:
    """Train ``TOTAL_STEPS`` steps checking (a)-(d) after every step.

    ``device`` / ``dtype`` move the model, the batches and every tensor in the
    method's arguments (tests/test_gpu.py runs it on CUDA in float64).
    Returns the sparsifier, the update events and (before, after) masks of every update.
    """
    model = build_model(spec, seed).to(device=device, dtype=dtype)
    opt = OPTIMIZERS[opt_name](model.parameters())
    kwargs = to_device(variant.method_kwargs(density), device, dtype)
    sp = sparsetrain.attach(model, opt, variant.method, total_steps=TOTAL_STEPS, seed=seed, hooks=hooks, **kwargs)
    params = {n: model.get_parameter(n) for n in sp.masks}
    assert list(params) == [n for n, _ in model.named_parameters() if n in params], "masks not in model order"
    shapes = {n: p.shape for n, p in params.items()}
    numel = {n: p.numel() for n, p in params.items()}
    total_numel = sum(numel.values())
    last_name = list(params)[-1]

    masks = _snapshot(sp)
    _check_exact_zeros(params, masks, opt, "after attach")
    init_counts = _counts(masks)
    expected_init = _expected_init_counts(variant, kwargs, shapes, numel)
    if expected_init is not None:
        assert init_counts == expected_init, "init does not give exact per-layer counts"
    gmp_targets = None
    if variant.kind in ("gmp_layer", "granet_layer"):
        dens = uniform_dense_classifier(shapes, density, last_name)
        gmp_targets = {n: exact_count(dens[n], numel[n]) for n in shapes}
    if variant.kind == "mest_em_s":
        base = layer_densities(variant.init_distribution, shapes, density)
        soft_end = variant.extra["soft_end"]
        delta = cosine_decay(variant.extra["bound"], 0.0, horizon=soft_end)

    events: list[dict] = []
    updates: list[tuple] = []
    counts_after_window = None
    for t in range(TOTAL_STEPS):
        prev = masks
        n_hist = len(sp.history)
        x, y = to_device(batch(spec, t, seed), device, dtype)
        train_step(model, opt, x, y, None if hooks else sp)
        step = t + 1
        where = f"{variant.id} step {step}"
        assert sp.step_count == step
        masks = _snapshot(sp)
        _check_exact_zeros(params, masks, opt, where)  # (a), (c)
        counts = _counts(masks)
        new = sp.history[n_hist:]

        if not new:  # (b) between updates nothing moves
            for n in masks:
                assert torch.equal(masks[n], prev[n]), f"{where}: mask of {n} changed without an update"
        else:
            assert len(new) == 1 and new[0]["step"] == step, f"{where}: history {new}"
            ev = new[0]
            events.append(ev)
            updates.append((prev, masks))
            removed = sum(count(prev[n] & ~masks[n]) for n in masks)
            added = sum(count(~prev[n] & masks[n]) for n in masks)
            if variant.regenerates and "dropped" in ev:  # (d) zero-cost: drop k, grow k
                assert ev["dropped"] == ev["grown"], f"{where}: dropped {ev['dropped']} != grown {ev['grown']}"
                assert 0 <= ev["changed"] <= ev["dropped"], f"{where}: {ev}"
                if "density_target" not in ev:  # a pure regeneration: history must match the masks
                    assert removed == added == ev["changed"], f"{where}: masks moved {removed}/{added}, {ev}"
                else:
                    assert removed >= ev["changed"], f"{where}: {ev}"

        kind = variant.kind
        if kind == "layer":
            assert counts == init_counts, f"{where}: per-layer counts {counts} != {init_counts} at init"
        elif kind == "total":
            assert sum(counts.values()) == sum(init_counts.values()), f"{where}: total count drifted"
        elif kind in ("gmp", "gmp_layer", "granet", "granet_layer"):
            if kind.startswith("gmp"):
                for n in masks:
                    assert count(masks[n] & ~prev[n]) == 0, f"{where}: GMP regrew weights in {n}"
            if step <= LAST_GMP_EVENT:
                assert sum(counts.values()) <= sum(_counts(prev).values()), f"{where}: density rose in the window"
            else:  # after the window: fixed per layer
                assert counts == counts_after_window, f"{where}: counts moved after the GMP window"
            if step >= LAST_GMP_EVENT:
                if kind in ("gmp", "granet"):
                    assert sum(counts.values()) == exact_count(density, total_numel), (
                        f"{where}: {sum(counts.values())} active after the GMP window, expected "
                        f"exact_count({density}, {total_numel}) = {exact_count(density, total_numel)}")
                else:
                    assert counts == gmp_targets, f"{where}: per-layer counts {counts} != targets {gmp_targets}"
                counts_after_window = counts
        elif kind in ("prune", "prune_global"):  # scheduled pruning: never regrows, exact at the end
            for n in masks:
                assert count(masks[n] & ~prev[n]) == 0, f"{where}: prune regrew weights in {n}"
            if step >= PRUNE_DONE:
                if kind == "prune":
                    assert counts == {n: exact_count(density, numel[n]) for n in masks}, f"{where}: {counts}"
                else:
                    assert sum(counts.values()) == exact_count(density, total_numel), f"{where}: {counts}"
        elif kind == "mest_em_s" and new:
            if step < soft_end * TOTAL_STEPS:
                target = {n: exact_count(min(1.0, base[n] + delta(step, TOTAL_STEPS)), numel[n]) for n in masks}
            else:
                target = {n: exact_count(base[n], numel[n]) for n in masks}
            assert counts == target, f"{where}: MEST soft-bound counts {counts} != {target}"
    return sp, events, updates


# --------------------------------------------------------------------------- (a)-(d) for every method
def test_every_registered_method_is_covered():
    covered = {v.method for v in VARIANTS}
    assert covered == set(sparsetrain.list_methods())
    generic = sorted(v.method for v in VARIANTS if v.kind == "generic")
    if generic:  # still tested for (a), (c) and "masks move only at updates", but say so
        pytest.skip(f"methods with only the generic checks (add them to tests/_kit.py): {generic}")


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.id)
@PROPERTY_SETTINGS
@given(spec=model_specs(), density=densities, opt_name=st.sampled_from(sorted(OPTIMIZERS)),
       seed=st.integers(0, 2**16), hooks=st.booleans())
def test_masks_weights_and_optimizer_state_stay_exact(variant, spec, density, opt_name, seed, hooks):
    run_and_check(variant, spec, opt_name, density, seed, hooks)


# threshold death drops only the |w| <= 1e-3, often nothing at all: not part of this test
MOVING = [v for v in VARIANTS if v.regenerates and v.kwargs(0.2).get("prune") != "threshold"
          and v.extra.get("moves", True)]


@pytest.mark.parametrize("variant", MOVING, ids=lambda v: v.id)
@pytest.mark.parametrize("opt_name", ["sgd_nesterov_wd", "adamw"])
def test_regeneration_really_changes_topology(variant, opt_name):
    """(d) on a model big enough that a zero-cost update must move weights."""
    spec = ModelSpec("mlp", (32, 24), in_features=16)
    sp, events, updates = run_and_check(variant, spec, opt_name, density=0.2, seed=1)
    regen = [(ev, before, after) for ev, (before, after) in zip(events, updates, strict=True) if "dropped" in ev]
    assert regen, f"{variant.id}: no drop/regrow update in {TOTAL_STEPS} steps: {sp.history}"
    for ev, before, after in regen:
        if ev["dropped"] >= 10 and ev["density"] < 0.9:  # a dense net can only regrow what it dropped
            assert ev["changed"] > 0, f"{variant.id}: update at step {ev['step']} left the topology as it was: {ev}"
            assert any(not torch.equal(before[n], after[n]) for n in before)
    sparse = [ev for ev, _, _ in regen if ev["density"] < 0.9]
    assert sparse and sparse[0]["changed"] > 0, f"{variant.id}: the first sparse update changed nothing: {sp.history}"
    if variant.kind.startswith("granet"):  # regeneration goes on after the pruning window
        late = [ev for ev, _, _ in regen if ev["step"] > LAST_GMP_EVENT]
        assert late and sum(ev["changed"] for ev in late) > 0, f"{variant.id}: {sp.history}"


@pytest.mark.parametrize("method", ["gmp", "granet"])
def test_gmp_reaches_exact_final_count_on_a_half(method):
    """Final GMP density is exactly ``exact_count(d, N)``: d = 0.1 over N = 25 weights keeps 3 (2.5 rounds up).

    Regression: the cubic schedule ends at 1 - (1 - 0.1) = 0.09999999999999998, which kept 2.
    """
    model = nn.Sequential(nn.Linear(5, 5, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, method, density=0.1, initial_density=1.0, update_every=3, start=0.0,
                            end=0.5, total_steps=TOTAL_STEPS)
    spec = ModelSpec("mlp", (), in_features=5)
    for t in range(TOTAL_STEPS):
        x, _ = batch(spec, t)
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    assert count(sp.masks["0.weight"]) == exact_count(0.1, 25) == 3


# Regression: GMP used to fire only at multiples of update_every inside the window, so a window
# holding none left the model dense; now a last event at floor(end * T) reaches the target.


@pytest.mark.parametrize("method", ["gmp", "gmp_uniform", "granet", "granet_uniform"])
@pytest.mark.parametrize("total_steps, kwargs", [
    (40, {"update_every": 100}),  # a short run with a long update period (defaults: 1000 steps)
    (10, {"update_every": 4, "end": 0.3}),  # the window [0, 3] holds no multiple of 4
], ids=["short-run", "short-window"])
def test_gmp_window_without_an_event_is_refused_or_reaches_the_target(method, total_steps, kwargs):
    """Either attach() says the window holds no pruning event, or the final density is still reached."""
    spec = ModelSpec("mlp", (12,), in_features=6)
    model = build_model(spec)
    opt = OPTIMIZERS["sgd"](model.parameters())
    try:
        sp = sparsetrain.attach(model, opt, method, density=0.2, initial_density=1.0, total_steps=total_steps, **kwargs)
    except sparsetrain.SparsetrainError as e:
        assert "update_every" in str(e)
        return
    for t in range(total_steps):
        train_step(model, opt, *batch(spec, t))
    numel = {n: model.get_parameter(n).numel() for n in sp.masks}
    counts = _counts(sp.masks)
    if method in ("gmp", "granet"):
        assert sum(counts.values()) == exact_count(0.2, sum(numel.values())), f"final counts {counts}"
    else:
        dens = uniform_dense_classifier({n: model.get_parameter(n).shape for n in numel}, 0.2, list(numel)[-1])
        assert counts == {n: exact_count(dens[n], numel[n]) for n in numel}, f"final counts {counts}"


# Regression: torch's step hooks get args = (optimizer,), which once made the skip never happen.


@pytest.mark.parametrize("hooks", [True, False])
@pytest.mark.parametrize("opt_name", ["sgd_nesterov_wd", "adam", "adamw"])
def test_zero_preserving_optimizers_skip_the_post_step_remask(opt_name, hooks, monkeypatch):
    """SGD / Adam / AdamW keep zeros from the masked gradient alone (engine.ZERO_PRESERVING): no state re-mask."""
    calls = []
    remask = sparsetrain.Sparsifier._mask_optimizer_state
    monkeypatch.setattr(sparsetrain.Sparsifier, "_mask_optimizer_state", lambda self: calls.append(remask(self)))
    spec = ModelSpec("mlp", (12,), in_features=6)
    model = build_model(spec)
    opt = OPTIMIZERS[opt_name](model.parameters())
    sp = sparsetrain.attach(model, opt, "static", density=0.3, total_steps=TOTAL_STEPS, hooks=hooks)
    calls.clear()
    for t in range(5):
        train_step(model, opt, *batch(spec, t), None if hooks else sp)
    assert len(calls) == 0, f"optimizer state re-masked after {len(calls)} of 5 steps"
    for n, m in sp.masks.items():  # and the zeros are still exact
        assert count(model.get_parameter(n).detach()[~m]) == 0


# --------------------------------------------------------------------------- 4. bad input
def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _attach_fails(method, match, **kwargs) -> str:
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(sparsetrain.SparsetrainError, match=match) as info:
        sparsetrain.attach(net, opt, method, **kwargs)
    # a failed attach leaves the model and optimizer as they were: a correct attach then works
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    sparsetrain.attach(net, opt, "static", density=0.5, total_steps=10)
    return str(info.value)


def test_unknown_method_lists_close_names():
    msg = _attach_fails("rigll", "unknown method 'rigll'", density=0.1, total_steps=10)
    assert "Did you mean: rigl" in msg
    for name in sparsetrain.list_methods():
        assert name in msg  # the full list of choices follows
    with pytest.raises(sparsetrain.SparsetrainError, match="granet"):
        sparsetrain.create_method("grannet")


@pytest.mark.parametrize("variant", one_variant_per_method(), ids=lambda v: v.method)
@pytest.mark.parametrize("density", [0, 0.0, 1.5, -0.1, 150])
def test_bad_density(variant, density):
    kwargs = {**variant.method_kwargs(0.5), "density": density}
    msg = _attach_fails(variant.method, r"density must be in \(0, 1\]", total_steps=10, **kwargs)
    assert repr(density) in msg or str(density) in msg
    if density == 1.5:
        assert "percentage" in msg and "0.015" in msg


@pytest.mark.parametrize("total_steps", [None, 0, -5, 2.5, True, "100"])
def test_bad_total_steps(total_steps):
    kwargs = {} if total_steps is None else {"total_steps": total_steps}
    msg = _attach_fails("rigl", "total_steps", density=0.1, **kwargs)
    assert "len(train_loader)" in msg


def test_model_without_sparsifiable_weights():
    net = nn.Sequential(nn.BatchNorm1d(4), nn.LayerNorm(4))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(sparsetrain.SparsetrainError, match="no parameter to sparsify") as info:
        sparsetrain.attach(net, opt, "rigl", density=0.1, total_steps=10)
    assert "conv and linear" in str(info.value)
    with pytest.raises(sparsetrain.SparsetrainError, match="no parameter to sparsify"):
        sparsetrain.attach(_net(), None, "static", density=0.1, total_steps=10, exclude=["*"])


@pytest.mark.parametrize("variant", one_variant_per_method(), ids=lambda v: v.method)
def test_unknown_method_kwarg(variant):
    kwargs = {**variant.method_kwargs(0.5), "dnsity": 0.1}
    msg = _attach_fails(variant.method, "has no argument 'dnsity'", total_steps=10, **kwargs)
    assert "Its arguments are:" in msg and "density" in msg


def test_snfs_needs_a_cadence():
    _attach_fails("snfs", "steps_per_epoch", density=0.1, total_steps=10)


def test_attaching_twice_to_one_optimizer():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    first = sparsetrain.attach(net, opt, "static", density=0.5, total_steps=10)
    with pytest.raises(sparsetrain.SparsetrainError, match="already has a sparsifier"):
        sparsetrain.attach(net, opt, "static", density=0.5, total_steps=10)
    first.detach()
    sparsetrain.attach(net, opt, "static", density=0.5, total_steps=10)
