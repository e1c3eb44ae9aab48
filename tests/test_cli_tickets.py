"""``sparsetrain tickets imp|gems`` end to end on tiny data, argument handling and bad input."""

from __future__ import annotations

import json
import sys
import types

import pytest
import yaml

from sparsetrain.cli import main

#: a tiny MLP on scikit-learn's digits, one epoch of 22 steps per round
TINY = ["--data.name", "digits", "--model.name", "mlp", "--model.hidden", "[16]", "--batch_size", "64",
        "--epochs", "1", "--threads", "1", "--optim.name", "adam", "--optim.lr", "0.01", "--optim.weight_decay", "0.0",
        "--schedule.name", "constant", "--run.progress", "false"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def test_imp_two_rounds_then_resume_with_a_third(tmp_path, capsys):
    out = tmp_path / "imp"
    rc, stdout, err = cli(capsys, "tickets", "imp", "--imp.rounds", "2", "--config", "imp_mnist1d_mlp",
                          "--out", str(out), *TINY, "--imp.target_density", "null", "--imp.scope", "global")
    assert rc == 0, err
    assert "| 2 | 0.6402 | 35.98 |" in stdout and "IMP round 2/2" in stdout
    for name in ("imp.yaml", "rewind.pt", "imp_summary.json", "imp_summary.csv", "imp_summary.md",
                 "imp_accuracy.png", "round_00/summary.json", "round_02/checkpoint.pt"):
        assert (out / name).is_file(), name
    saved = yaml.safe_load((out / "imp.yaml").read_text())
    assert saved["imp"]["rounds"] == 2 and saved["data"]["name"] == "digits"
    rc, _, err = cli(capsys, "tickets", "imp", "--config", "imp_mnist1d_mlp", "--out", str(out), *TINY,
                     "--imp.rounds", "2", "--imp.target_density", "null", "--imp.scope", "global")
    assert rc == 2 and "--resume" in err  # an existing folder is never trained over silently
    rc, stdout, err = cli(capsys, "tickets", "imp", "--imp.rounds", "3", "--out", str(out), "--resume")
    assert rc == 0, err
    assert "IMP round 3/3" in stdout and "IMP round 1/3" not in stdout  # complete rounds are skipped
    rows = json.loads((out / "imp_summary.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2, 3] and rows[3]["density"] == pytest.approx(0.512, abs=1e-3)


@pytest.mark.parametrize("args, message", [
    (["--imp.target_density", "10"], "looks like a percentage: pass 0.1"),
    (["--imp.prune_fraction", "20"], "looks like a percentage: pass 0.2"),
    (["--imp.target_density", "0.01", "--imp.rounds", "3"], "cannot be reached in 3 rounds"),
    (["--imp.scope", "glob"], "Did you mean: global"),
    (["--imp.rounds", "0"], "imp.rounds must be a whole number >= 1, got 0"),
])
def test_imp_bad_input_is_one_clear_message(capsys, tmp_path, args, message):
    rc, _, err = cli(capsys, "tickets", "imp", *args, "--config", "imp_mnist1d_mlp", "--out", str(tmp_path / "x"))
    assert rc == 2 and message in err, err
    assert not (tmp_path / "x").exists()


def test_key_value_overrides_still_work_with_a_warning_naming_the_new_spelling(capsys, tmp_path):
    with pytest.warns(FutureWarning, match="--imp.target_density 10 --epochs 2"):
        rc, _, err = cli(capsys, "tickets", "imp", "imp.target_density=10", "--config", "imp_mnist1d_mlp",
                         "--set", "epochs=2", "--out", str(tmp_path / "x"))
    assert rc == 2 and "looks like a percentage: pass 0.1" in err  # the values reached the config
    from sparsetrain.cli.tickets import key_value_overrides
    from sparsetrain.errors import SparsetrainError
    with pytest.raises(SparsetrainError, match="expected an override KEY=VALUE"):
        key_value_overrides(["epochs"])


def test_imp_needs_a_config_and_resume_needs_out(capsys, tmp_path):
    rc, _, err = cli(capsys, "tickets", "imp")
    assert rc == 2 and "needs --config" in err
    rc, _, err = cli(capsys, "tickets", "imp", "--resume")
    assert rc == 2 and "--resume needs --out" in err
    rc, _, err = cli(capsys, "tickets", "imp", "--resume", "--out", str(tmp_path))
    assert rc == 2 and "no imp.yaml" in err
    rc, _, err = cli(capsys, "tickets", "imp", "--config", "imp_mnst1d_mlp")
    assert rc == 2 and "Did you mean: imp_mnist1d_mlp" in err


@pytest.fixture
def fake_gems(monkeypatch):
    """A stand-in ``sparsetrain.procedures.gems`` that records its calls."""
    calls = {}
    module = types.ModuleType("sparsetrain.procedures.gems")

    def load_gems_config(path):
        calls["config"] = str(path)
        return {"loaded": str(path)}

    def run_gems(config, out_dir, progress=True):
        calls.update(run=config, out=str(out_dir), progress=progress)
        return {"density": 0.05, "gem_acc_before_finetune": 0.4125, "acc_after_finetune": 0.875,
                "sanity": {"reinit": 0.5, "reshuffle": 0.25}, "other": 1}
    module.load_gems_config, module.run_gems = load_gems_config, run_gems
    monkeypatch.setitem(sys.modules, "sparsetrain.procedures.gems", module)
    return calls


def test_gems_arguments_reach_the_procedure(fake_gems, capsys, tmp_path):
    rc, out, err = cli(capsys, "tickets", "gems", "--config", "gems_x.yaml", "--out", str(tmp_path / "g"))
    assert rc == 0, err
    assert fake_gems == {"config": "gems_x.yaml", "run": "gems_x.yaml", "out": str(tmp_path / "g"),
                         "progress": True}
    assert "density                  0.0500" in out and "acc_after_finetune       0.8750" in out
    assert "gem_acc_before_finetune  0.4125" in out and "reinit 0.5000, reshuffle 0.2500" in out
    assert "other" not in out


@pytest.mark.parametrize("args, message", [
    ([], "needs --config"),
    (["--epochs", "3", "--config", "g.yaml"], "no overrides"),
    (["--config", "g.yaml", "--resume"], "no --resume"),
])
def test_gems_bad_arguments(fake_gems, capsys, args, message):
    rc, _, err = cli(capsys, "tickets", "gems", *args)
    assert rc == 2 and message in err, err
    assert "run" not in fake_gems


@pytest.mark.slow  # about 5 s alone, 20+ s on the shared machine: it runs the whole Gem-Miner procedure
def test_gems_end_to_end_tiny(capsys, tmp_path):
    pytest.importorskip("sparsetrain.procedures.gems")
    config = tmp_path / "gems_tiny.yaml"
    config.write_text(yaml.safe_dump({"dataset": "digits", "target_sparsity": 20, "epochs": 3, "iter_period": 1,
                                      "finetune_epochs": 1, "sanity_checks": False, "threads": 1}))
    rc, out, err = cli(capsys, "tickets", "gems", "--config", str(config), "--out", str(tmp_path / "g"))
    assert rc == 0, err
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["density"] == pytest.approx(0.2, abs=0.01)
    assert f"density                  {summary['density']:.4f}" in out
