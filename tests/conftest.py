"""Shared test set-up: the tests folder is importable (for ``_kit``), every test leaves
torch's global settings (threads, deterministic mode, RNG) as it found them, and tests
marked ``gpu`` are skipped, with the reason, where torch sees no CUDA device."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kit import torch_state  # noqa: E402

NEEDS_CUDA = ("needs CUDA: a GPU-marked test; run `pytest -m gpu` (or benchmarks/gpu_suite.py) on a machine "
              "with an NVIDIA GPU")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NEEDS_CUDA)
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster and keeps timings steady on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _restore_torch_state():
    with torch_state():
        yield
