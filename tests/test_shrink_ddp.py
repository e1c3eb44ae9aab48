"""attach(..., shrink=True) under DDP: every rank narrows identically at the same step.

One ``torch.distributed.run`` launch (2 CPU processes, gloo) runs tests/shrink_worker.py; the
worker all-gathers widths, masks and weights after every step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _launch import run_two_ranks  # noqa: E402

WORKER = Path(__file__).resolve().parent / "shrink_worker.py"

pytestmark = [
    pytest.mark.ddp,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"),
]


def test_every_rank_shrinks_identically_at_the_same_step(tmp_path):
    results = run_two_ranks(WORKER, tmp_path, "shrink_results.json", timeout=240)
    records = results["records"]
    assert results["world_size"] == 2 and len(records) == 16
    assert [r["step"] for r in records if r["shrunk"]], "the run never shrank"
    assert records[-1]["parameters"] < records[0]["parameters"]
    for r in records:
        assert r["widths_identical"] and r["masks_identical"] and r["weights_identical"], r


def test_the_trainer_shrinks_under_torchrun(tmp_path):
    import json

    from test_shrink_trainer import NAME, SHRINK_RUN
    from test_trainer_ddp import torchrun
    proc = torchrun(*SHRINK_RUN, "--epochs", "2", "--run.plots", "false", "--run.dir", str(tmp_path))
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stderr[-6000:]}"
    timeline = json.loads((tmp_path / NAME / "summary.json").read_text())["shrink"]
    assert timeline[-1]["parameters"] < timeline[0]["parameters"]
