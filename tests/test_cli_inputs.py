"""Bad values that torch would reject with a traceback get one line from the config check (issue 17)."""

from __future__ import annotations

import pytest

from sparsetrain.cli import main


@pytest.mark.parametrize("args, message", [
    (["--batch_size", "0"], "batch_size must be a whole number >= 1, got 0"),
    (["--batch_size", "-4"], "batch_size must be a whole number >= 1, got -4"),
    (["--epochs", "-3"], "epochs must be a whole number >= 1, got -3"),
    (["--epochs", "0"], "epochs must be a whole number >= 1, got 0"),
    (["--epochs", "2.5"], "epochs must be a whole number >= 1, got 2.5"),
    (["--optim.lr", "-0.1"], "optim.lr must be >= 0, got -0.1"),
])
def test_bad_values_end_in_one_line_before_any_data_set_up(capsys, args, message):
    rc = main(["train", *args, "--print-config"])
    err = capsys.readouterr().err
    assert rc != 0 and message in err and "Traceback" not in err


def test_a_learning_rate_of_zero_warns_once(capsys):
    with pytest.warns(UserWarning, match="optim.lr is 0"):
        assert main(["train", "--optim.lr", "0", "--print-config"]) == 0


def test_a_device_that_is_not_here_names_the_ones_that_are(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = main(["train", "--device", "cuda", "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc != 0 and "not available on this machine (available: cpu" in err and "Traceback" not in err


def test_yaml_errors_say_where(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    rc = main(["train", "--config", str(bad), "--print-config"])
    err = capsys.readouterr().err
    assert rc != 0 and f"recipe {bad} is not valid YAML" in err and "line 2, column 1" in err
    rc = main(["train", "--method.exclude", '["fc.*"', "--print-config"])
    err = capsys.readouterr().err
    assert rc != 0 and "cannot read the value" in err and "line 1, column 8" in err and "Traceback" not in err


def test_a_truncated_checkpoint_is_called_damaged(tmp_path):
    from sparsetrain.errors import SparsetrainError
    from sparsetrain.train.checkpoint import load_checkpoint, save_checkpoint
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 3, "w": list(range(1000))}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SparsetrainError, match="is damaged .*--overwrite"):
        load_checkpoint(path)


def test_run_files_follow_the_umask_and_a_full_disk_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    import errno
    import os

    from sparsetrain.core import files
    from sparsetrain.errors import SparsetrainError
    from sparsetrain.train import checkpoint
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_checkpoint({"epoch": 1}, path)
    assert path.stat().st_mode & 0o777 == checkpoint.FILE_MODE  # not mkstemp's 0600

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(SparsetrainError, match="No space left on device; the previous checkpoint.pt is intact"):
        checkpoint.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_a_full_disk_while_drawing_plots_names_the_file_and_keeps_the_run(capsys, tmp_path, monkeypatch):
    import errno
    import os

    from matplotlib.figure import Figure

    def full(self, fh, **kwargs):
        fh.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full)
    rc = main(["train", "--epochs", "1", "--data.num_samples", "300", "--model.width", "4", "--threads", "1",
               "--run.dir", str(tmp_path), "--run.name", "r"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"cannot write {tmp_path / 'r' / 'accuracy.png'}: No space left on device" in err
    assert "checkpoint.pt and summary.json are intact" in err and f"sparsetrain plot {tmp_path / 'r'}" in err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["checkpoint.pt", "config.yaml", "metrics.jsonl",
                                                                  "summary.json"]  # no half PNG, no lock left


@pytest.mark.parametrize("argv, message", [
    (["compare", "--methods", "dense", "--seeds", "0"], "argument --seeds: must be a whole number >= 1, got 0."),
    (["compare", "--methods", "dense", "--densities", "abc"], "argument --densities: each value must be a number"),
    (["compare", "--methods", "dense", "--densities", "0.1,50"], "It looks like a percentage: pass 0.5"),
    (["compact", "runs/x", "--round-to", "0"], "argument --round-to: must be a whole number >= 1, got 0."),
    (["compact", "runs/x", "--calibrate", "-1"], "argument --calibrate: must be a whole number >= 0, got -1."),
    (["export", "runs/x", "--round-to", "2.5"], "argument --round-to: must be a whole number >= 1, got 2.5."),
    (["bench", "resnet20", "--batch-sizes", "0,2"], "argument --batch-sizes: each value must be a whole number"),
    (["bench", "resnet20", "--input-shape", "3,x"], "argument --input-shape: each value must be a whole number"),
    (["bench", "resnet20", "--density", "10"], "argument --density: must be in (0, 1]"),
    (["bench", "resnet20", "--reps", "0"], "argument --reps: must be a whole number >= 1, got 0."),
    (["schedules", "--sparsity", "2"], "argument --sparsity: must be a fraction in [0, 1], got 2"),
])
def test_every_command_checks_its_numbers_like_the_config(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir()), "a refused command wrote something"


def test_the_config_and_the_options_share_one_check():
    from sparsetrain.cli.arguments import count
    from sparsetrain.errors import SparsetrainError, check_count
    from sparsetrain.train.config import load_config
    with pytest.raises(SparsetrainError, match="epochs must be a whole number >= 1, got 0"):
        load_config(None, ["--epochs", "0"])
    with pytest.raises(SparsetrainError, match="epochs must be a whole number >= 1, got 0"):
        check_count(0, "epochs")
    assert count()("3") == 3
