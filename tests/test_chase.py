"""Chase (docs/algorithms.md, "Chase"): channel scores, the channel schedule, minimum widths, exact selection,
removal that stays removed, the global parameter budget, a property test, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import sparsetrain
from sparsetrain.context import SparseContext
from sparsetrain.core.topk import exact_count
from sparsetrain.ops.channels import (
    KEY,
    channel_cadence,
    channel_plan,
    channel_scores,
    channel_sparsity,
    min_width,
    normalize_scores,
    prune_channels,
    select_channels,
)
from sparsetrain.schedules import cosine_decay
from sparsetrain.train.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _ctx(model: nn.Module, masks: dict[str, torch.Tensor], x: torch.Tensor) -> SparseContext:
    params = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    ctx = SparseContext(params=params, masks=dict(masks), optimizer=None, total_steps=10,
                        generator=torch.Generator().manual_seed(0), model=model, example_input=x)
    channel_plan(0.5, 0.5)(ctx)
    return ctx


# --------------------------------------------------------------------------- 5.2 scores, by hand
def test_channel_scores_by_hand():
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.25, 0.0, -1.0]]))
    mask0 = torch.tensor([[True, True, False], [True, False, True]])
    ctx = _ctx(net, {"0.weight": mask0, "2.weight": torch.ones(1, 2, dtype=torch.bool)}, torch.randn(2, 3))
    # UMM: sum |w| over active / fan-in 3 (the inactive 0.5 counts as zero)
    torch.testing.assert_close(channel_scores(ctx, "umm")["0"], torch.tensor([3.0 / 3, 1.25 / 3]))
    torch.testing.assert_close(channel_scores(ctx, "mask_wise")["0"], torch.tensor([3.0 / 2, 1.25 / 2]))
    torch.testing.assert_close(channel_scores(ctx, "connection_wise")["0"], torch.tensor([2 / 3, 2 / 3]))
    torch.testing.assert_close(channel_scores(ctx, "kernel_wise")["0"], torch.tensor([2 / 3, 2 / 3]))


def test_kernel_wise_counts_kernels_with_an_active_weight():
    net = nn.Sequential(nn.Conv2d(2, 2, 2), nn.ReLU(), nn.Conv2d(2, 1, 1))
    mask = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
    mask[0, 0, 1, 1] = True  # channel 0: one of its two kernels is alive
    mask[1, :, 0, 0] = True  # channel 1: both kernels, one weight each
    ctx = _ctx(net, {"0.weight": mask, "2.weight": torch.ones(1, 2, 1, 1, dtype=torch.bool)}, torch.randn(1, 2, 4, 4))
    torch.testing.assert_close(channel_scores(ctx, "kernel_wise")["0"], torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(channel_scores(ctx, "connection_wise")["0"], torch.tensor([1 / 8, 2 / 8]))


# --------------------------------------------------------------------------- 5.3 schedule, cadence, widths
def test_channel_schedule_numbers():
    cubic, cosine = channel_sparsity(0.5, 0.8, "cubic"), channel_sparsity(0.5, 0.8, "cosine")
    T = 1000  # t_f = 800
    assert cubic(0, T) == 0.0 and cosine(0, T) == 0.0
    assert cubic(400, T) == pytest.approx(0.5 * (1 - 0.5 ** 3))  # 0.4375
    assert cosine(400, T) == pytest.approx(0.25)
    assert cubic(200, T) == pytest.approx(0.5 * (1 - 0.75 ** 3))  # 0.2890625
    assert cubic(800, T) == cubic(1000, T) == 0.5
    # the seed's CIFAR cadence: L = 1000, +500 offset, t_f = 130 of 160 epochs at 450 steps
    due = channel_cadence(1000, 500, 130 / 160)
    events = [t for t in range(1, 72_001) if due(t, 72_000)]
    assert events[:3] == [500, 1500, 2500] and events[-1] == 57_500 and len(events) == 58  # t < t_f = 58 500


def test_min_width():
    assert min_width(512, 0.5, 0.2) == 51  # VGG-19 conv: floor(512 * 0.5 * 0.2)
    assert min_width(64, 0.5, 0.5) == 16  # ResNet-50 bottleneck
    assert min_width(4, 0.5, 0.2) == 1  # floor gives 0: we keep one, no layer disappears


def test_selection_respects_the_minimum_and_is_exact():
    scores = {"a": torch.tensor([0.1, 0.2, 0.3, 0.4]), "b": torch.tensor([0.5, 0.6, 0.7, 0.8])}
    alive = {n: torch.ones(4, dtype=torch.bool) for n in scores}
    out = select_channels(scores, alive, {"a": 2, "b": 1}, 4, torch.Generator())
    # a would lose 4 of 4: capped at 2 (its lowest), the other 2 come from b's lowest
    assert out["a"].tolist() == [True, True, False, False]
    assert out["b"].tolist() == [True, True, False, False]
    # more than every group may give: each goes down to its minimum
    out = select_channels(scores, alive, {"a": 2, "b": 1}, 100, torch.Generator())
    assert [int(out[n].sum()) for n in "ab"] == [2, 3]
    # dead channels are never chosen again
    alive["a"] = torch.tensor([False, True, True, True])
    out = select_channels(scores, alive, {"a": 1, "b": 1}, 1, torch.Generator())
    assert out["a"].tolist() == [False, True, False, False]


def test_ties_are_drawn_with_the_generator_and_counts_stay_exact():
    scores = {"a": torch.zeros(10), "b": torch.zeros(10)}
    alive = {n: torch.ones(10, dtype=torch.bool) for n in scores}
    picks = []
    for seed in (0, 0, 1):
        out = select_channels(scores, alive, {"a": 1, "b": 1}, 7, torch.Generator().manual_seed(seed))
        assert sum(int(v.sum()) for v in out.values()) == 7
        picks.append(torch.cat([out["a"], out["b"]]))
    assert torch.equal(picks[0], picks[1]) and not torch.equal(picks[0], picks[2])


# --------------------------------------------------------------------------- score_norm="layer" (our extension)
def test_layer_normalisation_by_hand():
    late, early = torch.tensor([0.01, 0.02, 0.03, 0.04]), torch.tensor([1.0, 3.0, 3.0, 5.0])
    alive = {"late": torch.ones(4, dtype=torch.bool), "early": torch.ones(4, dtype=torch.bool)}
    out = normalize_scores({"late": late, "early": early}, alive, "layer")
    # means over all 4 channels: 0.025 and 3.0
    torch.testing.assert_close(out["late"], torch.tensor([0.4, 0.8, 1.2, 1.6]))
    torch.testing.assert_close(out["early"], torch.tensor([1 / 3, 1.0, 1.0, 5 / 3]))
    assert normalize_scores({"late": late}, alive, "none")["late"] is late
    # a removed channel counts as 0 in the mean: (0.02 + 0.03 + 0.04) / 4 = 0.0225
    gone = {"late": torch.tensor([False, True, True, True])}
    torch.testing.assert_close(normalize_scores({"late": late}, gone, "layer")["late"][1:],
                               torch.tensor([0.02, 0.03, 0.04]) / 0.0225)
    # all-zero group: stays zero (empty channels, free to remove), no division by zero
    zero = normalize_scores({"z": torch.zeros(3)}, {"z": torch.ones(3, dtype=torch.bool)}, "layer")["z"]
    assert zero.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(sparsetrain.SparsetrainError, match="normalisation"):
        normalize_scores({}, {}, "flops")


@pytest.mark.parametrize(("norm", "removed"), [("none", {"0": [], "2": [0, 1]}), ("layer", {"0": [0], "2": [0]})])
def test_prune_channels_seed_ranking_vs_layer_normalised(norm, removed):
    """Raw UMM takes both channels from the small-scale layer; normalised, each layer's weakest goes."""
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 3.0, 3.0, 5.0])[:, None].expand(4, 4))   # UMM 1, 3, 3, 5
        net[2].weight.copy_(torch.tensor([0.01, 0.02, 0.03, 0.04])[:, None].expand(4, 4))
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if n.endswith("weight")}
    ctx = _ctx(net, masks, torch.randn(2, 4))
    out = prune_channels(lambda t, total: 0.25, "umm", norm)(ctx)  # k = floor(0.25 * 8) = 2
    assert out["channels_removed"] == 2
    for group, idx in removed.items():
        assert torch.nonzero(~ctx.state[KEY]["alive"][group]).flatten().tolist() == idx


# --------------------------------------------------------------------------- the method end to end
def _attach(model, x, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    args = dict(density=0.2, channel_sparsity=0.4, channel_every=4, channel_offset=1, update_every=3,
                end=0.75, soft_end=0.5, min_ratio=0.5)
    args.update(kw)
    sp = sparsetrain.attach(model, opt, "chase", total_steps=24, seed=3, example_input=x, **args)
    return sp, opt


def _train(model, opt, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _check_removed_empty(sp) -> int:
    """Producer rows and consumer columns of removed channels: masks off, weights 0, biases 0."""
    plan, params = sp.ctx.state[KEY], dict(sp.model.named_parameters())
    n_dead = 0
    for name, alive in plan["alive"].items():
        dead = torch.nonzero(~alive).flatten()
        n_dead += dead.numel()
        assert int(alive.sum()) >= plan["min"][name]
        for param, dim, pos in plan["producers"][name] + plan["consumers"][name]:
            idx = pos[dead].flatten()
            assert not sp.masks[param].index_select(dim, idx).any(), f"{param}: a removed channel regrew"
            assert not params[param].detach().index_select(dim, idx).any()
        bias = params.get(name + ".bias")
        if bias is not None:
            assert not bias.detach()[dead].any(), f"{name}.bias of removed channels is not 0"
    return n_dead


def test_removed_channels_stay_empty_and_the_budget_is_kept():
    torch.manual_seed(0)
    model = create_model("cnn1d", in_channels=1, width=16)
    x, y = torch.randn(16, 1, 40), torch.randint(0, 10, (16,))
    sp, opt = _attach(model, x)
    n_total = sp.ctx.total_numel()
    plan = sp.ctx.state[KEY]
    assert plan["total"] == 8 + 16 + 16 + 16
    delta = cosine_decay(0.05, 0.0, horizon=0.5)
    for t in range(1, 25):
        _train(model, opt, x, y, 1)
        removed = _check_removed_empty(sp)
        event = sp.history[-1]
        if event["step"] == t and "grown" in event:  # a DST update: the total is exact, of the ORIGINAL size
            d = 0.2 + delta(t, 24) if t < 12 else 0.2
            assert sp.ctx.total_active() == exact_count(d, n_total), (t, event)
    assert sp.ctx.total_numel() == n_total
    # events at 3, 7, 11, 15 (< 18): the last one at S(15) of the cubic curve
    s_last = 0.4 * (1 - (1 - 15 / 18) ** 3)
    assert removed == math.floor(s_last * plan["total"] + 1e-9)
    # global reallocation: the surviving part is denser than d
    alive_weights = sum(int(m.numel()) for m in sp.masks.values()) - sum(
        int((~m).sum()) for m in _surviving(sp).values())
    assert sp.ctx.total_active() / alive_weights > 0.2


def _surviving(sp):
    from sparsetrain.ops.channels import surviving
    return surviving(sp.ctx)


def test_prune_skip_removes_residual_channels_together():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4,))
    sp, opt = _attach(model, x, prune_skip=True, channel_sparsity=0.5, min_ratio=0.1)
    plan = sp.ctx.state[KEY]
    assert "conv" in plan["alive"]  # the stage-1 residual stream (stem + every block's conv2)
    assert [p for p, _, _ in plan["producers"]["conv"]] == ["conv.weight", "layer1.0.conv2.weight",
                                                            "layer1.1.conv2.weight", "layer1.2.conv2.weight"]
    _train(model, opt, x, y, 24)
    assert _check_removed_empty(sp) > 0
    default, _ = _attach(create_model("resnet20", num_classes=3), x)
    assert "conv" not in default.ctx.state[KEY]["alive"] and len(default.ctx.state[KEY]["alive"]) == 9


def test_channel_sparsity_zero_is_plain_mest_dst_without_tracing():
    model = create_model("cnn1d", in_channels=1, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = sparsetrain.attach(model, opt, "chase", density=0.3, channel_sparsity=0.0, update_every=2, total_steps=10)
    assert KEY not in sp.ctx.state and sp.density() == pytest.approx(0.3, abs=1e-3)


def test_mest_false_runs_the_dst_phase_from_the_start():
    torch.manual_seed(0)
    model = create_model("cnn1d", in_channels=1, width=8)
    x, y = torch.randn(8, 1, 40), torch.randint(0, 10, (8,))
    sp, opt = _attach(model, x, mest=False)
    _train(model, opt, x, y, 24)
    updates = [e for e in sp.history if "dropped" in e]
    assert updates[0]["step"] == 3 and sp.ctx.total_active() == exact_count(0.2, sp.ctx.total_numel())


# --------------------------------------------------------------------------- property test on small conv nets
@st.composite
def conv_nets(draw):
    widths = draw(st.lists(st.integers(2, 8), min_size=1, max_size=3))
    bias, bn = draw(st.booleans()), draw(st.booleans())
    layers, ch = [], 2
    for w in widths:
        layers += [nn.Conv2d(ch, w, 3, padding=1, bias=bias)] + ([nn.BatchNorm2d(w)] if bn else []) + [nn.ReLU()]
        ch = w
    layers += [nn.Flatten(), nn.Linear(ch * 16, 3)]
    return nn.Sequential(*layers), widths


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(net=conv_nets(), density=st.floats(0.05, 0.6), target=st.floats(0.1, 0.8), beta=st.floats(0.0, 1.0),
       score=st.sampled_from(["umm", "mask_wise", "kernel_wise", "connection_wise"]), seed=st.integers(0, 1000),
       norm=st.sampled_from(["none", "layer"]))
def test_property_channels_and_budget_are_exact(net, density, target, beta, score, seed, norm):
    model, widths = net
    torch.manual_seed(seed)
    x, y = torch.randn(6, 2, 4, 4), torch.randint(0, 3, (6,))
    sp, opt = _attach(model, x, density=density, channel_sparsity=target, min_ratio=beta, score=score,
                     score_norm=norm)
    plan = sp.ctx.state[KEY]
    assert plan["total"] == sum(widths)
    capacity = sum(w - min_width(w, target, beta) for w in widths)
    n_total = sp.ctx.total_numel()
    delta = cosine_decay(0.05, 0.0, horizon=0.5)
    schedule = channel_sparsity(target, 0.75)
    removed = 0
    for t in range(1, 25):
        _train(model, opt, x, y, 1)
        removed_now = _check_removed_empty(sp)
        assert removed_now >= removed
        removed = removed_now
        if (t + 1) % 4 == 0 and t < 18:
            assert removed == min(math.floor(schedule(t, 24) * plan["total"] + 1e-9), capacity)
        if t % 3 == 0:
            room = sum(int(m.numel()) for m in sp.masks.values()) - sum(
                int((~m).sum()) for m in _surviving(sp).values())
            d = density + delta(t, 24) if t < 12 else density
            assert sp.ctx.total_active() == min(exact_count(d, n_total), room)


def test_kernel_granularity_keeps_whole_kernels_and_exact_group_counts():
    """Chase on whole kernels: channel removal takes whole kernels; after every DST update the number of
    active kernels is exact_count(d, G) of the original G kernels; removed channels stay empty."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 16, 3))
    x, y = torch.randn(6, 2, 4, 4), torch.randint(0, 3, (6,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, "chase", total_steps=24, seed=3, example_input=x, exclude=("6.*",),
                            density=0.3, channel_sparsity=0.4, channel_every=4, channel_offset=1, update_every=3,
                            end=0.75, soft_end=0.5, granularity="kernel")
    kernels = {n: m.shape[0] * m.shape[1] for n, m in sp.masks.items()}
    n_groups = sum(kernels.values())
    delta = cosine_decay(0.05, 0.0, horizon=0.5)

    def alive_kernels() -> int:
        return sum(int(m.any(-1).any(-1).sum()) for m in sp.masks.values())

    assert alive_kernels() == sum(exact_count(d, kernels[n]) for n, d in
                                  sparsetrain.distributions.layer_densities("erk", sp.ctx.shapes, 0.3).items())
    updates = 0
    for t in range(1, 25):
        _train(model, opt, x, y, 1)
        for name, m in sp.masks.items():
            per_kernel = m.sum((2, 3))
            assert bool(((per_kernel == 0) | (per_kernel == 9)).all()), f"step {t}: {name} has a partial kernel"
        event = sp.history[-1]
        if event["step"] == t and "grown" in event:
            d = 0.3 + delta(t, 24) if t < 12 else 0.3
            assert alive_kernels() == exact_count(d, n_groups), (t, event)
            updates += 1
    assert updates == 7 and _check_removed_empty(sp) > 0  # steps 3, 6, ..., 21: the window ends before step 24


@pytest.mark.parametrize("granularity", ["row", "filter", "2:4", "block2x2"])
def test_granularities_that_channel_removal_would_cut_are_refused(granularity):
    with pytest.raises(sparsetrain.SparsetrainError, match="chase removes single channels.*use one of weight, kernel"):
        sparsetrain.create_method("chase", granularity=granularity)


# --------------------------------------------------------------------------- bad input
def test_bad_input():
    model = create_model("cnn1d", in_channels=1, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(sparsetrain.SparsetrainError, match="example_input"):
        sparsetrain.attach(model, opt, "chase", total_steps=10)
    for kwargs, match in [({"channel_sparsity": 1.0}, "below 1"), ({"channel_sparsity": 1.5}, "channel_sparsity"),
                          ({"score": "l2"}, "unknown channel score"), ({"curve": "linear"}, "unknown curve"),
                          ({"min_ratio": -0.1}, "min_ratio"), ({"channel_every": 0}, "channel_every"),
                          ({"end": 0.0}, "0 <= start < end"), ({"score_norm": "flops"}, "unknown score_norm")]:
        with pytest.raises(sparsetrain.SparsetrainError, match=match):
            sparsetrain.create_method("chase", **kwargs)


# --------------------------------------------------------------------------- per-channel statistics, trainer
def test_channel_stats_by_hand():
    from sparsetrain.metrics.channels import channel_densities, channel_stats
    masks = {"a": torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool),  # rows 1.0, 0.25
             "b": torch.zeros(3, 2, 1, dtype=torch.bool), "bias": torch.ones(3, dtype=torch.bool)}
    masks["b"][0] = True  # rows 1.0, 0.0, 0.0
    assert [d.tolist() for d in channel_densities(masks).values()] == [[1.0, 0.25], [1.0, 0.0, 0.0]]
    s = channel_stats(masks)  # overall 7 / 14 = 0.5: rows 0.25, 0, 0 are below
    assert (s["channels"], s["amenable"], s["empty"]) == (5, 3 / 5, 2 / 5)
    assert s["amenable[a]"] == 0.5 and s["amenable[b]"] == 2 / 3
    layer = channel_stats(masks, reference="layer")  # a: 5/8, b: 2/6
    assert layer["amenable[a]"] == 0.5 and layer["amenable[b]"] == 2 / 3
    assert channel_stats(masks, ratio=0.1)["amenable"] == 2 / 5
    with pytest.raises(sparsetrain.SparsetrainError, match="unknown reference"):
        channel_stats(masks, reference="global")


def test_trainer_logs_channel_events_and_statistics(tmp_path, capsys):
    import json

    from sparsetrain.cli import main
    rc = main(["train", "--config", "chase_mnist1d", "--epochs", "2", "--data.num_samples", "600", "--batch_size",
               "50", "--model.width", "8", "--threads", "1", "--run.plots", "false", "--method.update_every", "3",
               "--method.channel_every", "4", "--method.channel_offset", "1", "--run.dir", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    (run_dir,) = tmp_path.iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    channel_events = [r for r in records if r.get("event") == "update" and "channels_removed" in r]
    assert channel_events and channel_events[-1]["channel_sparsity"] > 0
    assert all(0.0 <= r["amenable_channels"] <= 1.0 for r in records if "amenable_channels" in r)
    assert any("amenable_channels" in r for r in records)


@pytest.mark.slow
def test_accuracy_benchmark_quick_run(tmp_path, capsys):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import chase_accuracy
    assert chase_accuracy.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "chase S_c = 0.3" in out and "Compact model accuracy equal to the uncompacted one on every seed: True" in out
