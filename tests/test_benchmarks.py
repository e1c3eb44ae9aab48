"""Smoke tests of the benchmark scripts (benchmarks/*.py) at tiny sizes, plus the pieces with
numbers we can work out by hand: the RESULTS.md section writer, the log-log slope, and the
RigL-paper training-FLOPs accounting (Evci et al. 2020, appendix H; docs/algorithms.md, "SET, SNFS and RigL").

Nothing here checks a timing: the scripts' timings are only required to be printed.
"""

from __future__ import annotations

import doctest
import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

common = importlib.import_module("common")
accuracy = importlib.import_module("accuracy")
peers = importlib.import_module("peers")
update_scaling = importlib.import_module("update_scaling")
overhead = importlib.import_module("overhead")
chase_residual = importlib.import_module("chase_residual")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("module", [common, update_scaling])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


def test_replace_section_keeps_the_rest_and_replaces_only_its_block():
    text = "# R\n\nintro\n\n## old section\nkept\n"
    once = common.replace_section(text, "acc", "## A\nfirst")
    assert once.startswith(text.rstrip()) and "first" in once
    twice = common.replace_section(once + "\n## after\nalso kept\n", "acc", "## A\nsecond")
    assert "first" not in twice and "second" in twice
    assert "kept" in twice and "also kept" in twice and twice.count("<!-- begin acc -->") == 1


def test_slope_of_a_power_law():
    sizes = [1e3, 1e4, 1e5, 1e6]
    assert update_scaling.slope(sizes, [3e-9 * s ** 1.5 for s in sizes]) == pytest.approx(1.5)
    assert update_scaling.slope([1e3], [1.0]) is None


def _fake_run(tmp_path: Path, total: int, events: list[tuple[int, dict]]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"event": "update", "step": s, "layer_density": d} for s, d in events]
    lines.append({"event": "epoch", "epoch": 1, "step": total})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def _digits_cfg(method: dict) -> dict:
    from sparsetrain.train.config import load_config
    return load_config(None, {"data": {"name": "digits"}, "model": {"name": "mlp"}, "epochs": 1,
                              "method": method})


def test_training_flops_static_is_the_forward_ratio(tmp_path):
    cfg = _digits_cfg({"name": "static", "density": 0.1})
    per_module, dense = accuracy._layer_flops(cfg)
    # the MLP 64-300-100-10: three linear layers; the ReLUs cost nothing in torch's count
    assert set(per_module) == {"features.0", "features.2", "classifier"}
    density = {"features.0.weight": 0.5, "features.2.weight": 0.1, "classifier.weight": 1.0}
    run = _fake_run(tmp_path, 10, [(0, density)])
    sparse = dense - per_module["features.0"] * 0.5 - per_module["features.2"] * 0.9
    assert accuracy.training_flops(cfg, run, {}) == pytest.approx(sparse / dense)


def test_training_flops_counts_a_dense_gradient_at_each_rigl_update(tmp_path):
    total, every = 100, 10
    cfg = _digits_cfg({"name": "rigl", "density": 0.1, "update_every": every, "end": 0.75})
    per_module, dense = accuracy._layer_flops(cfg)
    density = dict.fromkeys(("features.0.weight", "features.2.weight", "classifier.weight"), 0.25)
    run = _fake_run(tmp_path, total, [(0, density), (10, density)])
    f_s = dense - 0.75 * sum(per_module.values())
    updates = len(range(every, int(0.75 * total) + 1, every))  # steps 10, 20, ..., 70
    assert sum(accuracy.dense_grad_steps(cfg, total)) == updates
    expected = (3 * f_s * total + updates * (dense - f_s)) / (3 * dense * total)
    assert accuracy.training_flops(cfg, run, {}) == pytest.approx(expected)


def test_training_flops_of_a_pruning_run_follows_the_logged_densities(tmp_path):
    cfg = _digits_cfg({"name": "gmp", "density": 0.1})
    per_module, dense = accuracy._layer_flops(cfg)
    full = dict.fromkeys(("features.0.weight", "features.2.weight", "classifier.weight"), 1.0)
    half = dict.fromkeys(full, 0.5)
    run = _fake_run(tmp_path, 40, [(0, full), (20, half)])
    f_half = dense - 0.5 * sum(per_module.values())
    # steps 0..19 dense, steps 20..39 at half density; GMP needs no dense gradient
    assert accuracy.training_flops(cfg, run, {}) == pytest.approx((20 * dense + 20 * f_half) / (40 * dense))


def test_select_methods_puts_dense_first_and_rejects_unknown_names():
    from sparsetrain.errors import SparsetrainError
    assert accuracy.select_methods("rigl,dense,set") == ["dense", "rigl", "set"]
    assert accuracy.select_methods("*")[0] == "dense"
    with pytest.raises(SparsetrainError, match="rigll"):
        accuracy.select_methods("rigll")


def test_accuracy_quick_writes_its_section_and_plot(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n## an older section\nkeep me\n")
    assert accuracy.main(["--quick", "--datasets", "digits", "--methods", "dense,static", "--out",
                          str(tmp_path / "runs"), "--results", str(results), "--plot", str(tmp_path / "a.png")]) == 0
    text = results.read_text()
    assert "keep me" in text and "<!-- begin accuracy -->" in text
    assert "| static |" in text and "| dense |" in text and "threads 1" in text
    assert (tmp_path / "a.png").stat().st_size > 0
    rows = json.loads((tmp_path / "runs" / "accuracy.json").read_text())["digits"]
    static = next(r for r in rows if r["method"] == "static")
    assert static["train_flops"] == pytest.approx(static["flops_ratio"], rel=0.05)  # no updates, no dense grads
    # a second call reuses the finished runs (no "== digits" training line)
    capsys.readouterr()
    accuracy.main(["--quick", "--datasets", "digits", "--methods", "static", "--out", str(tmp_path / "runs"),
                   "--results", str(results), "--plot", str(tmp_path / "a.png")])
    assert "== digits" not in capsys.readouterr().out


def test_peers_quick_runs_every_variant(tmp_path):
    results = tmp_path / "R.md"
    assert peers.main(["--quick", "--epochs", "1", "--results", str(results), "--plot", str(tmp_path / "p.png")]) == 0
    text = results.read_text()
    for name in ("dense", "ours: rigl", "ours: RigLScheduler", "ours: gmp", "torch prune global",
                 "ours: gmp_uniform", "torch prune local"):
        assert f"| {name} |" in text
    assert "ours: gmp vs torch prune global" in text


def test_torch_prune_variant_reaches_the_scheduled_density_with_orig_and_mask():
    from torch.nn.utils import prune as tprune

    from sparsetrain.train.config import DEFAULTS
    cfg = {**DEFAULTS, "seed": 0, "device": "cpu"}
    variants = peers.build_variants(cfg, 100, 10, 10, None, "torch prune *")
    for v in variants[1:]:
        v._prune_to(0.5)
        v._prune_to(0.1)
        assert all(tprune.is_pruned(m) for _, m in v.modules)
        assert peers.weight_density(v.model) == pytest.approx(0.1, abs=0.01)
        assert "features.0.weight_orig" in v.state()["model"]


def test_update_scaling_quick(tmp_path):
    results = tmp_path / "R.md"
    assert update_scaling.main(["--quick", "--sizes", "2e3,8e3", "--methods", "rigl,set", "--results", str(results),
                                "--plot", str(tmp_path / "u.png")]) == 0
    text = results.read_text()
    assert "ours: rigl" in text and "ours: set" in text and "log-log slope" in text
    assert (tmp_path / "u.png").stat().st_size > 0


def test_update_cost_times_an_update_of_a_given_model():
    build = update_scaling.builder(20)
    x, y = torch.randn(4, 20), torch.randint(0, 20, (4,))
    r = overhead.update_cost("mlp20", 2, None, build=build, inputs=(x, y), method="set")
    assert r["weights"] == 4 * 20 * 20 and len(r["ours"]) == 2 and r["theirs"] == []
    assert all(math.isfinite(t) for t in r["ours"])


def test_overhead_quick_on_the_mlp(tmp_path):
    results = tmp_path / "R.md"
    assert overhead.main(["--quick", "--methods", "static", "--models", "mlp", "--results", str(results)]) == 0
    text = results.read_text()
    assert "<!-- begin overhead-latest -->" in text and "| static |" in text


def test_overhead_quick_on_the_gpt_feeds_tokens(tmp_path):
    results = tmp_path / "R.md"
    assert overhead.main(["--quick", "--methods", "rigl", "--models", "gpt", "--results", str(results)]) == 0
    text = results.read_text()
    assert "### gpt, batch 32" in text and "| rigl |" in text and "target ratio <= 1.03" in text


def test_collect_results_copies_each_file_between_its_markers(tmp_path):
    collect_results = importlib.import_module("collect_results")
    (tmp_path / "results_gems.md").write_text("# Gems\n\n| a |\n|---|\n| 1 |\n")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- begin file:results_gems -->\nold\n<!-- end file:results_gems -->\n"
                       "\n## GPU figures\n")
    assert collect_results.collect(tmp_path, results) == ["results_gems"]
    text = results.read_text()
    assert "old" not in text and "## Gems" in text and text.index("## Gems") < text.index("## GPU figures")
    collect_results.collect(tmp_path, results)  # idempotent
    assert results.read_text() == text


def test_chase_residual_schedule_doctests():
    assert doctest.testmod(chase_residual).failed == 0


def test_chase_residual_quick_compacts_every_sparse_run_exactly(tmp_path, capsys):
    results = tmp_path / "R.md"
    assert chase_residual.main(["--quick", "--epochs", "1", "--out", str(tmp_path / "runs"),
                                "--results", str(results)]) == 0
    text = results.read_text()
    assert text.startswith("# ") and "Command: `python benchmarks/chase_residual.py" in text and "threads 1" in text
    assert all(f"| {label} |" in text for label in chase_residual.VARIANTS)
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith('{"run"'):
            row = json.loads(line)
            rows[row.pop("run")] = row
    assert set(rows) == set(chase_residual.VARIANTS)
    for label, row in rows.items():
        if label == "dense":
            continue
        # compaction changes no prediction: same accuracy, logits equal up to float reordering
        assert row["acc_compact"] == row["acc_masked"] == row["acc"]
        assert row["max_logit_diff"] < 1e-3
        if label.startswith("chase"):
            assert row["plan_removed"] == pytest.approx(0.5, abs=0.02)  # S_c = 0.5 reached by the schedule
            assert row["flops_compact"] < row["flops"] and row["params_compact"] < row["params"]
    # prune_skip lets the residual-tied channels go too: more of the network's convolutions shrink
    for norm in ("none", "layer"):
        assert rows[f"chase {norm} + prune_skip"]["conv_removed"] > rows[f"chase {norm}"]["conv_removed"] + 0.1


def test_diagnostics_mask_cost_prints_every_mask_dtype(capsys):
    diagnostics = importlib.import_module("diagnostics")
    assert diagnostics.main(["mask-cost", "--reps", "2"]) == 0
    out = capsys.readouterr().out
    for dtype in ("float32", "float16", "bfloat16", "uint8", "bool"):
        assert f"| {dtype} |" in out


def test_shrink_tiny_times_three_setups_and_compares_accuracy(tmp_path, capsys):
    shrink = importlib.import_module("shrink")
    assert doctest.testmod(shrink).failed == 0
    results = tmp_path / "RESULTS.md"
    assert shrink.main(["--tiny", "--models", "vgg19", "--out", str(tmp_path / "runs"), "--results", str(results)]) == 0
    text = results.read_text()
    assert "<!-- begin shrink-latest -->" in text
    for row in ("| dense |", "| chase |", "| chase + shrink |", "| all layers |", "| resnet20 / digits | 0 |",
                "| cnn1d / mnist1d | 0 |"):
        assert row in text, row
    assert (tmp_path / "runs" / "cnn1d-shrink-s0" / "summary.json").is_file()


def test_transformer_quick_compacts_every_mlp_style_exactly(capsys):
    transformer = importlib.import_module("transformer")
    assert transformer.main(["--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| gelu", "| swiglu", "| hf-gpt2"))]
    assert len(rows) == 6  # MLP units only, then MLP units and heads
    for i, row in enumerate(rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        gone = "128 -> 64" if i < 3 else "2 -> 1"  # half the units (then also half the heads) gone, same logits
        assert cells[1].startswith(gone) and float(cells[-1]) == 0.0


def test_gpt_lm_quick_reports_loss_and_training_flops(tmp_path, capsys):
    gpt_lm = importlib.import_module("gpt_lm")
    assert gpt_lm.main(["--quick", "--threads", "1", "--recipes", "dense,rigl", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.splitlines() if line.startswith(("| dense", "| rigl"))}
    assert set(rows) == {"dense", "rigl"}
    assert float(rows["dense"][5]) == 1.0 and 0.0 < float(rows["rigl"][5]) < 1.0  # training FLOPs x dense
    assert float(rows["rigl"][1]) == pytest.approx(0.1, abs=1e-3)
    assert math.isfinite(float(rows["rigl"][2].split("±")[0]))
