"""``sparsetrain tickets imp|gems`` end to end on tiny data, argument handling and bad input."""

from __future__ import annotations

import json

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
    """The real config loading, with a stand-in ``run_gems`` that records what it was given."""
    from sparsetrain.procedures import gems
    calls = {}

    def run_gems(config, out_dir, progress=True):
        calls.update(run=config, out=str(out_dir), progress=progress)
        return {"density": 0.05, "gem_acc_before_finetune": 0.4125, "acc_after_finetune": 0.875,
                "sanity": {"reinit": 0.5, "reshuffle": 0.25}, "other": 1}
    monkeypatch.setattr(gems, "run_gems", run_gems)
    return calls


def test_gems_overrides_reach_the_procedure(fake_gems, capsys, tmp_path):
    rc, out, err = cli(capsys, "tickets", "gems", "--config", "gems_digits", "--out", str(tmp_path / "g"),
                       "--gems.iter_period", "3", "--epochs", "4", "--gems.target_sparsity", "20")
    assert rc == 0, err
    cfg = fake_gems["run"]
    assert (cfg["epochs"], cfg["gems"]["iter_period"], cfg["gems"]["density"]) == (4, 3, 0.2)
    assert cfg["gems"]["finetune_epochs"] == 40 and cfg["data"]["name"] == "digits"  # the file's own values
    assert fake_gems["out"] == str(tmp_path / "g") and fake_gems["progress"] is True
    assert "density                  0.0500" in out and "acc_after_finetune       0.8750" in out
    assert "gem_acc_before_finetune  0.4125" in out and "reinit 0.5000, reshuffle 0.2500" in out
    assert "other" not in out


def test_gems_takes_a_flat_rare_gems_file_with_overrides_and_prints_the_config(fake_gems, capsys, tmp_path):
    config = tmp_path / "rare.yml"
    config.write_text("arch: mlp\ndataset: digits\ntarget_sparsity: 5\nepochs: 6\niter_period: 2\nwd: 5e-4\n"
                      "gpu: 0\nskip_sanity_checks: True\n")
    rc, out, err = cli(capsys, "tickets", "gems", "--config", str(config), "--gems.iter_period", "5",
                       "--print-config")
    assert rc == 0, err
    printed = yaml.safe_load(out)
    assert printed["gems"]["iter_period"] == 5 and printed["gems"]["sanity_checks"] is False
    assert printed["optim"]["weight_decay"] == 5e-4 and printed["model"]["name"] == "mlp"
    assert "run" not in fake_gems  # --print-config stops before the procedure
    rc, _, err = cli(capsys, "tickets", "gems", "--config", str(config), "--run.name", "mine",
                     "--run.dir", str(tmp_path / "runs"), "--run.progress", "false")
    assert rc == 0, err
    assert fake_gems["out"] == str(tmp_path / "runs" / "mine") and fake_gems["progress"] is False


def test_imp_prints_its_resolved_config(capsys):
    rc, out, err = cli(capsys, "tickets", "imp", "--config", "imp_mnist1d_mlp", "--imp.rounds", "2",
                       "--imp.target_density", "null", "--print-config")
    assert rc == 0, err
    printed = yaml.safe_load(out)
    assert printed["imp"]["rounds"] == 2 and printed["method"] == {"name": "dense"}


@pytest.mark.parametrize("args, message", [
    ([], "needs --config"),
    (["--config", "gems_digits", "--resume"], "no --resume"),
    (["--config", "gems_digits", "--gems.iter_perod", "3"],
     "unknown gems key 'iter_perod'. Did you mean: iter_period? Choices: algo, allow_sub_percent, alpha, "),
    (["--config", "gems_digits", "--iter_period", "3"], "written as in the nested config: --gems.iter_period"),
    (["--config", "gems_digits", "--run.plots", "false"], "Gem-Miner does not read run.plots"),
    (["--config", "gems_digits", "--gems.target_sparsity", "0.5"], "percent of weights REMAINING"),
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
