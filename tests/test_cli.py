"""The ``sparsetrain`` command line (docs/architecture.md): train, compare, methods, recipes, report, plot.

Every training run here is tiny (MNIST-1D with 600 samples, an 8-wide 1D CNN,
batch 50, 1-3 epochs, one thread) and runs in-process through
``sparsetrain.cli.main``; only ``python -m sparsetrain --help`` starts a process.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _kit import torch_state
from sparsetrain.cli import main
from sparsetrain.cli.commands import COMMANDS
from sparsetrain.methods import list_methods
from sparsetrain.train.config import DEFAULTS, load_config
from sparsetrain.train.recipes import list_recipes

#: a tiny setup: 480 train / 120 test samples, 9 steps per epoch, an update every 3 steps
TINY = ["--data.num_samples", "600", "--batch_size", "50", "--model.width", "8", "--threads", "1",
        "--run.plots", "false", "--method.update_every", "3"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("accuracy.png", "density.png", "layer_density.png", "itop.png", "throughput.png")






def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse: --help, usage errors
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def quiet_main(*argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process outside a test function (module fixtures), capturing its output."""
    out, err = io.StringIO(), io.StringIO()
    with torch_state(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG file"
    assert len(data) > 1000, f"{path} is suspiciously small ({len(data)} bytes)"


# ----------------------------------------------------------------------------- a shared 3-epoch run
@pytest.fixture(scope="module")
def granet_run(tmp_path_factory) -> dict:
    """``sparsetrain train`` (default GraNet) for 3 tiny epochs with plots: the run folder and its stdout."""
    root = tmp_path_factory.mktemp("cli_runs")
    args = ["train", "--epochs", "3", *TINY, "--run.plots", "true", "--run.layer_density_every", "2",
            "--run.dir", str(root)]
    rc, out, err = quiet_main(*args)
    assert rc == 0, err
    run_dir = root / "granet-cnn1d-mnist1d-s0"
    return {"dir": run_dir, "out": out, "args": args}


def test_train_prints_one_line_per_epoch_and_a_result_table(granet_run):
    out = granet_run["out"]
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    for line in epoch_lines:
        for word in ("loss", "train", "test", "density", "lr"):
            assert word in line, line
    for word in ("test acc", "density", "ITOP rate", "FLOPs", str(granet_run["dir"])):
        assert word in out


def test_run_folder_holds_the_expected_files(granet_run):
    names = {p.name for p in granet_run["dir"].iterdir() if not p.name.startswith(".")}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt", *PLOTS} <= names
    leftovers = [p.name for p in granet_run["dir"].iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_config_yaml_is_the_resolved_config_and_loads_back(granet_run):
    saved = yaml.safe_load((granet_run["dir"] / "config.yaml").read_text())
    expected = load_config(None, granet_run["args"][1:])
    assert saved == expected
    assert saved["epochs"] == 3 and saved["method"]["update_every"] == 3 and saved["model"]["width"] == 8
    assert saved["data"]["num_samples"] == 600 and saved["run"]["layer_density_every"] == 2
    # loading the file as a recipe gives the same configuration again
    assert load_config(granet_run["dir"] / "config.yaml") == expected


def test_metrics_jsonl_has_epoch_and_update_records(granet_run):
    records = read_jsonl(granet_run["dir"] / "metrics.jsonl")
    epochs = [r for r in records if r.get("event") == "epoch"]
    updates = [r for r in records if r.get("event") == "update"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert [r["step"] for r in epochs] == [9, 18, 27]
    for r in epochs:
        for key in ("train_loss", "train_acc", "test_acc", "test_loss", "lr", "density", "itop_rate", "time"):
            assert key in r, f"epoch record without {key}: {r}"
        assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 < r["density"] <= 1.0
    assert epochs[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to zero
    assert updates[0]["step"] == 0  # the initial topology
    topology = [r for r in updates if r["step"] > 0]
    steps = [r["step"] for r in topology]
    assert steps == sorted(set(steps)) and 0 < steps[0] and steps[-1] <= 27
    assert {3, 6, 9, 12, 15} <= set(steps)  # update_every 3
    swaps = [r for r in topology if "dropped" in r or "grown" in r]
    assert len(swaps) >= 5
    for r in topology:
        assert "density" in r, r
    for r in swaps:
        assert r["dropped"] >= 0 and r["grown"] >= 0, r
    with_layers = [r for r in updates if "layer_density" in r]
    assert 0 < len(with_layers) < len(updates)  # every 2nd update (layer_density_every 2)
    for r in with_layers:
        assert r["layer_density"] and all(0.0 <= d <= 1.0 for d in r["layer_density"].values())
    # the log is ordered by step
    steps = [r["step"] for r in records]
    assert steps == sorted(steps)


def test_summary_json(granet_run):
    summary = json.loads((granet_run["dir"] / "summary.json").read_text())
    epochs = [r for r in read_jsonl(granet_run["dir"] / "metrics.jsonl") if r.get("event") == "epoch"]
    assert summary["method"] == "granet" and summary["model"] == "cnn1d" and summary["dataset"] == "mnist1d"
    assert summary["seed"] == 0 and summary["epochs"] == 3
    assert summary["final_test_acc"] == epochs[-1]["test_acc"]
    best = max(epochs, key=lambda r: r["test_acc"])
    assert summary["best"]["selected_by"] == "test_acc"
    assert summary["best"]["test_acc"] == best["test_acc"] and summary["best"]["epoch"] == best["epoch"]
    assert summary["density"] == pytest.approx(0.1, abs=0.01)
    layers = summary["layer_density"]
    assert set(layers) == {"features.0.weight", "features.3.weight", "features.6.weight", "features.9.weight",
                           "classifier.weight"}
    assert all(0.0 <= d <= 1.0 for d in layers.values())
    flops = summary["flops"]
    assert 0 < flops["sparse"] < flops["dense"]
    assert flops["ratio"] == pytest.approx(flops["sparse"] / flops["dense"])
    assert summary["density"] <= summary["itop_rate"] <= 1.0
    assert summary["wall_time_s"] > 0
    assert summary["versions"]["torch"] == torch.__version__ and "sparsetrain" in summary["versions"]
    assert "git" in summary and (summary["git"] is None or len(summary["git"]) == 40)
    assert isinstance(summary["threads"], int) and summary["threads"] >= 1  # bit-exact needs the same count


def test_checkpoint_loads_with_weights_only(granet_run):
    state = torch.load(granet_run["dir"] / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3
    assert {"model", "optimizer", "lr_schedule", "rng", "sparsifier"} <= set(state)
    masks = state["sparsifier"]["masks"]
    for name, mask in masks.items():
        assert mask.dtype == torch.bool
        assert not state["model"][name][~mask].any(), f"{name}: inactive weights are not zero"


def test_plots_written_by_train_are_valid_pngs(granet_run):
    for name in PLOTS:
        assert_png(granet_run["dir"] / name)


def test_best_epoch_selected_on_validation_when_there_is_one(capsys, tmp_path):
    rc, out, err = cli(capsys, "train", "--epochs", "2", *TINY, "--data.val_fraction", "0.1",
                       "--run.dir", str(tmp_path))
    assert rc == 0, err
    summary = json.loads((tmp_path / "granet-cnn1d-mnist1d-s0" / "summary.json").read_text())
    assert summary["best"]["selected_by"] == "val_acc"
    assert "val_acc" in summary["best"] and summary["final_val_acc"] is not None
    assert "val" in out


# ----------------------------------------------------------------------------- configuration
def test_print_config_without_arguments_is_the_default(capsys):
    rc, out, err = cli(capsys, "train", "--print-config")
    assert rc == 0, err
    cfg = yaml.safe_load(out)
    assert cfg == DEFAULTS
    assert cfg["method"]["name"] == "granet" and cfg["method"]["density"] == 0.1
    assert cfg["model"]["name"] == "cnn1d" and cfg["data"]["name"] == "mnist1d"


def test_dotted_overrides_in_both_forms(capsys):
    rc, out, err = cli(capsys, "train", "--print-config", "--method.density", "0.05", "--epochs=2",
                       "--data.augment=false", "--model.width", "16", "--schedule.milestones", "[0.3, 0.6]")
    assert rc == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["method"]["density"] == 0.05 and cfg["method"]["name"] == "granet"
    assert cfg["epochs"] == 2 and cfg["data"]["augment"] is False and cfg["model"]["width"] == 16
    assert cfg["schedule"]["milestones"] == [0.3, 0.6]
    assert cfg["method"]["update_every"] == DEFAULTS["method"]["update_every"]  # the rest stays


def test_train_with_a_bundled_recipe_and_overrides(capsys, tmp_path):
    rc, out, err = cli(capsys, "train", "--config", "rigl_mnist1d", "--epochs=1", *TINY,
                       "--method.density", "0.2", "--run.dir", str(tmp_path))
    assert rc == 0, err
    run_dir = tmp_path / "rigl-cnn1d-mnist1d-s0"
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["method"] == {"name": "rigl", "density": 0.2, "update_every": 3, "end": 0.75}
    assert cfg["epochs"] == 1 and cfg["batch_size"] == 50
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "rigl" and summary["density"] == pytest.approx(0.2, abs=0.02)
    updates = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "update" and r["step"]]
    assert [r["step"] for r in updates] == [3, 6]  # RigL stops at 75 % of the 9 steps


def test_train_with_a_yaml_file(capsys, tmp_path):
    recipe = tmp_path / "my_recipe.yaml"
    recipe.write_text(
        "description: a tiny MLP run\n"
        "epochs: 1\nbatch_size: 40\nthreads: 1\n"
        "data: {name: mnist1d, num_samples: 600}\n"
        "model: {name: mlp, hidden: [16, 8]}\n"
        "method: {name: set, density: 0.3, update_every: 4}\n"
        "run: {plots: false, name: from-yaml}\n")
    rc, out, err = cli(capsys, "train", "--config", str(recipe), "--run.dir", str(tmp_path / "runs"))
    assert rc == 0, err
    run_dir = tmp_path / "runs" / "from-yaml"
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert "description" not in cfg
    assert cfg["model"] == {"name": "mlp", "hidden": [16, 8]}
    assert cfg["method"] == {"name": "set", "density": 0.3, "update_every": 4}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "mlp" and summary["method"] == "set"
    assert summary["density"] == pytest.approx(0.3, abs=0.02)


# ----------------------------------------------------------------------------- report and plot
def test_report_of_a_run_folder_and_of_its_checkpoint(capsys, granet_run):
    rc, out_dir, err = cli(capsys, "report", str(granet_run["dir"]))
    assert rc == 0, err
    rc, out_ckpt, err = cli(capsys, "report", str(granet_run["dir"] / "checkpoint.pt"))
    assert rc == 0, err
    assert out_dir == out_ckpt
    summary = json.loads((granet_run["dir"] / "summary.json").read_text())
    assert "granet" in out_dir and "epoch 3/3" in out_dir
    for layer in summary["layer_density"]:
        assert layer in out_dir, f"{layer} missing from the per-layer table"
    for word in ("shape", "active", "density", "total"):
        assert word in out_dir
    itop = [line for line in out_dir.splitlines() if line.startswith("ITOP rate")]
    assert itop and float(itop[0].split()[-1]) == pytest.approx(summary["itop_rate"], abs=1e-4)
    flops = [line for line in out_dir.splitlines() if line.startswith("FLOPs")]
    assert flops, out_dir
    assert f"{summary['flops']['dense']:,}" in flops[0] and f"{summary['flops']['sparse']:,}" in flops[0]


def test_report_of_a_dense_mlp_run(capsys, tmp_path):
    rc, _, err = cli(capsys, "train", "--epochs", "1", "--data.num_samples", "600", "--batch_size", "50",
                     "--threads", "1", "--run.plots", "false", "--model.name", "mlp", "--model.hidden", "[16]",
                     "--method.name", "dense", "--run.dir", str(tmp_path))
    assert rc == 0, err
    rc, out, err = cli(capsys, "report", str(tmp_path / "dense-mlp-mnist1d-s0"))
    assert rc == 0, err
    assert "dense" in out and "(1.0000x)" in out and "ITOP" not in out


def test_report_of_a_missing_run_is_a_clear_error(capsys, tmp_path):
    rc, _, err = cli(capsys, "report", str(tmp_path / "nothing-here"))
    assert rc == 2
    assert "no checkpoint" in err and "checkpoint.pt" in err


def test_report_of_a_checkpoint_that_does_not_match_its_config_is_a_clear_error(capsys, granet_run, tmp_path):
    run_dir = tmp_path / "edited"
    shutil.copytree(granet_run["dir"], run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["model"]["width"] = 16
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rc, _, err = cli(capsys, "report", str(run_dir))
    assert rc == 2 and "checkpoint" in err


def test_plot_redraws_valid_pngs(capsys, granet_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(granet_run["dir"], run_dir)
    for name in PLOTS:
        (run_dir / name).unlink()
    rc, out, err = cli(capsys, "plot", str(run_dir))
    assert rc == 0, err
    assert sorted(Path(line).name for line in out.split()) == sorted(PLOTS)
    for name in PLOTS:
        assert_png(run_dir / name)


def test_plot_of_a_folder_without_metrics_is_a_clear_error(capsys, tmp_path):
    rc, _, err = cli(capsys, "plot", str(tmp_path))
    assert rc == 2 and "metrics.jsonl" in err


# ----------------------------------------------------------------------------- compare
@pytest.fixture
def compare_base(tmp_path) -> Path:
    """A base recipe for compare: tiny data, and update_every 3, which compare carries over to RigL."""
    base = tmp_path / "base.yaml"
    base.write_text("epochs: 2\nbatch_size: 50\nthreads: 1\ndata: {name: mnist1d, num_samples: 600}\n"
                    "model: {name: cnn1d, width: 8}\nmethod: {name: granet, density: 0.2, update_every: 3}\n")
    return base


def test_compare_methods_over_seeds(capsys, tmp_path, compare_base):
    out_dir = tmp_path / "cmp"
    rc, out, err = cli(capsys, "compare", "--methods", "dense,static,rigl", "--seeds", "2",
                       "--config", str(compare_base), "--out", str(out_dir))
    assert rc == 0, err
    table = out[out.index("| config"):]
    for label in ("dense", "static", "rigl"):
        assert f"| {label} |" in table
    rows_text = [line for line in table.splitlines() if line.startswith("| ") and "config" not in line]
    assert len(rows_text) == 3 and all("±" in line for line in rows_text)
    assert (out_dir / "compare.md").read_text().strip() == table.split("\n\nwritten")[0].strip()
    rows = json.loads((out_dir / "compare.json").read_text())
    assert [r["label"] for r in rows] == ["dense", "static", "rigl"]
    for r in rows:
        assert r["seeds"] == 2 and len(r["accs"]) == 2
        assert r["acc_mean"] == pytest.approx(sum(r["accs"]) / 2)
        assert f"{r['acc_mean'] * 100:.2f} ± {r['acc_std'] * 100:.2f}" in table
    assert rows[0]["density"] == 1.0 and rows[0]["flops_ratio"] == 1.0
    assert rows[1]["density"] == pytest.approx(0.2, abs=0.02) and rows[2]["density"] == pytest.approx(0.2, abs=0.02)
    assert_png(out_dir / "compare.png")
    for label in ("dense", "static", "rigl"):
        for seed in (0, 1):
            run = out_dir / f"{label}-s{seed}"
            assert (run / "summary.json").is_file() and (run / "checkpoint.pt").is_file()
            assert json.loads((run / "summary.json").read_text())["seed"] == seed
    # RigL really changed its topology (update_every 3 carried over from the base recipe)
    rigl_updates = [r for r in read_jsonl(out_dir / "rigl-s0" / "metrics.jsonl")
                    if r.get("event") == "update" and r["step"] > 0]
    assert rigl_updates and any(r["dropped"] > 0 for r in rigl_updates)
    static_updates = [r for r in read_jsonl(out_dir / "static-s0" / "metrics.jsonl")
                      if r.get("event") == "update" and r["step"] > 0]
    assert not static_updates


def test_compare_accepts_space_separated_overrides(capsys, tmp_path):
    # regression: the positional `recipes` used to swallow the value of `--epochs 1`
    rc, out, err = cli(capsys, "compare", "--methods", "dense,static", "--seeds", "1", "--epochs", "1",
                       "--data.num_samples", "600", "--batch_size", "50", "--model.width", "8", "--threads", "1",
                       "--out", str(tmp_path / "cmp"))
    assert rc == 0, err
    assert (tmp_path / "cmp" / "compare.md").is_file()
    cfg = yaml.safe_load((tmp_path / "cmp" / "static-s0" / "config.yaml").read_text())
    assert cfg["epochs"] == 1 and cfg["data"]["num_samples"] == 600 and cfg["model"]["width"] == 8


def test_compare_applies_method_overrides_only_where_they_apply(capsys, tmp_path):
    rc, out, err = cli(capsys, "compare", "--methods", "dense,static,rigl", "--seeds", "1", "--epochs=1",
                       "--data.num_samples=600", "--batch_size=50", "--model.width=8", "--threads=1",
                       "--method.density=0.2", "--method.update_every=3", "--out", str(tmp_path / "cmp"))
    assert rc == 0, err
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["density"] for r in rows][1:] == [pytest.approx(0.2, abs=0.02)] * 2


def test_compare_without_configurations_is_a_clear_error(capsys):
    rc, _, err = cli(capsys, "compare")
    assert rc == 2 and "--methods" in err


# ----------------------------------------------------------------------------- methods and recipes
def test_methods_lists_every_method(capsys):
    rc, out, err = cli(capsys, "methods")
    assert rc == 0, err
    listed = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert listed == list_methods()
    assert {"granet", "rigl", "set", "static", "gmp"} <= set(listed)


def test_methods_glob(capsys):
    rc, out, err = cli(capsys, "methods", "*rig*")
    assert rc == 0, err
    listed = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert listed == list_methods("*rig*") and "rigl" in listed and "granet" not in listed
    if listed == ["rigl"]:  # one match: its arguments are listed
        assert "--method.density" in out and "--method.update_every" in out


def test_methods_without_a_match_is_a_clear_error(capsys):
    rc, _, err = cli(capsys, "methods", "*nothing*")
    assert rc == 2 and "no method matches" in err


def test_recipes_lists_every_bundled_recipe(capsys):
    rc, out, err = cli(capsys, "recipes")
    assert rc == 0, err
    listed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert listed == list(list_recipes())
    assert "granet_mnist1d" in listed and "granet_cifar10_resnet50_si0" in listed


def test_recipes_shows_one_recipe(capsys):
    from sparsetrain.train.recipes import find_recipe
    rc, out, err = cli(capsys, "recipes", "granet_mnist1d")
    assert rc == 0, err
    assert out == find_recipe("granet_mnist1d").read_text()
    assert yaml.safe_load(out)["method"]["name"] == "granet"


def test_unknown_recipe_lists_the_choices(capsys):
    rc, _, err = cli(capsys, "recipes", "granet_mnist")
    assert rc == 2
    assert "unknown recipe" in err and "granet_mnist1d" in err and "Choices:" in err


# ----------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_examples(capsys, command):
    argv = ["--help"] if command is None else [command, "--help"]
    rc, out, err = cli(capsys, *argv)
    assert rc == 0, err
    assert "usage: sparsetrain" in out and "examples" in out
    if command is None:
        for name in COMMANDS:
            assert name in out
    else:
        assert f"sparsetrain {command}" in out.split("examples", 1)[1]


def test_python_m_sparsetrain_help():
    proc = subprocess.run([sys.executable, "-m", "sparsetrain", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: sparsetrain" in proc.stdout and "examples" in proc.stdout
    for name in COMMANDS:
        assert name in proc.stdout


def test_compare_density_sweep_plots_accuracy_against_sparsity(capsys, tmp_path, compare_base):
    out_dir = tmp_path / "sweep"
    rc, out, err = cli(capsys, "compare", "--methods", "dense,rigl", "--densities", "0.3,0.1", "--seeds", "1",
                       "--epochs", "1", "--config", str(compare_base), "--out", str(out_dir))
    assert rc == 0, err
    rows = json.loads((out_dir / "compare.json").read_text())
    assert [r["label"] for r in rows] == ["dense", "rigl@0.3", "rigl@0.1"]
    assert [round(r["density"], 1) for r in rows] == [1.0, 0.3, 0.1]
    assert_png(out_dir / "compare.png")


def test_schedules_table_and_plot(capsys, tmp_path):
    rc, out, err = cli(capsys, "schedules", "--plot", str(tmp_path / "s.png"), "--sparsity", "0.8")
    assert rc == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if line and not line.startswith("/")}
    assert rows["agp"][-1] == "0.8000" and rows["one_shot"][0] == "0.8000" and rows["dsd"][-1] == "0.0000"
    assert_png(tmp_path / "s.png")


@pytest.mark.parametrize("command, pattern, expect", [
    ("models", "resnet2*", "resnet20"),
    ("datasets", "mnist*", "mnist1d"),
    ("criteria", "mag*", "magnitude (also large_final)"),
    ("granularities", "k*", "kernel"),
    ("granularities", "N*", "N:M (e.g. 2:4)"),
])
def test_every_registry_is_listed_by_a_glob(capsys, command, pattern, expect):
    rc, out, err = cli(capsys, command, pattern)
    assert rc == 0, err
    assert expect in out and all(line.split()[0].startswith(pattern[:-1]) for line in out.splitlines())
    rc, _, err = cli(capsys, command, "no-such-*")
    assert rc == 2 and f"try 'sparsetrain {command}'" in err


def test_granularities_lists_names_then_families(capsys):
    rc, out, err = cli(capsys, "granularities")
    assert rc == 0, err
    first = [line.split()[0] for line in out.splitlines()]
    assert first[:8] == sorted(["weight", "row", "column", "vector", "kernel", "channel", "in_channel", "filter"])
    assert first[8:] == ["N:M", "blockHxW"] and "one kh x kw kernel" in out


def test_a_second_registration_under_a_taken_name_is_an_error():
    from sparsetrain.errors import SparsetrainError
    from sparsetrain.train.models import register_model
    with pytest.raises(SparsetrainError, match="a model named 'resnet20' is already registered"):
        register_model("resnet20")(lambda num_classes=10: None)
