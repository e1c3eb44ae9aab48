"""IMP / lottery tickets (docs/algorithms.md, "Lottery tickets and IMP"): the pruning step, the rewind, the
procedure's resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparsetrain
from sparsetrain.core.topk import exact_count
from sparsetrain.errors import SparsetrainError
from sparsetrain.procedures import lottery
from sparsetrain.procedures.lottery import (
    ImpConfig,
    imp_masks,
    imp_round,
    load_tickets_config,
    make_imp_config,
    round_dir,
    round_start,
    rounds_to_reach,
    run_imp,
)
from sparsetrain.train import run as run_module
from sparsetrain.train.checkpoint import load_checkpoint, save_checkpoint

#: a tiny MLP on scikit-learn's digits: 22 steps of 64 per epoch
TINY = ["--data.name", "digits", "--model.name", "mlp", "--model.hidden", "[16]", "--batch_size", "64",
        "--epochs", "1", "--threads", "1", "--optim.name", "adam", "--optim.lr", "0.01",
        "--optim.weight_decay", "0.0", "--schedule.name", "constant", "--run.plots", "false",
        "--run.progress", "false"]


def tiny(**imp) -> tuple[dict, ImpConfig]:
    return load_tickets_config(None, TINY + [f"--imp.{k}={json.dumps(v)}" for k, v in imp.items()])


# --------------------------------------------------------------------------- the pruning step
def test_global_and_per_layer_masks_by_hand():
    w = {"a": torch.tensor([0.1, -0.5, 0.3, 0.2]), "b": torch.tensor([0.9, 0.05, -0.4, 0.25])}
    m = {"a": torch.ones(4, dtype=torch.bool), "b": torch.tensor([True, True, True, False])}
    # global: 8 weights at density 0.5 keep 4 of the 7 survivors: |w| 0.9, 0.5, 0.4, 0.3
    g = imp_masks(w, m, 0.5, "global")
    assert g["a"].tolist() == [False, True, True, False] and g["b"].tolist() == [True, False, True, False]
    # per layer: each keeps exact_count(0.5, 4) = 2 among its own survivors (b's pruned 0.25 stays out)
    lay = imp_masks(w, m, 0.5, "layer")
    assert lay["a"].tolist() == [False, True, True, False] and lay["b"].tolist() == [True, False, True, False]
    lay = imp_masks(w, m, 0.75, "layer")  # 3 of 4: a keeps 0.5, 0.3, 0.2; b keeps its 3 survivors
    assert lay["a"].tolist() == [False, True, True, True] and lay["b"].tolist() == [True, True, True, False]


def test_global_ranks_across_layers_and_per_layer_does_not():
    w = {"big": torch.full((10,), 5.0) + torch.arange(10.0), "small": torch.arange(1.0, 11.0) / 100}
    m = {n: torch.ones(10, dtype=torch.bool) for n in w}
    g = imp_masks(w, m, 0.5, "global")
    assert int(g["big"].sum()) == 10 and int(g["small"].sum()) == 0  # a layer may collapse globally
    lay = imp_masks(w, m, 0.5, "layer")
    assert int(lay["big"].sum()) == 5 and int(lay["small"].sum()) == 5
    assert lay["small"].tolist() == [False] * 5 + [True] * 5


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4), p=st.floats(0.05, 0.6),
       rounds=st.integers(1, 8), scope=st.sampled_from(["global", "layer"]), seed=st.integers(0, 2**16))
def test_density_after_r_rounds_is_one_minus_p_to_the_r(sizes, p, rounds, scope, seed):
    """After R rounds exactly exact_count((1 - p)^R, N) weights survive (N = all, or each layer), and
    each round's mask is inside the previous one, whatever the trained weights were."""
    g = torch.Generator().manual_seed(seed)
    masks = {f"l{i}": torch.ones(n, dtype=torch.bool) for i, n in enumerate(sizes)}
    cfg = ImpConfig(rounds=rounds, prune_fraction=p)
    for r in range(1, rounds + 1):
        weights = {n: torch.randn(m.shape, generator=g) for n, m in masks.items()}  # new "training" each round
        new = imp_masks(weights, masks, cfg.density(r), scope)
        assert all(not (new[n] & ~masks[n]).any() for n in masks)
        masks = new
    density = (1 - p) ** rounds
    if scope == "global":
        assert sum(int(m.sum()) for m in masks.values()) == exact_count(density, sum(sizes))
    else:
        assert {n: int(m.sum()) for n, m in masks.items()} == {n: exact_count(density, m.numel())
                                                               for n, m in masks.items()}


# --------------------------------------------------------------------------- configuration
def test_rounds_follow_the_target():
    assert rounds_to_reach(0.1, 0.2) == 11 and 0.8 ** 10 > 0.1 > 0.8 ** 11
    assert rounds_to_reach(0.8 ** 3, 0.2) == 3  # float noise does not add a round
    cfg = make_imp_config({"target_density": 0.1})
    assert cfg.rounds == 11 and cfg.density(10) == pytest.approx(0.8 ** 10) and cfg.density(11) == 0.1
    assert make_imp_config({"target_density": 0.5, "rounds": 9}).rounds == 4  # stops at the target
    assert make_imp_config({"rounds": 3}).density(3) == pytest.approx(0.512)


@pytest.mark.parametrize("raw, match", [
    ({"target_density": 0.01, "rounds": 3}, r"cannot be reached in 3 rounds.*takes 21 rounds"),
    ({"target_density": 10}, r"looks like a percentage: pass 0.1"),
    ({"target_density": 1.5}, r"fraction of weights kept"),
    ({"rounds": 2, "prune_fraction": 20}, r"looks like a percentage: pass 0.2"),
    ({"rounds": 2, "prune_fraction": 1.0}, r"in \(0, 1\)"),
    ({}, r"give imp.rounds"),
    ({"rounds": 0}, r"whole number >= 1"),
    ({"rounds": 2, "scope": "glob"}, r"Did you mean: global"),
    ({"rounds": 2, "rewind": "weight"}, r"Did you mean: weights"),
    ({"rounds": 2, "rewind_iter": -1}, r"optimizer step"),
    ({"rounds": 2, "prune_rate": 0.2}, r"unknown key imp.prune_rate"),
    ({"rounds": 2, "rewind_non_prunable": "no"}, r"true or false"),
])
def test_bad_imp_config_gets_a_clear_message(raw, match):
    with pytest.raises(SparsetrainError, match=match):
        make_imp_config(raw)


def test_config_file_and_overrides():
    cfg, imp = load_tickets_config("imp_mnist1d_mlp", ["--imp.scope", "global", "--epochs", "2"])
    assert (cfg["epochs"], cfg["method"], cfg["model"]["hidden"]) == (2, {"name": "dense"}, [100, 100])
    assert (imp.scope, imp.target_density, imp.rounds) == ("global", 0.1, 11)
    with pytest.raises(SparsetrainError, match="method 'rigl' would be ignored"):
        load_tickets_config(None, ["--method.name", "rigl", "--imp.rounds", "1"])
    with pytest.raises(SparsetrainError, match="override it with method.name=dense"):
        load_tickets_config("rigl_mnist1d", ["--imp.rounds", "1"])
    cfg, imp = load_tickets_config("rigl_mnist1d", ["--imp.rounds", "1", "--method.name", "dense"])
    assert cfg["model"]["name"] == "cnn1d" and cfg["method"] == {"name": "dense"} and imp.rounds == 1


# --------------------------------------------------------------------------- rewinding
def _states():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    rewind = {k: v.clone() for k, v in net.state_dict().items()}
    final = {k: v + 1.0 if v.is_floating_point() else v + 1 for k, v in rewind.items()}
    return net, rewind, final


def test_round_start_weight_lr_and_non_prunable_options():
    _, rewind, final = _states()
    prunable = ["0.weight", "3.weight"]
    start = round_start(ImpConfig(rounds=1), final, rewind, prunable)
    assert all(torch.equal(start[k], rewind[k]) for k in rewind)  # canonical LTH: everything rewound
    start = round_start(ImpConfig(rounds=1, rewind_non_prunable=False), final, rewind, prunable)
    assert all(torch.equal(start[k], rewind[k] if k in prunable else final[k]) for k in rewind)  # Rare Gems
    start = round_start(ImpConfig(rounds=1, rewind="lr"), final, rewind, prunable)
    assert all(torch.equal(start[k], final[k]) for k in final)  # LR rewinding keeps the weights


def test_installed_round_restores_the_rewind_point_bit_exactly(tmp_path):
    net, rewind, final = _states()
    masks = imp_masks({n: final[n] for n in ("0.weight", "3.weight")},
                      {n: torch.ones_like(final[n], dtype=torch.bool) for n in ("0.weight", "3.weight")}, 0.3)
    save_checkpoint(masks, tmp_path / "masks.pt")
    save_checkpoint(round_start(ImpConfig(rounds=1), final, rewind, list(masks)), tmp_path / "weights.pt")
    torch.manual_seed(1)
    fresh = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.Adam(fresh.parameters())
    sp = sparsetrain.attach(fresh, opt, imp_round(str(tmp_path / "masks.pt"), str(tmp_path / "weights.pt")),
                            total_steps=5)
    state = fresh.state_dict()
    for n, m in masks.items():
        assert torch.equal(sp.masks[n], m)
        assert torch.equal(state[n][m], rewind[n][m]) and not state[n][~m].any()
    assert all(torch.equal(state[k], rewind[k]) for k in rewind if k not in masks)


# --------------------------------------------------------------------------- the procedure
def _model(path):
    return load_checkpoint(path)["model"]


def test_imp_end_to_end_counts_and_rewind(tmp_path):
    cfg, imp = tiny(rounds=2, scope="global")
    rows = run_imp(cfg, imp, tmp_path)["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    rewind = load_checkpoint(tmp_path / "rewind.pt")
    for r in (1, 2):
        masks = load_checkpoint(round_dir(tmp_path, r) / "masks.pt")
        total = sum(m.numel() for m in masks.values())
        assert sum(int(m.sum()) for m in masks.values()) == exact_count(0.8 ** r, total)
        assert rows[r]["density"] == exact_count(0.8 ** r, total) / total
        start = load_checkpoint(round_dir(tmp_path, r) / "weights.pt")
        assert all(torch.equal(start[k], rewind[k]) for k in rewind)
        trained = _model(round_dir(tmp_path, r) / "checkpoint.pt")
        for n, m in masks.items():
            assert not trained[n][~m].any() and not torch.equal(trained[n][m], rewind[n][m])
    summary = json.loads((tmp_path / "imp_summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert (tmp_path / "imp_summary.md").read_text().count("\n") == 5
    assert (tmp_path / "imp_summary.csv").read_text().splitlines()[0].startswith("round,target_density,density")


def test_late_rewind_point_and_lr_rewinding(tmp_path):
    cfg, imp = tiny(rounds=1, rewind_iter=22)  # the last step of the 22-step round: the trained weights
    run_imp(cfg, imp, tmp_path / "w")
    assert torch.equal(torch.cat([v.flatten() for v in load_checkpoint(tmp_path / "w" / "rewind.pt").values()]),
                       torch.cat([v.flatten() for v in _model(round_dir(tmp_path / "w", 0) / "checkpoint.pt")
                                  .values()]))
    cfg, imp = tiny(rounds=1, rewind="lr", scope="layer")
    run_imp(cfg, imp, tmp_path / "lr")
    assert not (tmp_path / "lr" / "rewind.pt").exists()
    final = _model(round_dir(tmp_path / "lr", 0) / "checkpoint.pt")
    start = load_checkpoint(round_dir(tmp_path / "lr", 1) / "weights.pt")
    assert all(torch.equal(start[k], final[k]) for k in final)


def test_rewind_iter_beyond_the_round_is_refused(tmp_path):
    cfg, imp = tiny(rounds=1, rewind_iter=23)
    with pytest.raises(SparsetrainError, match="beyond the 22 optimizer steps"):
        run_imp(cfg, imp, tmp_path)
    assert lottery.ROUND_METHOD not in sparsetrain.list_methods()  # the round is handed to train() as an object


def test_resume_at_round_granularity_and_from_an_interrupted_round(tmp_path, monkeypatch):
    cfg, imp = tiny(rounds=2)
    cfg = {**cfg, "epochs": 2}
    run_imp(cfg, imp, tmp_path / "ref")
    # first run: one round only; then extend to two rounds, interrupting round 2 after its first epoch
    run_imp(cfg, make_imp_config({"rounds": 1}), tmp_path / "b")
    kept = (round_dir(tmp_path / "b", 1) / "summary.json").stat().st_mtime_ns
    end_epoch = run_module.RunLogger.end_epoch

    def interrupting(self, metrics, *args, **kwargs):
        end_epoch(self, metrics, *args, **kwargs)
        if metrics["epoch"] == 1 and self.dir.name == "round_02":
            raise KeyboardInterrupt
    monkeypatch.setattr(run_module.RunLogger, "end_epoch", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_imp(cfg, imp, tmp_path / "b", resume=True)
    monkeypatch.undo()
    assert not (round_dir(tmp_path / "b", 2) / "summary.json").exists()
    rows = run_imp(cfg, imp, tmp_path / "b", resume=True)["rounds"]
    assert (round_dir(tmp_path / "b", 1) / "summary.json").stat().st_mtime_ns == kept  # not retrained
    ref = json.loads((tmp_path / "ref" / "imp_summary.json").read_text())["rounds"]
    assert [r["final_test_acc"] for r in rows] == [r["final_test_acc"] for r in ref]
    a, b = (_model(round_dir(tmp_path / d, 2) / "checkpoint.pt") for d in ("ref", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # resuming gives what not stopping gives


def test_existing_folder_and_changed_config_are_refused(tmp_path):
    cfg, imp = tiny(rounds=1)
    run_imp(cfg, imp, tmp_path)
    with pytest.raises(SparsetrainError, match="--resume to continue"):
        run_imp(cfg, imp, tmp_path)
    with pytest.raises(SparsetrainError, match=r"imp.scope changed"):
        run_imp(cfg, make_imp_config({"rounds": 1, "scope": "layer"}), tmp_path, resume=True)
    with pytest.raises(SparsetrainError, match=r"seed"):
        run_imp({**cfg, "seed": 1}, imp, tmp_path, resume=True)
    assert math.isclose(run_imp(cfg, imp, tmp_path, overwrite=True)["rounds"][1]["density"], 0.8, abs_tol=1e-3)
