"""``torchrun -m sparsetrain train`` on 2 CPU processes (gloo) matches the single-process run.

The MLP has no BatchNorm, so with the same global batch the averaged DDP gradient
is the single-process gradient up to float rounding: the final weights agree to
float tolerance and the masks are equal. Only rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from _kit import torch_state
from _launch import free_port
from sparsetrain.cli import main

pytestmark = [
    pytest.mark.ddp,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"),
]

#: MLP 40-16-16-10 on 480 MNIST-1D samples, global batch 50 (25 per rank), 3 epochs of 9 steps,
#: a GraNet update every 3 steps
ARGS = ["train", "--model.name", "mlp", "--model.hidden", "[16, 16]", "--data.num_samples", "600",
        "--batch_size", "50", "--epochs", "3", "--threads", "1", "--run.plots", "false",
        "--method.update_every", "3"]
RUN = "granet-mlp-mnist1d-s0"


def torchrun(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "sparsetrain", *argv]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun timed out after {timeout} s (a rank hung?):\n{(e.stderr or '')[-4000:]}")




@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp_trainer")
    proc = torchrun(*ARGS, "--run.dir", str(root / "ddp"))
    assert proc.returncode == 0, f"torchrun failed:\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
    with torch_state(), contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115
        assert main([*ARGS, "--run.dir", str(root / "single")]) == 0
    return {"ddp": root / "ddp", "single": root / "single", "proc": proc}


def _ckpt(run_dir: Path) -> dict:
    return torch.load(run_dir / RUN / "checkpoint.pt", weights_only=True)


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / RUN / "metrics.jsonl").read_text().splitlines() if line]


def test_final_weights_match_the_single_process_run(runs):
    ddp, single = _ckpt(runs["ddp"]), _ckpt(runs["single"])
    assert ddp["epoch"] == single["epoch"] == 3
    assert set(ddp["model"]) == set(single["model"])
    for name in single["model"]:
        # gloo sums the two half-batch gradients, then DDP divides by 2: float rounding only
        torch.testing.assert_close(ddp["model"][name], single["model"][name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_masks_are_equal_to_the_single_process_run(runs):
    ddp, single = _ckpt(runs["ddp"])["sparsifier"], _ckpt(runs["single"])["sparsifier"]
    assert set(ddp["masks"]) == set(single["masks"]) and ddp["masks"]
    for name, mask in single["masks"].items():
        assert torch.equal(ddp["masks"][name], mask), f"{name}: masks differ"
    assert ddp["step"] == single["step"] == 27


def test_topology_updates_are_the_same_as_the_single_process_run(runs):
    def updates(run_dir):
        return [{k: v for k, v in r.items() if k in ("step", "dropped", "grown", "layer_density")}
                for r in _records(run_dir) if r.get("event") == "update"]

    ddp = updates(runs["ddp"])
    assert len([u for u in ddp if u["step"] > 0]) >= 5
    assert ddp == updates(runs["single"])
    summary = json.loads((runs["ddp"] / RUN / "summary.json").read_text())
    single = json.loads((runs["single"] / RUN / "summary.json").read_text())
    assert summary["density"] == single["density"] and summary["layer_density"] == single["layer_density"]
    assert summary["flops"] == single["flops"]


def test_only_rank_0_writes_the_run_folder(runs):
    assert [p.name for p in runs["ddp"].iterdir()] == [RUN]
    files = sorted(p.name for p in (runs["ddp"] / RUN).iterdir())
    assert files == ["checkpoint.pt", "config.yaml", "metrics.jsonl", "summary.json"]
    records = _records(runs["ddp"])
    assert [r["epoch"] for r in records if r.get("event") == "epoch"] == [1, 2, 3]
    steps = [r["step"] for r in records if r.get("event") == "update"]
    assert len(steps) == len(set(steps)), "duplicated update records: two ranks wrote"
    out = runs["proc"].stdout
    for epoch in (1, 2, 3):
        assert sum(line.lstrip().startswith(f"epoch   {epoch}/3") for line in out.splitlines()) == 1, out
    assert out.count("ITOP rate") == 1, "only rank 0 prints the result table"


def test_an_existing_run_folder_is_refused_without_hanging(runs):
    proc = torchrun(*ARGS, "--run.dir", str(runs["ddp"]), timeout=120)
    assert proc.returncode != 0
    assert "already exists" in proc.stderr + proc.stdout and "--resume" in proc.stderr + proc.stdout
    assert "[rank1]: Traceback" not in proc.stderr, "rank 1's gloo traceback buries rank 0's message"
    assert "(rank 1): stopped because another process of this torchrun job stopped" in proc.stderr
    assert _ckpt(runs["ddp"])["epoch"] == 3  # untouched
