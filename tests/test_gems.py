"""Rare Gems / Gem-Miner and edge-popup (docs/algorithms.md, "Rare Gems / Gem-Miner and edge-popup"): the score
machinery, the
thresholding schedule, rounding and unflagging, the sanity checks, the config mapping
and an end-to-end run on scikit-learn's digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsetrain.core.topk import exact_count
from sparsetrain.errors import SparsetrainError
from sparsetrain.procedures.gems import finetune_masks, prepare_model, run_gems, sanity_masks
from sparsetrain.procedures.gems_config import (
    check_reachable,
    from_rare_gems,
    is_prune_epoch,
    is_rare_gems,
    load_gems_config,
    round_rate,
    rounds,
    search_milestones,
    survivors,
)
from sparsetrain.procedures.scores import ScoreSearch, init_scores, regularization, signed_constant_

#: the Rare Gems repository's sample config (ResNet-20, CIFAR-10, 0.59 % remaining), its keys and values
SAMPLE_CONFIG = """
algo: 'hc_iter'
iter_period: 5
arch: resnet20
dataset: CIFAR10
name: resnet20_quantized_iter_hc
optimizer: sgd
lr: 0.1
lr_policy: cosine_lr
fine_tune_lr: 0.01
fine_tune_lr_policy: multistep_lr
epochs: 150
wd: 0.0
momentum: 0.9
batch_size: 128
conv_type: SubnetConv
bn_type: NonAffineBatchNorm
freeze_weights: True
prune_type: BottomK
target_sparsity: 0.59
unflag_before_finetune: True
init: signed_constant
score_init: unif
scale_fan: False
round: naive
noise: True
noise_ratio: 0
hc_quantized: True
quantize_threshold: 0.5
regularization: L2
lmbda: 0.0001
workers: 4
gpu: 0
checkpoint_at_prune: False
skip_sanity_checks: False
"""


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def _search(algo: str = "hc_iter", density: float = 0.5, **kw) -> ScoreSearch:
    return ScoreSearch.create(_net(), algo, density, generator=torch.Generator().manual_seed(0), **kw)


# ---------------------------------------------------------------- the thresholding schedule (6)
def test_rate_reaches_five_percent_in_exactly_29_rounds():
    # the sample config: E = 150, P = 5 -> K = floor(149 / 5) = 29 rounds after epochs 5, 10, ..., 145
    assert rounds(150, 5) == 29
    assert [e for e in range(150) if is_prune_epoch(e, 5)] == list(range(5, 146, 5))
    q = round_rate(0.05, 29)
    assert q == pytest.approx(1 - math.exp(math.log(0.05) / 29))
    assert q == pytest.approx(0.0981446, abs=1e-7)  # 0.05 ** (1/29) = exp(-2.9957323 / 29) = 0.9018554
    n = 1000
    counts = [survivors(n, 0.05, 29, r) for r in range(30)]
    assert counts[0] == n and counts[29] == 50  # exactly round(0.05 * 1000) after round K
    assert counts[28] > 50  # not one round early
    for r in range(1, 30):  # each round removes q of the flagged weights, to within one weight
        assert abs(counts[r] - counts[r - 1] * (1 - q)) <= 1.0


def test_rate_tiny_hand_case():
    # N = 100, target 25 %, E = 5, P = 2: rounds after epochs 2 and 4, q = 1 - sqrt(0.25) = 0.5
    assert rounds(5, 2) == 2 and [e for e in range(5) if is_prune_epoch(e, 2)] == [2, 4]
    assert round_rate(0.25, 2) == 0.5
    assert [survivors(100, 0.25, 2, r) for r in range(3)] == [100, 50, 25]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), d=st.floats(0.001, 1.0), k=st.integers(1, 40))
def test_survivors_shrink_monotonically_to_the_exact_target(n, d, k):
    counts = [survivors(n, d, k, r) for r in range(k + 1)]
    assert counts[0] == n and counts[-1] == exact_count(d, n)
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))


def test_keep_top_is_global_bottom_k_among_flagged_with_index_ties():
    s = _search()
    s.scores = {"0.weight": torch.tensor([[0.9, 0.1], [0.3, 0.3]]), "2.weight": torch.tensor([[0.3, 0.8]])}
    s.flags = {"0.weight": torch.tensor([[True, True], [True, True]]), "2.weight": torch.tensor([[True, False]])}
    assert s.keep_top_(3) == 2  # 5 flagged -> 3: 0.9 and two of the three 0.3s (lower index first)
    assert s.flags["0.weight"].tolist() == [[True, False], [True, True]]
    assert s.flags["2.weight"].tolist() == [[False, False]]  # 0.8 was already unflagged: never comes back


def test_thresholding_rounds_in_a_search_reach_the_target_count():
    s = _search(density=0.25)
    total = s.numel()
    for r in range(1, 4):
        with torch.no_grad():
            for p in s.scores.values():
                p.uniform_()
        s.keep_top_(survivors(total, 0.25, 3, r))
    assert s.flagged() == exact_count(0.25, total)


# ---------------------------------------------------------------- forward, STE, projection
def test_straight_through_gradient_equals_the_mask_gradient():
    s = _search()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    nn.functional.cross_entropy(s(x), y).backward()
    # the same forward with the 0/1 masks as leaf tensors
    masks = {n: ((p.detach() > 0.5) & s.flags[n]).float().requires_grad_(True) for n, p in s.scores.items()}
    out = torch.func.functional_call(s.model, {n: w * masks[n] for n, w in s.weights.items()}, (x,))
    nn.functional.cross_entropy(out, y).backward()
    for n, p in s.scores.items():
        torch.testing.assert_close(p.grad, masks[n].grad)


def test_flagged_off_scores_get_no_data_gradient_and_masks_are_zero():
    s = _search()
    s.flags["0.weight"][0] = False
    with torch.no_grad():
        s.scores["0.weight"][0] = 0.9
    assert s.soft_masks()["0.weight"][0].eq(0).all()
    s(torch.randn(5, 4)).sum().backward()
    assert s.scores["0.weight"].grad[0].eq(0).all()


def test_edge_popup_gradient_reaches_p_through_abs():
    s = _search("ep")
    x = torch.randn(5, 4)
    s(x).pow(2).sum().backward()
    masks = {n: m.detach().clone().requires_grad_(True) for n, m in s.soft_masks().items()}
    out = torch.func.functional_call(s.model, {n: w * masks[n] for n, w in s.weights.items()}, (x,))
    out.pow(2).sum().backward()
    for n, p in s.scores.items():
        torch.testing.assert_close(p.grad, masks[n].grad * p.detach().sign())


def test_continuous_hc_forward_is_w_times_p_times_flag():
    s = _search("hc", quantized=False)
    x = torch.randn(3, 4)
    out = torch.func.functional_call(s.model, {n: w * s.scores[n].detach() for n, w in s.weights.items()}, (x,))
    torch.testing.assert_close(s(x), out)


def test_projection_clamps_hypercube_scores_only():
    s = _search()
    with torch.no_grad():
        s.scores["0.weight"].fill_(1.7)
        s.scores["2.weight"].fill_(-0.3)
    s.project_()
    assert s.scores["0.weight"].eq(1).all() and s.scores["2.weight"].eq(0).all()
    e = _search("ep")
    with torch.no_grad():
        e.scores["0.weight"].fill_(1.7)
    e.project_()
    assert e.scores["0.weight"].eq(1.7).all()


@pytest.mark.parametrize("density", [0.1, 0.34, 0.5])
def test_edge_popup_keeps_exact_per_layer_top_k(density):
    s = _search("ep", density)
    masks = s.hard_masks()
    for n, m in masks.items():
        k = exact_count(density, m.numel())
        assert int(m.sum()) == k
        assert s.scores[n].detach().abs()[m].min() >= s.scores[n].detach().abs()[~m].max()
    g = _search("global_ep", density).hard_masks()
    assert sum(int(m.sum()) for m in g.values()) == exact_count(density, s.numel())


# ---------------------------------------------------------------- rounding, unflagging, sanity
def _hand_search() -> ScoreSearch:
    s = _search()
    s.scores = {"0.weight": torch.tensor([0.2, 0.7, 0.5, 0.9]), "2.weight": torch.tensor([1.0, 0.0])}
    s.flags = {"0.weight": torch.tensor([True, True, True, False]), "2.weight": torch.tensor([True, True])}
    return s


def test_rounding_semantics():
    s = _hand_search()
    assert s.hard_masks("naive")["0.weight"].tolist() == [False, True, False, False]  # 0.5 is not > 0.5
    assert s.hard_masks("all_ones")["0.weight"].tolist() == [True, True, True, False]
    prob = s.hard_masks("prob", torch.Generator().manual_seed(0))
    assert prob["2.weight"].tolist() == [True, False]  # Bernoulli(1) and Bernoulli(0)
    assert not prob["0.weight"][3]  # flagged-off weights stay off under every rounding


def test_plain_hc_always_fine_tunes_the_rounded_mask():
    s = _hand_search()
    s.algo = "hc"
    assert finetune_masks(s, {"unflag_before_finetune": True})["0.weight"].tolist() == [False, True, False, False]


def test_loading_a_resolved_config_again_changes_nothing():
    for raw in ({"target_sparsity": 5}, {"density": 0.005}, {"target_sparsity": 0.59, "allow_sub_percent": True}):
        cfg = load_gems_config(raw)
        assert load_gems_config(cfg) == cfg


def test_unflag_before_finetune_restores_the_flags():
    s = _hand_search()
    unflagged = finetune_masks(s, {"unflag_before_finetune": True})
    rounded = finetune_masks(s, {"unflag_before_finetune": False})
    assert unflagged["0.weight"].tolist() == [True, True, True, False]  # mask = flag: exactly the target
    assert rounded["0.weight"].tolist() == [False, True, False, False]  # flag * 1[p > 0.5]
    assert rounded["2.weight"].tolist() == [True, False]


@pytest.mark.parametrize("kind", ["reinit", "reshuffle"])
def test_sanity_checks_keep_each_layer_density(kind):
    s = _search(density=0.3)
    masks = s.hard_masks("naive")
    out = sanity_masks(kind, masks, s, torch.Generator().manual_seed(1))
    for n, m in masks.items():
        assert out[n].shape == m.shape and int(out[n].sum()) == int(m.sum())
    if kind == "reinit":
        assert all(torch.equal(out[n], masks[n]) for n in masks)
    else:
        assert any(not torch.equal(out[n], masks[n]) for n in masks)


def test_inverted_thresholding_keeps_the_lowest_scores():
    s = _hand_search()
    s.keep_top_(2, invert=True)  # among the flagged |p| 0.2, 0.7, 0.5, 1.0, 0.0: keep 0.0 and 0.2
    assert s.flags["0.weight"].tolist() == [True, False, False, False]
    assert s.flags["2.weight"].tolist() == [False, True]


def test_invert_sanity_check_runs_the_whole_search_inverted(tmp_path, one_thread):
    """The original prunes the highest |p| in every thresholding round (issue 16, item 7), not only at the end."""
    cfg = {**TINY, "finetune_epochs": 1, "sanity_checks": False}
    plain = run_gems(cfg, tmp_path / "plain", progress=False)
    inv = run_gems({**cfg, "invert_sanity_check": True}, tmp_path / "inv", progress=False)
    assert inv["inverted_search"] and not plain["inverted_search"]
    assert inv["density"] == pytest.approx(plain["density"])
    rows = [json.loads(line) for line in (tmp_path / "inv" / "metrics.jsonl").read_text().splitlines()]
    first_round = next(r for r in rows if r.get("round") == 1)
    assert first_round["pruned"] > 0
    m_plain = torch.load(plain["mask_path"], weights_only=True)
    m_inv = torch.load(inv["mask_path"], weights_only=True)
    assert all(not torch.equal(m_plain[n], m_inv[n]) for n in m_plain)


# ---------------------------------------------------------------- weights, scores, regularisers
def test_signed_constant_weights():
    w = signed_constant_(torch.empty(50, 8), torch.Generator().manual_seed(0))
    assert torch.allclose(w.abs(), torch.full_like(w, math.sqrt(2 / 8)))
    assert 0.3 < (w > 0).float().mean() < 0.7
    # scale_fan: fan_in times 1 - prune_rate, sqrt(2 / (8 * 0.25)) = 1
    assert signed_constant_(torch.empty(4, 8), torch.Generator(), 0.25).abs().eq(1.0).all()
    assert load_gems_config({"target_sparsity": 5, "scale_fan": True})["gems"]["scale_fan"] is True
    # the original's --prune-rate: 0.5 for Gem-Miner unless set, the fraction that remains for edge-popup
    assert load_gems_config({"target_sparsity": 5})["gems"]["prune_rate"] == 0.5
    assert load_gems_config({"target_sparsity": 5, "algo": "ep"})["gems"]["prune_rate"] == pytest.approx(0.05)
    with pytest.raises(SparsetrainError, match="prune_rate"):
        load_gems_config({"target_sparsity": 5, "prune_rate": 1.5})


def test_scale_fan_uses_one_minus_prune_rate(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    cfg = load_gems_config({"target_sparsity": 10, "scale_fan": True, "prune_rate": 0.75, "model": "mlp"})
    prepare_model(model, cfg, torch.Generator().manual_seed(0))
    assert model[0].weight.abs().eq(1.0).all()  # sqrt(2 / (8 * (1 - 0.75))) = 1


def test_score_init_options():
    g, w = torch.Generator().manual_seed(0), torch.empty(200, 50)
    assert init_scores(w, "half", g).eq(0.5).all()
    k = init_scores(w, "kaiming_uniform", g)  # edge-popup: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in))
    assert k.abs().max() <= 1 / math.sqrt(50) and k.abs().max() > 0.95 / math.sqrt(50)
    assert set(init_scores(w, "bern", g).unique().tolist()) == {0.0, 1.0}
    u = init_scores(w, "unif", g)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    assert abs(init_scores(w, "skew", g).mean() - 1 / 6) < 0.02  # Beta(1, 5)
    b = init_scores(w, "bimodal", g)  # Beta(0.1, 0.1): most mass near 0 and 1
    assert ((b < 0.1) | (b > 0.9)).float().mean() > 0.6
    assert torch.equal(init_scores(w, "unif", torch.Generator().manual_seed(3)),
                       init_scores(w, "unif", torch.Generator().manual_seed(3)))
    with pytest.raises(SparsetrainError, match="score_init"):
        init_scores(w, "gauss", g)


def test_regularisers_by_hand():
    p, w = [torch.tensor([0.5, 1.0])], [torch.tensor([2.0, 1.0])]
    assert float(regularization("L2", p, w)) == 1.25
    assert float(regularization("L1", p, w)) == 1.5
    assert float(regularization("L1_L2", p, w)) == 2.75
    assert float(regularization("var_red_1", p, w)) == 0.25
    assert float(regularization("var_red_2", p, w)) == 1.0  # 4 * 0.25 + 1 * 0
    assert float(regularization("bin_entropy", p, w)) == pytest.approx(math.log(2), abs=1e-4)


# ---------------------------------------------------------------- config and bad input
def test_original_sample_config_maps_onto_ours():
    raw = yaml.safe_load(SAMPLE_CONFIG)
    with pytest.raises(SparsetrainError, match="allow_sub_percent"):
        load_gems_config(raw)  # 0.59 % remaining is legal but looks like a fraction
    cfg = load_gems_config({**raw, "allow_sub_percent": True})
    g = cfg["gems"]
    assert g["density"] == pytest.approx(0.0059) and g["algo"] == "hc_iter"
    assert (cfg["model"], cfg["data"]["name"], cfg["run"]["name"]) == ({"name": "resnet20"}, "cifar10",
                                                                        "resnet20_quantized_iter_hc")
    assert (cfg["schedule"]["name"], g["finetune_lr_policy"]) == ("cosine", "multistep")
    assert g["nonaffine_bn"] and g["quantized"] and g["sanity_checks"] and g["unflag_before_finetune"]
    assert (g["lmbda"], cfg["optim"]["weight_decay"], g["finetune_lr"], g["finetune_epochs"]) == (1e-4, 0.0, 0.01, 150)


@pytest.mark.parametrize(("cfg", "match"), [
    ({"target_sparsity": 0.05}, "percent of weights REMAINING"),
    ({"target_sparsity": 0.95}, "target_sparsity: 5"),
    ({"target_sparsity": 150}, r"in \(0, 100\]"),
    ({"density": 5}, "looks like a percentage"),
    ({"density": 0.1, "target_sparsity": 5}, "not both"),
    ({}, "target_sparsity"),
    ({"target_sparsity": 5, "epochs": 5, "iter_period": 5}, "cannot be reached"),
    ({"target_sparsity": 5, "lmbd": 1}, "Did you mean: lmbda"),
    ({"target_sparsity": 5, "conv_type": "DenseConv"}, "not implemented"),
    ({"target_sparsity": 5, "algo": "hc_iterr"}, "unknown algo"),
    ({"target_sparsity": 5, "round": "ceil"}, "unknown rounding"),
    ({"gems": {"target_sparsity": 5, "algo": "hc_iterr"}}, "unknown algo"),
    ({"gems": {"target_sparsity": 0.05}}, "percent of weights REMAINING"),
    ({"gems": {"target_sparsity": 5, "lmbd": 1}}, r"unknown gems key 'lmbd'. Did you mean: lmbda\? Choices: algo, "),
    ({"epochs": 5, "gems": {"target_sparsity": 5, "iter_period": 5}}, "cannot be reached"),
    ({"target_sparsity": 5, "optim": {"lr": 0.1}}, r"flat Rare Gems keys found: target_sparsity \(write gems."),
    ({"gems": {"target_sparsity": 5}, "epoch": 3}, "unknown config key epoch. Top-level keys: seed, epochs"),
    ({"gems": {"target_sparsity": 5}, "label_smoothing": 0.1}, "Gem-Miner does not read label_smoothing"),
    ({"gems": {"target_sparsity": 5}, "optim": {"name": "adamw"}}, "unknown optim.name 'adamw'"),
])
def test_bad_config_raises_a_clear_error(cfg, match):
    with pytest.raises(SparsetrainError, match=match):
        load_gems_config(cfg)


#: our earlier gems_mnist1d recipe, a flat file with Rare Gems keys
FLAT_MNIST1D = """
algo: hc_iter
dataset: mnist1d
arch: mlp
model_kwargs: {hidden: [100, 100]}
target_sparsity: 5
epochs: 40
iter_period: 4
optimizer: sgd
lr: 0.1
momentum: 0.9
wd: 0.0
lr_policy: cosine_lr
batch_size: 128
bn_type: NonAffineBatchNorm
init: signed_constant
score_init: unif
hc_quantized: True
quantize_threshold: 0.5
regularization: L2
lmbda: 0.0001
round: naive
unflag_before_finetune: True
finetune_epochs: 40
fine_tune_lr: 0.1
fine_tune_wd: 0.0001
fine_tune_lr_policy: multistep_lr
skip_sanity_checks: False
seed: 0
"""


def test_a_flat_rare_gems_file_and_its_nested_spelling_are_one_config():
    flat = yaml.safe_load(FLAT_MNIST1D)
    assert is_rare_gems(flat) and not is_rare_gems({"epochs": 3, "gems": {"density": 0.1}})
    assert load_gems_config(flat) == load_gems_config("gems_mnist1d")  # the bundled recipe is nested now
    layer = from_rare_gems({**flat, "milestones": [10, 30], "data": "./data", "gpu": 0})
    assert layer["model"] == {"name": "mlp", "hidden": [100, 100]} and layer["data"]["root"] == "./data"
    assert layer["optim"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}
    assert layer["schedule"] == {"name": "cosine", "milestones": [0.25, 0.75]} and "gpu" not in str(layer)
    assert search_milestones(load_gems_config({**flat, "milestones": [10, 30]})) == [10, 30]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.data())
def test_flat_milestones_in_epochs_come_back_exactly(epochs, data):
    m = data.draw(st.integers(0, epochs))
    assert search_milestones({"epochs": epochs, "schedule": {"milestones": [m / epochs]}}) == [m]


def test_overrides_act_on_a_flat_file_and_flat_spellings_are_told_the_nested_one():
    flat = yaml.safe_load(FLAT_MNIST1D)
    cfg = load_gems_config(flat, ["--gems.density", "0.2", "--epochs", "12", "--optim.weight_decay=1e-4"])
    assert (cfg["gems"]["density"], cfg["gems"]["target_sparsity"], cfg["epochs"]) == (0.2, 20.0, 12)
    assert cfg["optim"]["weight_decay"] == 1e-4 and cfg["gems"]["finetune_epochs"] == 40  # the file's own
    assert load_gems_config(cfg, {"gems": {"target_sparsity": 50}})["gems"]["density"] == 0.5
    moved = load_gems_config(flat, ["--model.name", "cnn1d", "--data.name", "digits", "--run.name", "x"])
    assert (moved["model"], moved["data"]["name"], moved["run"]["name"]) == ({"name": "cnn1d"}, "digits", "x")
    for flag, nested in (("--iter_period", "--gems.iter_period"), ("--wd", "--optim.weight_decay"),
                         ("--dataset", "--data.name")):
        with pytest.raises(SparsetrainError, match=f"an override is written as in the nested config: {nested}"):
            load_gems_config(flat, [flag, "1"])


def test_target_below_one_weight_is_unreachable():
    assert check_reachable(0.01, 100) == 1
    with pytest.raises(SparsetrainError, match="less than one weight"):
        check_reachable(0.001, 100)


# ---------------------------------------------------------------- end to end
TINY = {"dataset": "digits", "model": "mlp", "model_kwargs": {"hidden": [32]}, "batch_size": 64, "threads": 1,
        "epochs": 5, "iter_period": 2, "finetune_epochs": 2, "target_sparsity": 10, "lr": 0.5}


def test_end_to_end_gem_miner_writes_a_run_folder(tmp_path, one_thread):
    summary = run_gems(TINY, tmp_path, progress=False)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.yaml", "metrics.jsonl", "mask.pt", "model.pt",
                                                     "summary.json", "search.png"}
    masks = torch.load(summary["mask_path"], weights_only=True)
    total = sum(m.numel() for m in masks.values())
    assert all(m.dtype == torch.bool for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == exact_count(0.1, total)  # unflagged: exactly the target
    assert summary["density"] == pytest.approx(0.1, abs=1 / total)
    assert summary["layer_densities"] == {n: int(m.sum()) / m.numel() for n, m in masks.items()}
    assert 0 <= summary["gem_acc_before_finetune"] <= 1 and summary["acc_after_finetune"] > 0.2
    assert set(summary["sanity"]) == {"reinit", "reshuffle"}
    # a plain model comes out: the original parameter names, zeros outside the mask
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == {"features.0.weight", "features.0.bias", "classifier.weight", "classifier.bias"}
    for name, m in masks.items():
        assert state[name][~m].eq(0).all()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    search = [r for r in rows if r["phase"] == "search"]
    assert [r["round"] for r in search] == [0, 0, 1, 1, 2]  # K = floor(4 / 2) = 2 rounds, after epochs 2 and 4
    assert search[-1]["flag_density"] == pytest.approx(0.1, abs=1 / total)
    assert json.loads((tmp_path / "summary.json").read_text())["acc_after_finetune"] == summary["acc_after_finetune"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["gems"]["density"] == 0.1


def test_a_gems_override_changes_the_run(tmp_path, one_thread):
    cfg = load_gems_config(TINY, ["--gems.iter_period", "4", "--gems.finetune", "false", "--device", "auto"])
    summary = run_gems(cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 0, 0, 0, 1]  # K = floor(4 / 4) = 1 round, after epoch 4 (TINY: 2)
    assert summary["search"]["rounds"] == 1 and summary["acc_after_finetune"] is None
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["gems"]["iter_period"] == 4 and saved["device"] == "auto"
    assert load_gems_config(tmp_path / "config.yaml") == cfg  # the run folder's config loads as it was


def test_zero_remaining_safety_and_edge_popup(tmp_path, one_thread):
    # a huge L2 weight pushes every score below 0.5 in the first epoch: stop, threshold once to the target
    s = run_gems({**TINY, "lmbda": 50.0, "epochs": 9, "iter_period": 4, "finetune_epochs": 1,
                  "sanity_checks": False}, tmp_path / "gm", progress=False)
    assert s["search"]["stopped_at_epoch"] == 1 and s["rounded_density"] == 0.0
    assert s["density"] == pytest.approx(0.1, abs=0.002)
    e = run_gems({**TINY, "algo": "ep", "finetune_epochs": 1}, tmp_path / "ep", progress=False)
    assert e["sanity"] == {} and e["gem_acc_before_finetune"] > 0
    masks = torch.load(e["mask_path"], weights_only=True)
    assert all(int(m.sum()) == exact_count(0.1, m.numel()) for m in masks.values())


def test_bundled_gems_recipes_load():
    from sparsetrain.procedures.gems_config import GEMS_RECIPES_DIR
    names = sorted(p.stem for p in GEMS_RECIPES_DIR.glob("gems_*.yaml"))
    assert {"gems_mnist1d", "gems_ep_mnist1d", "gems_digits", "gems_resnet20_cifar10"} <= set(names)
    for name in names:
        cfg = load_gems_config(name)
        assert 0 < cfg["gems"]["density"] <= 1 and cfg["gems"]["algo"] in ("hc_iter", "ep")
    assert load_gems_config("gems_resnet20_cifar10")["gems"]["density"] == pytest.approx(0.0059)


@pytest.mark.slow
def test_benchmark_script_quick(tmp_path):
    import subprocess
    import sys
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gems.py"
    out = tmp_path / "results.md"
    subprocess.run([sys.executable, str(script), "--quick", "--workers", "1", "--out", str(out)], check=True,
                   capture_output=True, timeout=600)
    text = out.read_text()
    assert "| 90 % |" in text and "mnist1d (dense" in text


def test_search_only_layers_are_masked_in_the_search_and_dense_in_the_ticket(tmp_path, one_thread):
    """The original's shortcut convs (issue 16, item 6): scored and masked while searching, never thresholded or
    counted in the target, dense when fine-tuned."""
    s = _search(density=0.5)
    first = next(iter(s.scores))
    s = ScoreSearch.create(s.model, "hc_iter", 0.5, generator=torch.Generator().manual_seed(0), search_only=(first,))
    assert s.search_only == (first,) and first in s.soft_masks()
    assert s.numel() == sum(p.numel() for n, p in s.scores.items() if n != first)
    s.keep_top_(0)
    assert s.flags[first].all() and s.flagged() == 0
    assert first not in s.prunable(s.hard_masks("naive"))
    with pytest.raises(SparsetrainError, match="nothing is left"):
        ScoreSearch.create(s.model, "hc_iter", 0.5, generator=torch.Generator(), search_only=("*",))
    summary = run_gems({**TINY, "finetune_epochs": 1, "sanity_checks": False, "search_only": ["features.0.*"]},
                       tmp_path, progress=False)
    masks = torch.load(summary["mask_path"], weights_only=True)
    assert set(masks) == {"classifier.weight"}
    assert int(masks["classifier.weight"].sum()) == exact_count(0.1, masks["classifier.weight"].numel())


def test_resnet20_recipe_searches_the_shortcut_convs():
    cfg = load_gems_config("gems_resnet20_cifar10")["gems"]
    assert cfg["search_only"] == ["*shortcut*"] and "*shortcut*" not in cfg["exclude"]
