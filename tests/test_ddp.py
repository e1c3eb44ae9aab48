"""Contract 6: under DDP every rank holds bit-identical masks after every update.

One ``torch.distributed.run`` launch (2 CPU processes, gloo) runs
tests/ddp_worker.py over every method variant; the worker all-gathers masks
and weights after each update and writes what it saw to a JSON file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from sparsetrain import create_method
from sparsetrain.methods import method_signature

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kit import all_variants  # noqa: E402
from _launch import run_two_ranks  # noqa: E402

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"

pytestmark = [
    pytest.mark.ddp,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"),
]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> dict:
    return run_two_ranks(WORKER, tmp_path_factory.mktemp("ddp"), "ddp_results.json", timeout=240)


def test_two_ranks_ran_every_method(ddp_results):
    assert ddp_results["world_size"] == 2
    ran = {k for k in ddp_results if k not in ("world_size", "elapsed_s")}
    assert ran == {v.id for v in all_variants()}


@pytest.mark.parametrize("variant", all_variants(), ids=lambda v: v.id)
def test_masks_identical_on_every_rank_after_every_update(ddp_results, variant):
    records = ddp_results[variant.id]
    assert records, f"{variant.id}: no record"
    for r in records:
        where = f"{variant.id} step {r['step']}"
        assert r["masks_identical"], f"{where}: masks differ between ranks ({r['event']})"
        assert r["weights_identical"], f"{where}: weights differ between ranks"
        assert r["zeros_ok"], f"{where}: inactive weights are not 0"
    updates = [r for r in records if r["event"] is not None]
    hyper = method_signature(variant.method).parameters  # without attach()'s data / example_input
    method = create_method(variant.method, **{k: v for k, v in variant.method_kwargs(0.25).items() if k in hyper})
    if method.updates:  # fixed-mask methods (static, pruning at init) never update
        assert updates, f"{variant.id}: no topology update happened under DDP"
    if variant.regenerates:
        assert any(r["event"].get("changed", 0) > 0 for r in updates), f"{variant.id}: topology never changed"


def test_one_launch_is_fast(ddp_results):
    assert ddp_results["elapsed_s"] < 90, f"the DDP launch took {ddp_results['elapsed_s']:.0f} s"
