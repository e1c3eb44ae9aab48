"""Pruning-at-initialisation methods (snip, grasp, synflow, random, lottery_ticket) and Smart Ratio.

docs/algorithms.md, "Sparse initialisation and layer densities" (lottery_ticket), 6 (Smart Ratio and the baselines),
11; docs/concepts.md, "Guarantees" (exact
counts). The saliency formulas themselves are checked in tests/test_saliency.py.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparsetrain
from sparsetrain.core.topk import bottomk_mask, exact_count, split_global, topk_mask
from sparsetrain.distributions import layer_densities, smart_ratio
from sparsetrain.methods import method_info
from sparsetrain.saliency import grasp_scores, synflow_scores

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ["snip", "grasp", "synflow", "random", "lottery_ticket"]
SCORED = ["snip", "grasp", "synflow", "lottery_ticket"]  # those with a scope


def _net(seed: int = 0, bn: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv1d(1, 6, 3)] + ([nn.BatchNorm1d(6)] if bn else []) + [
        nn.ReLU(), nn.Conv1d(6, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8, 5)]
    return nn.Sequential(*layers)


def _data(n: int = 2, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 1, 12, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(n)]


def _attach(method: str, model: nn.Module | None = None, density: float = 0.2, **kw) -> sparsetrain.Sparsifier:
    model = model if model is not None else _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    kw.setdefault("data", _data())
    if method == "synflow":
        kw.setdefault("iterations", 10)
    return sparsetrain.attach(model, opt, method, density=density, total_steps=10, **kw)


def _counts(sp: sparsetrain.Sparsifier) -> dict[str, int]:
    return {n: int(m.count_nonzero()) for n, m in sp.masks.items()}


def _weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}


# --------------------------------------------------------------------------- Smart Ratio (hand-worked)
SHAPES = {"a": torch.Size([10, 10]), "b": torch.Size([20, 10]), "fc": torch.Size([5, 10])}


def test_smart_ratio_resnet_hand_worked():
    """L = 3: raw p = 3^2 + 3 = 12, 2^2 + 2 = 6; fc fixed at 0.3 (15 weights). Budget 0.2 * 350 = 70,
    so scale = (70 - 15) / (100 * 12 + 200 * 6) = 55 / 2400: a = 0.275, b = 0.1375."""
    d = smart_ratio(SHAPES, 0.2)
    assert d == pytest.approx({"a": 0.275, "b": 0.1375, "fc": 0.3})


def test_smart_ratio_vgg_divides_by_l_squared():
    """raw a = 12 / 1, b = 6 / 4 = 1.5: scale = 55 / (1200 + 300): a = 0.44, b = 0.055."""
    assert smart_ratio(SHAPES, 0.2, variant="vgg") == pytest.approx({"a": 0.44, "b": 0.055, "fc": 0.3})
    assert layer_densities("smart_ratio_vgg", SHAPES, 0.2) == pytest.approx({"a": 0.44, "b": 0.055, "fc": 0.3})


def test_smart_ratio_overflow_goes_to_the_next_layers():
    """Sizes 10, 100, 50 at 0.5: budget 80, scale = 65 / (120 + 600); a = 12 * 65 / 720 = 1.0833 -> 1,
    its surplus 0.8333 weights go to b: 6 * 65 / 720 + 0.8333 / 100 = 0.55. Total 10 + 55 + 15 = 80."""
    d = smart_ratio({"a": torch.Size([10]), "b": torch.Size([100]), "fc": torch.Size([50])}, 0.5)
    assert d == pytest.approx({"a": 1.0, "b": 0.55, "fc": 0.3})


def test_smart_ratio_classifier_larger_than_the_budget_scales_every_layer():
    """fc at 0.3 would be 300 weights of a 110 budget: raw a = 6, fc = 0.3 scaled together by
    110 / (100 * 6 + 1000 * 0.3)."""
    d = smart_ratio({"a": torch.Size([10, 10]), "fc": torch.Size([100, 10])}, 0.1)
    assert d == pytest.approx({"a": 6 * 110 / 900, "fc": 0.3 * 110 / 900})


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(sizes=st.lists(st.integers(1, 400), min_size=1, max_size=7), density=st.floats(0.001, 1.0),
       variant=st.sampled_from(["resnet", "vgg"]))
def test_smart_ratio_keeps_the_total_and_stays_in_range(sizes, density, variant):
    shapes = {f"l{i}": torch.Size([s]) for i, s in enumerate(sizes)}
    d = smart_ratio(shapes, density, variant=variant)
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in d.values())
    assert sum(d[n] * s for n, s in zip(shapes, sizes, strict=True)) == pytest.approx(density * sum(sizes),
                                                                                      rel=1e-9, abs=1e-9)


def test_smart_ratio_bad_variant():
    with pytest.raises(sparsetrain.SparsetrainError, match="unknown smart_ratio variant 'mlp'"):
        smart_ratio(SHAPES, 0.2, variant="mlp")


def test_random_smart_ratio_has_exact_per_layer_counts():
    sp = _attach("random", distribution="smart_ratio", density=0.1)
    dens = layer_densities("smart_ratio", sp.ctx.shapes, 0.1)
    assert _counts(sp) == {n: exact_count(dens[n], sp.ctx.numel(n)) for n in sp.masks}
    assert sp.history[0]["init"] == "random[smart_ratio]"


# --------------------------------------------------------------------------- the masks each paper defines
def _global_top(scores: dict[str, torch.Tensor], density: float, shapes) -> dict[str, torch.Tensor]:
    flat = torch.cat([s.flatten().double() for s in scores.values()])
    return split_global(topk_mask(flat, exact_count(density, flat.numel())), shapes)


def test_snip_keeps_the_global_top_k_of_g_times_w():
    model = _net(1, bn=False)
    params = _weights(model)
    x, y = _data(1)[0]
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(params.values()))
    scores = {n: (g * p.detach()).abs() for (n, p), g in zip(params.items(), grads, strict=True)}
    expected = _global_top(scores, 0.2, {n: p.shape for n, p in params.items()})
    sp = _attach("snip", model, data=[(x, y)])
    for n in expected:
        assert torch.equal(sp.masks[n], expected[n]), n


def test_grasp_keeps_the_lowest_scores():
    model = _net(2)
    params = _weights(model)
    data = _data(1)
    s = grasp_scores(model, params, data)
    flat = torch.cat([v.flatten() for v in s.values()])
    removed = split_global(~bottomk_mask(flat, exact_count(0.2, flat.numel())), {n: p.shape for n, p in params.items()})
    sp = _attach("grasp", model, data=data)
    for n in params:
        assert torch.equal(sp.masks[n], ~removed[n]), n  # kept = the lowest S


def test_synflow_single_iteration_is_single_shot_and_more_iterations_differ():
    model = _net(3)
    params = _weights(model)
    x = _data(1)[0][0]
    expected = _global_top(synflow_scores(model, params, x), 0.05, {n: p.shape for n, p in params.items()})
    one = _attach("synflow", model, density=0.05, iterations=1, example_input=x)
    for n in expected:
        assert torch.equal(one.masks[n], expected[n]), n
    many = _attach("synflow", _net(3), density=0.05, iterations=50, example_input=x)
    assert any(not torch.equal(many.masks[n], one.masks[n]) for n in expected)
    assert many.history[0]["collapsed"] == []  # iterating is what avoids collapse (Tanaka et al. 2020)


def test_lottery_ticket_is_global_magnitude_at_init():
    model = _net(4)
    params = _weights(model)
    expected = _global_top({n: p.detach().abs() for n, p in params.items()}, 0.2,
                           {n: p.shape for n, p in params.items()})
    sp = _attach("lottery_ticket", model)
    for n in expected:
        assert torch.equal(sp.masks[n], expected[n]), n


@pytest.mark.parametrize("method", SCORED)
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("density", [0.03, 0.2, 0.5, 1.0])
def test_exact_counts(method, scope, density):
    """docs/concepts.md, "Guarantees": global scope keeps exact_count(d, N) in all; per layer exact_count(d_l, N_l)."""
    sp = _attach(method, density=density, scope=scope)
    counts, numel = _counts(sp), {n: sp.ctx.numel(n) for n in sp.masks}
    if scope == "global":
        assert sum(counts.values()) == exact_count(density, sum(numel.values()))
    else:
        dens = layer_densities("erk", sp.ctx.shapes, density)
        assert counts == {n: exact_count(dens[n], numel[n]) for n in numel}


@pytest.mark.parametrize("method", METHODS)
def test_mask_is_fixed_after_init_and_inactive_weights_stay_zero(method):
    model = _net(5)
    sp = _attach(method, model, density=0.1)
    init = {n: m.clone() for n, m in sp.masks.items()}
    opt = sp.optimizer
    for x, y in _data(4, seed=9):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert len(sp.history) == 1 and sp.step_count == 4
    for n, p in sp.ctx.params.items():
        assert torch.equal(sp.masks[n], init[n]), n
        assert int(p.detach()[~init[n]].count_nonzero()) == 0, n


@pytest.mark.parametrize("method", METHODS)
def test_scoring_does_not_change_weights_statistics_or_rng(method):
    model = _net(6)
    model[1].running_mean.uniform_(-1, 1)  # BN statistics that a train-mode forward would move
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = _data()
    rng = torch.get_rng_state()
    sp = _attach(method, model, data=data)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype, k
        if k in sp.masks:  # weights: untouched where active, zeroed by the engine elsewhere
            assert torch.equal(v[sp.masks[k]], before[k][sp.masks[k]]), k
        else:
            assert torch.equal(v, before[k]), k


def test_snip_reads_only_its_batches_from_a_generator():
    drawn = []

    def batches():
        for i, b in enumerate(_data(5)):
            drawn.append(i)
            yield b
    _attach("snip", data=batches(), n_batches=2)
    assert drawn == [0, 1]


# --------------------------------------------------------------------------- layer collapse
def _collapsing_net() -> nn.Module:
    """The middle layer's weights are 1000x smaller: global magnitude removes all of them."""
    torch.manual_seed(7)
    net = nn.Sequential(nn.Linear(10, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 3))
    with torch.no_grad():
        net[2].weight.mul_(1e-3)
    return net


def test_layer_collapse_is_warned_and_recorded():
    with pytest.warns(RuntimeWarning, match=r"lottery_ticket: layer collapse.*2\.weight"):
        sp = _attach("lottery_ticket", _collapsing_net(), density=0.1)
    assert sp.history[0]["collapsed"] == ["2.weight"] and sp.history[0]["n_collapsed"] == 1
    assert int(sp.masks["2.weight"].count_nonzero()) == 0


def test_layer_collapse_can_be_an_error():
    with pytest.raises(sparsetrain.SparsetrainError, match=r"layer collapse.*2\.weight.*on_collapse='warn'"):
        _attach("lottery_ticket", _collapsing_net(), density=0.1, on_collapse="error")


@pytest.mark.parametrize("method, kwargs", [("lottery_ticket", {"scope": "layer"}), ("synflow", {"iterations": 100}),
                                            ("random", {})])
def test_no_collapse_per_layer_or_with_iterative_synflow(method, kwargs):
    """Per-layer budgets never empty a layer; SynFlow's conservation keeps the tiny layer alive
    where global magnitude removes it (Tanaka et al. 2020, the point of the paper)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sp = _attach(method, _collapsing_net(), density=0.1, data=[(torch.randn(4, 10), torch.zeros(4).long())],
                     **kwargs)
    assert sp.history[0]["collapsed"] == []


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_missing_data_says_to_pass_data(method):
    with pytest.raises(sparsetrain.SparsetrainError, match=rf"{method} scores the weights.*pass data=.*attach"):
        _attach(method, data=None)


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
@pytest.mark.parametrize("empty", [[], "iterator"])
def test_a_loader_that_yields_nothing(method, empty):
    data = iter([]) if empty == "iterator" else torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.zeros(0, 1, 12), torch.zeros(0).long()), batch_size=4)
    with pytest.raises(sparsetrain.SparsetrainError, match=f"{method}: the data loader yielded no batches"):
        _attach(method, data=data)


def test_synflow_without_any_input_says_what_to_pass():
    with pytest.raises(sparsetrain.SparsetrainError, match="synflow needs the input shape.*example_input="):
        _attach("synflow", data=None)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("density", [0, -0.1, 1.5, 90])
def test_density_outside_0_1(method, density):
    with pytest.raises(sparsetrain.SparsetrainError, match=r"density must be in \(0, 1\]"):
        _attach(method, density=density)


@pytest.mark.parametrize("method, kwargs, match", [
    ("snip", {"scope": "local"}, "unknown scope 'local'"),
    ("grasp", {"distribution": "erkk"}, "unknown distribution 'erkk'"),
    ("random", {"distribution": "smartratio"}, "unknown distribution 'smartratio'. Did you mean: smart_ratio"),
    ("synflow", {"on_collapse": "ignore"}, "unknown on_collapse 'ignore'"),
    ("snip", {"n_batches": 0}, "n_batches must be a whole number >= 1"),
    ("synflow", {"iterations": 2.5}, "iterations must be a whole number >= 1"),
    ("grasp", {"temperature": 0.0}, "temperature must be > 0"),
])
def test_bad_arguments(method, kwargs, match):
    with pytest.raises(sparsetrain.SparsetrainError, match=match):
        _attach(method, **kwargs)


def test_registered_as_init_methods():
    assert set(METHODS) <= set(sparsetrain.list_methods())
    assert all(method_info(m)["family"] == "init" for m in METHODS)


# --------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", ["snip", "synflow"])
def test_trainer_runs_pruning_at_init_end_to_end(method, tmp_path):
    """The reference trainer passes data / example_input; the init event reaches metrics.jsonl."""
    from sparsetrain.train.config import load_config
    from sparsetrain.train.loop import train
    cfg = load_config(None, ["--data.name", "digits", "--model.name", "mlp", "--model.hidden", "[32]",
                             "--method.name", method, "--method.density", "0.1", "--epochs", "1", "--threads", "1",
                             "--batch_size", "64", "--run.plots", "false", "--run.progress", "false"])
    if method == "synflow":
        cfg["method"]["iterations"] = 5
    summary = train(cfg, tmp_path / method)
    n = 64 * 32 + 32 * 10
    assert summary["density"] == exact_count(0.1, n) / n
    first = json.loads((tmp_path / method / "metrics.jsonl").read_text().splitlines()[0])
    assert first["init"] == method and first["step"] == 0 and first["n_collapsed"] == 0
    assert math.isfinite(summary["final_test_acc"])


@pytest.mark.slow
def test_benchmark_script_quick_run(tmp_path):
    """benchmarks/init_pruning.py --quick on digits for one epoch: every method gets a table row."""
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "init_pruning.py"
    proc = subprocess.run([sys.executable, str(script), "--quick", "--epochs", "1", "--data", "digits", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ["random[erk]", "random[smart_ratio]", "snip", "grasp", "synflow", "lottery_ticket", "rigl", "granet"]:
        assert f"| {label} | " in proc.stdout, label
    assert json.loads((tmp_path / "e1" / "init_pruning.json").read_text())["rows"]


@pytest.mark.parametrize("name", ["snip", "grasp", "synflow", "random", "lottery_ticket"])
def test_pruning_at_init_on_whole_kernels(name):
    """Every method takes granularity=: per layer, an exact number of whole kernels survives."""
    from sparsetrain.core.granularity import get_granularity
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,)))]
    kw = {"iterations": 3} if name == "synflow" else {}
    kw.update({"distribution": "uniform"} if name == "random" else {"scope": "layer", "distribution": "uniform"})
    sp = sparsetrain.attach(net, torch.optim.SGD(net.parameters(), lr=0.1), name, density=0.25, total_steps=5,
                            granularity="kernel", exclude=["4.*"], data=data, example_input=data[0][0], **kw)
    gran = get_granularity("kernel")
    for n, m in sp.masks.items():
        groups = gran.group_scores(m.float())
        assert set(groups.flatten().tolist()) <= {0.0, 1.0}, n
        assert int(groups.sum()) == exact_count(0.25, groups.numel()), n
