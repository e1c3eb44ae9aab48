"""The reference trainer: resume after an interruption, kills, non-finite loss, bad configurations.

A resumed run must end bit-identical to an uninterrupted one (weights, masks,
optimizer state) with a metrics log free of duplicated or missing records.
Interruptions are real: an in-process ``KeyboardInterrupt``, a process that
gets SIGKILL while writing its epoch-3 checkpoint, one that gets SIGINT in the
middle of epoch 3, and SIGKILLs from outside at random moments.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import sparsetrain.train.run as run_module
from _kit import torch_state
from sparsetrain.cli import main
from sparsetrain.train.config import load_config, parse_overrides

#: 480 train / 120 test samples, 9 steps per epoch, a topology update every 3 steps
TINY = ["--data.num_samples", "600", "--batch_size", "50", "--model.width", "8", "--threads", "1",
        "--run.plots", "false"]
UPDATE_EVERY_3 = ("--method.update_every", "3")
RUN = "granet-cnn1d-mnist1d-s0"

#: run the CLI in a child process that signals itself at a chosen point:
#: argv = SIGNAL WHEN N -- CLI ARGS; WHEN is "steps" (after N training steps past the epoch-2
#: checkpoint) or "checkpoint" (inside the N-th checkpoint write: temp file written, not yet renamed)
SELF_SIGNAL = r"""
import os, signal, sys
import sparsetrain.core.files as files
import sparsetrain.train.run as run
from sparsetrain.cli import main

sig, when, n = getattr(signal, sys.argv[1]), sys.argv[2], int(sys.argv[3])
argv = sys.argv[sys.argv.index("--") + 1:]
state = {"armed": False, "steps": 0, "writes": 0}

if when == "steps":
    save, events = run.RunLogger.save, run.RunLogger.update_events

    def patched_save(self, epoch, *args, **kwargs):
        save(self, epoch, *args, **kwargs)
        state["armed"] = state["armed"] or epoch == 2

    def patched_events(self, sparsifier):
        events(self, sparsifier)
        if state["armed"]:
            state["steps"] += 1
            if state["steps"] == n:
                os.kill(os.getpid(), sig)

    run.RunLogger.save, run.RunLogger.update_events = patched_save, patched_events
else:
    fsync = os.fsync

    def patched_fsync(fd):
        fsync(fd)
        if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            state["writes"] += 1
            if state["writes"] == n:
                os.kill(os.getpid(), sig)

    files.os.fsync = patched_fsync
sys.exit(main(argv))
"""






def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def interrupt_after_epoch(monkeypatch, epoch: int) -> None:
    """Make the trainer raise KeyboardInterrupt (as Ctrl-C would) right after ``epoch`` is checkpointed."""
    end_epoch = run_module.RunLogger.end_epoch

    def interrupting(self, metrics, *args, **kwargs):
        end_epoch(self, metrics, *args, **kwargs)
        if metrics["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module.RunLogger, "end_epoch", interrupting)


def run_child(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: epoch fields measured on the wall clock (they differ between two runs of the same thing)
WALL_CLOCK = ("time", "step_time", "samples_per_s")


def comparable_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in read_jsonl(run_dir / "metrics.jsonl")]


def load_ckpt(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def assert_same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys differ {sorted(set(a) ^ set(b))}"
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(resumed: Path, reference: Path, epochs: int) -> None:
    """Bit-identical final state and the same metrics log as the uninterrupted run."""
    a, b = load_ckpt(resumed), load_ckpt(reference)
    assert a["epoch"] == b["epoch"] == epochs
    assert_same_tensors(a["model"], b["model"], "model")
    if b["sparsifier"] is not None:
        assert_same_tensors(a["sparsifier"]["masks"], b["sparsifier"]["masks"], "masks")
        assert_same_tensors(a["sparsifier"], b["sparsifier"], "sparsifier")
    assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer")
    assert_same_tensors(a["lr_schedule"], b["lr_schedule"], "lr_schedule")
    metrics = comparable_metrics(resumed)
    epoch_numbers = [r["epoch"] for r in metrics if r.get("event") == "epoch"]
    assert epoch_numbers == list(range(1, epochs + 1)), f"epochs logged: {epoch_numbers}"
    assert metrics == comparable_metrics(reference)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (resumed, reference))
    for key in ("final_test_acc", "best", "density", "layer_density", "itop_rate", "flops"):
        assert sa[key] == sb[key], key


def train_args(run_dir: Path, epochs: int = 4, extra: tuple[str, ...] = UPDATE_EVERY_3) -> list[str]:
    return ["train", "--epochs", str(epochs), *TINY, *extra, "--run.dir", str(run_dir)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted 4-epoch run every resume test compares against."""
    root = tmp_path_factory.mktemp("reference")
    with torch_state(), contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115
        assert main(train_args(root)) == 0
    return root / RUN


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("method", ["granet", "rigl", "set", "gmp", "static", "dense"])
def test_resume_after_keyboard_interrupt_is_bit_identical(capsys, tmp_path, monkeypatch, method):
    extra = ("--method.name", method)
    if method not in ("static", "dense"):
        extra += UPDATE_EVERY_3
    ref_root, run_root = tmp_path / "ref", tmp_path / "run"
    rc, _, err = cli(capsys, *train_args(ref_root, extra=extra))
    assert rc == 0, err
    name = f"{method}-cnn1d-mnist1d-s0"

    interrupt_after_epoch(monkeypatch, 2)
    rc, _, err = cli(capsys, *train_args(run_root, extra=extra))
    assert rc == 130
    assert "interrupted" in err and "--resume" in err
    assert load_ckpt(run_root / name)["epoch"] == 2
    assert not (run_root / name / "summary.json").exists()
    monkeypatch.undo()

    rc, out, err = cli(capsys, "train", "--resume", run_root / name)
    assert rc == 0, err
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch ")] == ["3/4", "4/4"]
    assert_same_run(run_root / name, ref_root / name, epochs=4)


def test_resume_is_bit_identical_with_dropout_and_augmentation(capsys, tmp_path, monkeypatch):
    """A model that draws from the global RNG (dropout) and augmented data (issue 17): nothing may draw from the
    global RNG between the restore and the first batch."""
    extra = ("--model.name", "wrn28_2", "--model.dropout", "0.3", "--data.name", "synthetic",
             "--data.input_shape", "[3, 8, 8]", "--data.num_train", "64", "--data.num_test", "16",
             "--batch_size", "16", "--method.name", "rigl", "--method.update_every", "3")
    args = ["train", "--epochs", "3", "--run.plots", "false", "--run.progress", "false", *extra]
    rc, _, err = cli(capsys, *args, "--run.dir", tmp_path / "ref")
    assert rc == 0, err
    interrupt_after_epoch(monkeypatch, 1)
    rc, _, err = cli(capsys, *args, "--run.dir", tmp_path / "run")
    assert rc == 130, err
    monkeypatch.undo()
    name = "rigl-wrn28_2-synthetic-s0"
    rc, _, err = cli(capsys, "train", "--resume", tmp_path / "run" / name)
    assert rc == 0, err
    assert_same_run(tmp_path / "run" / name, tmp_path / "ref" / name, epochs=3)


def test_a_torn_last_metrics_line_loses_only_itself(capsys, tmp_path, monkeypatch):
    """Cut the end off metrics.jsonl (the checkpointed epoch's record): resume keeps every intact update record."""
    interrupt_after_epoch(monkeypatch, 2)
    rc, _, err = cli(capsys, *train_args(tmp_path, extra=("--method.name", "rigl", *UPDATE_EVERY_3)))
    assert rc == 130, err
    monkeypatch.undo()
    run_dir = tmp_path / "rigl-cnn1d-mnist1d-s0"
    path = run_dir / "metrics.jsonl"
    before = read_jsonl(path)
    updates = [r["step"] for r in before if r.get("event") == "update"]
    path.write_bytes(path.read_bytes()[:-40])  # tears the epoch-2 record, the last line
    rc, _, err = cli(capsys, "train", "--resume", run_dir)
    assert rc == 0, err
    after = read_jsonl(path)
    assert [r["step"] for r in after if r.get("event") == "update"][: len(updates)] == updates
    assert [r["epoch"] for r in after if r.get("event") == "epoch"] == [1, 3, 4]  # only the torn record is gone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc/self/fd")
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(capsys, tmp_path, reference):
    # killed inside the 3rd checkpoint write: the temp file is complete but not yet renamed
    proc = run_child("-c", SELF_SIGNAL, "SIGKILL", "checkpoint", "3", "--", *train_args(tmp_path))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_dir = tmp_path / RUN
    state = load_ckpt(run_dir)  # the previous checkpoint, intact
    assert state["epoch"] == 2
    assert list(run_dir.glob(".checkpoint.pt.*.tmp")), "the kill should have hit the temp file"
    logged = [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "epoch"]
    assert logged == [1, 2, 3]  # epoch 3 was logged, its checkpoint never landed

    rc, out, err = cli(capsys, "train", "--resume", run_dir)
    assert rc == 0, err
    assert_same_run(run_dir, reference, epochs=4)


def test_sigint_in_the_middle_of_an_epoch_then_resume(capsys, tmp_path, reference):
    # SIGINT after 4 steps of epoch 3 (the update at step 21 is already logged)
    proc = run_child("-c", SELF_SIGNAL, "SIGINT", "steps", "4", "--", *train_args(tmp_path))
    assert proc.returncode == 130, proc.stderr
    run_dir = tmp_path / RUN
    assert f"interrupted; the last checkpoint is intact (resume with --resume {run_dir})" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert load_ckpt(run_dir)["epoch"] == 2
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert max(steps) == 21, "the interrupted epoch's update should be in the log before resuming"

    rc, out, err = cli(capsys, "train", "--resume", run_dir)
    assert rc == 0, err
    assert_same_run(run_dir, reference, epochs=4)


def test_checkpoint_survives_sigkill_at_random_moments(capsys, tmp_path):
    """``python -m sparsetrain train`` killed from outside at random moments: the checkpoint always loads,
    and resuming twice more still ends bit-identical to an uninterrupted run."""
    # 1800 train samples: 36 steps per epoch, a multiple of update_every, so that no epoch starts with an update
    # (test_resume_logs_an_update_on_the_first_step_after_the_checkpoint covers that case)
    args = ["train", "--epochs", "16", "--data.num_samples", "2250", "--batch_size", "50", "--model.width", "8",
            "--threads", "1", "--run.plots", "false", "--method.update_every", "3"]
    rc, _, err = cli(capsys, *args, "--run.dir", tmp_path / "ref")
    assert rc == 0, err
    run_dir = tmp_path / "run" / RUN
    rng = random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    commands = [[*args, "--run.dir", str(tmp_path / "run")], ["train", "--resume", str(run_dir)]]
    killed = 0
    for command in commands:
        before = load_ckpt(run_dir)["epoch"] if (run_dir / "checkpoint.pt").exists() else 0
        stamp = (run_dir / "checkpoint.pt").stat().st_mtime_ns if before else None
        proc = subprocess.Popen([sys.executable, "-m", "sparsetrain", *command], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:  # wait for a new checkpoint
                if (run_dir / "checkpoint.pt").exists() and (run_dir / "checkpoint.pt").stat().st_mtime_ns != stamp:
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        state = load_ckpt(run_dir)  # never corrupt
        assert before <= state["epoch"] <= 16
        assert state["sparsifier"]["masks"]
    assert killed >= 1, "the runs finished before they could be killed; make them longer"

    rc, _, err = cli(capsys, "train", "--resume", run_dir)
    assert rc == 0, err
    assert_same_run(run_dir, tmp_path / "ref" / RUN, epochs=16)


def test_resume_of_a_finished_run_changes_nothing(capsys, tmp_path):
    rc, _, err = cli(capsys, *train_args(tmp_path, epochs=2))
    assert rc == 0, err
    run_dir = tmp_path / RUN
    before_ckpt, before_metrics = load_ckpt(run_dir), comparable_metrics(run_dir)
    rc, out, err = cli(capsys, "train", "--resume", run_dir)
    assert rc == 0, err
    assert not [line for line in out.splitlines() if line.startswith("epoch ")]
    assert_same_tensors(load_ckpt(run_dir)["model"], before_ckpt["model"], "model")
    assert comparable_metrics(run_dir) == before_metrics


def test_resume_logs_an_update_on_the_first_step_after_the_checkpoint(capsys, tmp_path, monkeypatch):
    extra = ("--method.update_every", "1")  # an update on every step, the first resumed one included
    rc, _, err = cli(capsys, *train_args(tmp_path / "ref", epochs=3, extra=extra))
    assert rc == 0, err
    interrupt_after_epoch(monkeypatch, 1)
    assert cli(capsys, *train_args(tmp_path / "run", epochs=3, extra=extra))[0] == 130
    monkeypatch.undo()
    assert cli(capsys, "train", "--resume", tmp_path / "run" / RUN)[0] == 0
    steps = [r["step"] for r in read_jsonl(tmp_path / "run" / RUN / "metrics.jsonl") if r.get("event") == "update"]
    assert 10 in steps, "the update at step 10 (the first after the checkpoint) is missing"
    assert comparable_metrics(tmp_path / "run" / RUN) == comparable_metrics(tmp_path / "ref" / RUN)


def test_resume_without_a_checkpoint_is_a_clear_error(capsys, tmp_path):
    run_dir = tmp_path / "crashed"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(load_config(None, [*TINY, *UPDATE_EVERY_3])))
    rc, _, err = cli(capsys, "train", "--resume", run_dir)
    assert rc == 2
    assert "cannot resume" in err and "checkpoint.pt" in err and "--overwrite" in err


def test_resume_of_a_folder_that_is_not_a_run_is_a_clear_error(capsys, tmp_path):
    rc, _, err = cli(capsys, "train", "--resume", tmp_path / "not-a-run")
    assert rc == 2
    assert "not a run folder" in err and "recipe" not in err


def test_resume_refuses_a_checkpoint_of_another_method(capsys, tmp_path):
    assert cli(capsys, *train_args(tmp_path, epochs=1))[0] == 0
    rc, _, err = cli(capsys, "train", "--resume", tmp_path / RUN, "--method.name", "rigl")
    assert rc == 2
    assert "granet" in err and "rigl" in err


def test_a_refused_resume_leaves_the_run_folder_untouched(capsys, tmp_path):
    assert cli(capsys, *train_args(tmp_path, epochs=1))[0] == 0
    config = (tmp_path / RUN / "config.yaml").read_text()
    assert cli(capsys, "train", "--resume", tmp_path / RUN, "--method.name", "rigl")[0] == 2
    assert (tmp_path / RUN / "config.yaml").read_text() == config
    rc, _, err = cli(capsys, "train", "--resume", tmp_path / RUN)
    assert rc == 0, err


# ----------------------------------------------------------------------------- existing folders
def test_an_existing_run_folder_is_refused_then_overwritten(capsys, tmp_path):
    args = train_args(tmp_path, epochs=1)
    assert cli(capsys, *args)[0] == 0
    run_dir = tmp_path / RUN
    (run_dir / "marker.txt").write_text("old run")
    rc, _, err = cli(capsys, *args)
    assert rc == 2
    assert "already exists" in err and "--resume" in err and "--overwrite" in err
    assert (run_dir / "marker.txt").exists()

    rc, _, err = cli(capsys, *args, "--overwrite")
    assert rc == 0, err
    assert not (run_dir / "marker.txt").exists()
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "epoch"] == [1]


# ----------------------------------------------------------------------------- non-finite loss
def test_non_finite_loss_stops_with_a_clear_message(capsys, tmp_path):
    rc, _, err = cli(capsys, *train_args(tmp_path, epochs=2, extra=(*UPDATE_EVERY_3, "--optim.lr", "1.0e+30")))
    assert rc == 2
    assert "loss became" in err and ("nan" in err or "inf" in err) and "optim.lr" in err
    assert "Traceback" not in err
    assert not (tmp_path / RUN / "checkpoint.pt").exists()


def test_exponent_overrides_are_numbers(capsys, tmp_path):
    assert parse_overrides(["--optim.lr", "1e30", "--optim.weight_decay", "5e-4"]) == {
        "optim": {"lr": 1e30, "weight_decay": 5e-4}}, "parsed as strings"
    rc, _, err = cli(capsys, *train_args(tmp_path, epochs=2, extra=(*UPDATE_EVERY_3, "--optim.lr", "1e30")))
    assert rc == 2 and "loss became" in err


def test_non_finite_loss_keeps_the_last_good_checkpoint(capsys, tmp_path):
    # the LR jumps by 1e30 at half of training (step 18 = end of epoch 2): epoch 3 diverges
    extra = (*UPDATE_EVERY_3, "--schedule.name", "multistep", "--schedule.milestones", "[0.5]",
             "--schedule.gamma", "1.0e+30")
    rc, out, err = cli(capsys, *train_args(tmp_path, epochs=4, extra=extra))
    assert rc == 2
    assert "loss became" in err and "epoch 3" in err and "checkpoint" in err
    state = load_ckpt(tmp_path / RUN)
    assert state["epoch"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (tmp_path / RUN / "summary.json").exists()


def test_non_finite_loss_before_any_checkpoint_does_not_claim_one(capsys, tmp_path):
    rc, _, err = cli(capsys, *train_args(tmp_path, epochs=2, extra=(*UPDATE_EVERY_3, "--optim.lr", "1.0e+30")))
    assert rc == 2 and not (tmp_path / RUN / "checkpoint.pt").exists()
    assert "checkpoint" not in err or "no checkpoint" in err


# ----------------------------------------------------------------------------- bad configurations
@pytest.mark.parametrize(("args", "kind", "valid"), [
    (("--config", "granet_mnist"), "recipe", ["granet_mnist1d", "rigl_mnist1d"]),
    (("--method.name", "rigll"), "method", ["rigl", "granet", "set"]),
    (("--model.name", "resnet21"), "model", ["resnet20", "cnn1d", "mlp"]),
    (("--data.name", "mnist2d"), "dataset", ["mnist1d", "cifar10", "digits"]),
])
def test_unknown_names_list_the_choices(capsys, tmp_path, args, kind, valid):
    rc, _, err = cli(capsys, "train", *args, "--run.dir", tmp_path)
    assert rc == 2
    assert f"unknown {kind}" in err and "Choices:" in err
    for name in valid:
        assert name in err
    assert not list(tmp_path.iterdir()), "nothing should be written for a bad configuration"


@pytest.mark.parametrize(("args", "named"), [
    (("--method.densty", "0.1"), "densty"),
    (("--foo", "1"), "foo"),
    (("--optim.lrr", "0.1"), "lrr"),
    (("--model.widht", "8"), "widht"),
    (("--data.num_sample", "600"), "num_sample"),
])
def test_unknown_config_keys_are_named(capsys, tmp_path, args, named):
    rc, _, err = cli(capsys, "train", *args, "--run.dir", tmp_path)
    assert rc == 2
    assert "unknown config key" in err and named in err
    assert not list(tmp_path.iterdir())


def test_missing_data_directory_says_which_files_were_expected(capsys, tmp_path):
    rc, _, err = cli(capsys, "train", "--data.name", "cifar10", "--data.root", "/nonexistent", "--epochs", "1",
                     "--run.dir", tmp_path)
    assert rc == 2
    assert "/nonexistent" in err
    for name in ("data_batch_1", "data_batch_5", "test_batch", "cifar-10-batches-py"):
        assert name in err
    assert not list(tmp_path.iterdir()), "no run folder for a run that never started"


def test_resume_with_another_length_of_training_is_refused(capsys, tmp_path):
    """Regression: --resume RUN --epochs N kept the sparsifier's old total_steps silently."""
    rc, _, err = cli(capsys, *train_args(tmp_path, epochs=2))
    assert rc == 0, err
    rc, _, err = cli(capsys, "train", "--resume", tmp_path / RUN, "--epochs", "5")
    assert rc == 2 and "different length of training" in err


def test_stale_temp_checkpoint_is_cleaned_and_cut_metrics_line_is_skipped(capsys, tmp_path, monkeypatch):
    """Regression: a kill during a write leaves a .tmp file and maybe half a metrics line."""
    interrupt_after_epoch(monkeypatch, 1)
    assert cli(capsys, *train_args(tmp_path, epochs=2))[0] == 130
    monkeypatch.undo()
    run_dir = tmp_path / RUN
    (run_dir / ".checkpoint.pt.abc.tmp").write_bytes(b"partial")
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"event": "update", "st')
    assert cli(capsys, "train", "--resume", run_dir)[0] == 0
    assert not list(run_dir.glob(".checkpoint.pt.*.tmp"))
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "epoch"] == [1, 2]


def test_optimizer_and_schedule_overrides_on_resume_are_refused(capsys, tmp_path):
    """Regression (issue 17): --schedule.gamma on --resume acted one step late; it is now refused in one line."""
    assert cli(capsys, *train_args(tmp_path, epochs=1))[0] == 0
    for override in (("--schedule.gamma", "0.1"), ("--optim.lr", "0.5")):
        rc, _, err = cli(capsys, "train", "--resume", tmp_path / RUN, *override)
        assert rc == 2 and "restores" in err and "start a new run" in err and "Traceback" not in err


def test_a_hand_edited_method_argument_on_resume_names_the_config_file(capsys, tmp_path):
    assert cli(capsys, *train_args(tmp_path, epochs=1))[0] == 0
    config_path = tmp_path / RUN / "config.yaml"
    cfg = yaml.safe_load(config_path.read_text())
    cfg["method"]["update_every"] = 7
    config_path.write_text(yaml.safe_dump(cfg))
    rc, _, err = cli(capsys, "train", "--resume", tmp_path / RUN)
    assert rc == 2
    assert "update_every: saved 3, now 7" in err and f"under method: in {config_path}" in err
    assert "attach" not in err
