"""Launching a 2-process gloo worker with ``torch.distributed.run`` (tests/test_ddp.py, tests/test_fsdp.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nothing listens on now (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(worker: Path, out: Path, result_name: str, timeout: int) -> dict:
    """Run ``worker OUT`` on 2 CPU ranks; returns the JSON rank 0 wrote to ``OUT/result_name``
    plus ``elapsed_s``, or fails the test with the workers' output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(worker), str(out)]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{worker.name} timed out after {timeout} s:\n{(e.stderr or '')[-4000:]}")
    elapsed = time.monotonic() - start
    result_file = out / result_name
    assert proc.returncode == 0 and result_file.exists(), (
        f"{worker.name} failed (rc={proc.returncode}):\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}")
    results = json.loads(result_file.read_text())
    results["elapsed_s"] = elapsed
    return results
