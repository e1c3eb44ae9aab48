"""``--method.shrink true`` in the reference trainer: the widths over time in summary.json, the step time
per epoch in metrics.jsonl, the throughput plot, a bit-identical resume of a shrunk run, and
``sparsetrain compact`` of a shrunk run (nothing left to remove, the deployable files all the same)."""

from __future__ import annotations

import json

import pytest
import torch

from _kit import torch_state
from sparsetrain.cli import main
from sparsetrain.cli.export import example_batch, load_run
from sparsetrain.deploy.checkpoint import load_compact
from test_trainer import assert_same_run, cli, interrupt_after_epoch

pytestmark = pytest.mark.usefixtures("one_thread")

#: MNIST-1D, 600 samples (9 steps an epoch), a 16-wide 1D CNN; Chase removes half of its channels by step 29
SHRINK_RUN = ["train", "--epochs", "4", "--data.num_samples", "600", "--batch_size", "50", "--model.width", "16",
              "--threads", "1", "--method.name", "chase", "--method.update_every", "3",
              "--method.channel_every", "4", "--method.channel_sparsity", "0.5", "--method.density", "0.3",
              "--method.end", "0.8", "--method.shrink", "true"]
NAME = "chase-cnn1d-mnist1d-s0"


@pytest.fixture(scope="module")
def shrunk_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("shrink_runs")
    with torch_state():
        assert main([*SHRINK_RUN, "--run.dir", str(root)]) == 0
    return root / NAME


def test_summary_reports_parameters_and_widths_over_time(shrunk_run):
    summary = json.loads((shrunk_run / "summary.json").read_text())
    timeline = summary["shrink"]
    assert timeline[0]["step"] == 0 and timeline[0]["shrunk"] == 0 and len(timeline) > 2
    params = [t["parameters"] for t in timeline]
    assert params == sorted(params, reverse=True) and params[-1] < params[0]
    assert set(timeline[0]["widths"]) == set(timeline[-1]["widths"])
    assert any(timeline[-1]["widths"][k][0] < timeline[0]["widths"][k][0] for k in timeline[0]["widths"])
    loaded = load_run(shrunk_run)  # the checkpoint rebuilds at the narrowed widths
    assert sum(p.numel() for p in loaded.model.parameters()) == params[-1]
    epochs = [json.loads(line) for line in (shrunk_run / "metrics.jsonl").read_text().splitlines()
              if '"event": "epoch"' in line]
    assert all(e["step_time"] > 0 and e["samples_per_s"] > 0 for e in epochs)
    assert epochs[-1]["parameters"] == params[-1] < epochs[0]["parameters"] or epochs[0]["parameters"] == params[-1]
    assert (shrunk_run / "throughput.png").stat().st_size > 0


def test_report_of_a_shrunk_run_counts_the_original_sizes(capsys, shrunk_run):
    rc, out, err = cli(capsys, "report", str(shrunk_run))
    assert rc == 0, err
    summary = json.loads((shrunk_run / "summary.json").read_text())
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert float(total.split()[-1]) == pytest.approx(summary["density"], abs=1e-4)
    assert f"ITOP rate  {summary['itop_rate']:.4f}" in out


def test_resume_of_a_shrunk_run_is_bit_identical(capsys, tmp_path, monkeypatch, shrunk_run):
    interrupt_after_epoch(monkeypatch, 2)
    rc, _, err = cli(capsys, *SHRINK_RUN, "--run.dir", str(tmp_path))
    assert rc == 130, err
    monkeypatch.undo()
    saved = torch.load(tmp_path / NAME / "checkpoint.pt", weights_only=True)
    assert saved["sparsifier"]["width_spec"]["widths"], "the run had shrunk before the interruption"
    rc, out, err = cli(capsys, "train", "--resume", str(tmp_path / NAME))
    assert rc == 0, err
    assert_same_run(tmp_path / NAME, shrunk_run, epochs=4)


def test_compact_of_a_shrunk_run_writes_the_deployable_files(capsys, shrunk_run, tmp_path):
    rc, out, err = cli(capsys, "compact", str(shrunk_run), "--out", str(tmp_path))
    assert rc == 0, err
    loaded = load_run(shrunk_run)
    small, _ = load_compact(tmp_path / "compact.safetensors", loaded.factory)
    assert sum(p.numel() for p in small.parameters()) <= sum(p.numel() for p in loaded.model.parameters())
    spec = json.loads((tmp_path / "width_spec.json").read_text())
    assert spec["widths"], "the spec narrows the architecture as built"
    x = example_batch(loaded)
    with torch.no_grad():
        for n, p in loaded.model.named_parameters():
            if n in loaded.masks:
                p.mul_(loaded.masks[n])
        ref = loaded.model(x)
        torch.testing.assert_close(small.eval()(x), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_shrink_on_a_dense_run_is_one_message(capsys, tmp_path):
    rc, _, err = cli(capsys, "train", "--method.name", "dense", "--method.shrink", "true", "--epochs", "1",
                     "--run.dir", str(tmp_path))
    assert rc != 0 and "nothing to shrink" in err and "Traceback" not in err


#: filter pruning (fasterai's prune, the Conv1d layers) with --method.shrink: narrowed after each pruning step
PRUNE_RUN = ["train", "--epochs", "4", "--data.num_samples", "600", "--batch_size", "50", "--model.width", "16",
             "--threads", "1", "--method.name", "prune", "--method.granularity", "filter", "--method.sparsity", "0.5",
             "--method.layer_type", "Conv1d", "--method.end", "0.6", "--method.update_every", "3",
             "--method.shrink", "true"]


def test_resume_of_a_shrunk_filter_pruning_run_is_bit_identical(capsys, tmp_path, monkeypatch):
    full = tmp_path / "full"
    rc, _, err = cli(capsys, *PRUNE_RUN, "--run.dir", str(full))
    assert rc == 0, err
    name = "prune-cnn1d-mnist1d-s0"
    timeline = json.loads((full / name / "summary.json").read_text())["shrink"]
    assert sum(t["shrunk"] for t in timeline) > 0 and timeline[-1]["parameters"] < timeline[0]["parameters"]
    interrupt_after_epoch(monkeypatch, 2)
    rc, _, err = cli(capsys, *PRUNE_RUN, "--run.dir", str(tmp_path / "cut"))
    assert rc == 130, err
    monkeypatch.undo()
    rc, _, err = cli(capsys, "train", "--resume", str(tmp_path / "cut" / name))
    assert rc == 0, err
    assert_same_run(tmp_path / "cut" / name, full / name, epochs=4)
