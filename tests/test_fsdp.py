"""FSDP2 (``fully_shard``): the same run as under DDP, mask for mask, on 2 CPU ranks (gloo).

One ``torch.distributed.run`` launch runs tests/fsdp_worker.py over every
method variant (and rigl with RMSprop, whose update moves zero weights):
each variant trains under DDP and under FSDP2 from the same weights on the
same per-rank data. A DCP checkpoint in the middle of the FSDP2 run of
rigl, snfs and granet is loaded into a fresh model, optimizer and sparsifier
and must continue bit for bit. The unsupported set-ups each get their message.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import sparsetrain
from sparsetrain import sharding

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kit import all_variants  # noqa: E402
from _launch import run_two_ranks  # noqa: E402
from fsdp_worker import CONV1D, OTHER_OPTIMIZER, RESUMED, SAVE_AT  # noqa: E402

WORKER = Path(__file__).resolve().parent / "fsdp_worker.py"
RUNS = [v.id for v in all_variants()] + list(OTHER_OPTIMIZER) + list(CONV1D)
needs_gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed gloo")


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory) -> dict:
    return run_two_ranks(WORKER, tmp_path_factory.mktemp("fsdp"), "fsdp_results.json", timeout=300)


@pytest.mark.ddp
@needs_gloo
def test_two_ranks_ran_every_method(fsdp_results):
    assert fsdp_results["world_size"] == 2
    assert set(RUNS) <= set(fsdp_results)


@pytest.mark.ddp
@needs_gloo
@pytest.mark.parametrize("run", RUNS)
def test_fsdp2_masks_equal_ddp_after_every_update(fsdp_results, run):
    r = fsdp_results[run]
    assert r["update_steps_fsdp2"] == r["update_steps_ddp"], f"{run}: updates at other steps than under DDP"
    different = [s for s, same in r["masks_equal_ddp"].items() if not same]
    assert not different, f"{run}: FSDP2 masks differ from DDP's after steps {different}"
    assert r["weights_equal_ddp"], f"{run}: FSDP2 weights differ from DDP's at the end"
    for c in r["checks"]:
        where = f"{run} step {c['step']}"
        assert c["ranks_agree"], f"{where}: the ranks' full masks differ"
        assert c["zeros"], f"{where}: an inactive weight is not 0 on some shard"
        assert c["state_zeros"], f"{where}: optimizer state is not 0 where the mask is off"
    assert 0.0 < r["density"] <= 1.0


@pytest.mark.ddp
@needs_gloo
def test_methods_with_updates_really_updated(fsdp_results):
    # a comparison of two runs that never change their masks would prove little
    for run in ("rigl", "set", "granet", "snfs", "rigl+rmsprop", "rigl@conv1d", "prune[filter]@conv1d"):
        assert fsdp_results[run]["updates"] >= 4, run


@pytest.mark.ddp
@needs_gloo
@pytest.mark.parametrize("run", RESUMED)
def test_dcp_checkpoint_resumes_exactly(fsdp_results, run):
    resume = fsdp_results[run]["resume"]
    assert resume["loaded_step"] == SAVE_AT
    assert resume["masks_equal"], f"{run}: resumed masks differ from the uninterrupted run"
    assert resume["weights_equal"], f"{run}: resumed weights differ from the uninterrupted run"


@pytest.mark.ddp
@needs_gloo
@pytest.mark.parametrize("run", RESUMED)
def test_states_load_across_ddp_and_fsdp2(fsdp_results, run):
    cross = fsdp_results[run]["cross_load"]
    assert cross["ddp_into_fsdp2"], f"{run}: a DDP sparsifier state loaded under FSDP2 gives other masks"
    assert cross["dcp_into_plain"], f"{run}: the FSDP2 DCP checkpoint loaded unsharded gives other masks"


@pytest.mark.ddp
@needs_gloo
def test_unsupported_setups_get_one_message(fsdp_results):
    bad = fsdp_results["bad_inputs"]
    assert bad["fully_shard_after_attach"] and "fully_shard was applied after sparsetrain.attach" in \
        bad["fully_shard_after_attach"]
    assert bad["fsdp1"] and "FSDP1" in bad["fsdp1"] and "fully_shard" in bad["fsdp1"]


@pytest.mark.ddp
@needs_gloo
def test_one_launch_is_fast(fsdp_results):
    assert fsdp_results["elapsed_s"] < 150, f"the FSDP launch took {fsdp_results['elapsed_s']:.0f} s"


# ---------------------------------------------------------------- one process, no launch

def test_deepspeed_engine_is_refused():
    class DeepSpeedEngine(nn.Module):  # what deepspeed.initialize returns, by name
        def __init__(self):
            super().__init__()
            self.module = nn.Linear(4, 2)

    net = DeepSpeedEngine()
    with pytest.raises(sparsetrain.SparsetrainError, match="DeepSpeed engines are not supported.*fully_shard"):
        sparsetrain.attach(net, torch.optim.SGD(net.parameters(), lr=0.1), "rigl", density=0.5, total_steps=10)


def test_zero3_partitioned_parameters_are_refused():
    net = nn.Linear(4, 2)
    net.weight.ds_id = 0  # ZeRO-3 marks the parameters it partitions
    with pytest.raises(sparsetrain.SparsetrainError, match="DeepSpeed ZeRO-3"):
        sparsetrain.attach(net, torch.optim.SGD(net.parameters(), lr=0.1), "rigl", density=0.5, total_steps=10)


def test_fsdp1_wrapper_is_refused_before_selection():
    class FullyShardedDataParallel(nn.Module):  # FSDP1 keeps one flat parameter per unit
        def __init__(self):
            super().__init__()
            self.flat_param = nn.Parameter(torch.zeros(10))

    net = FullyShardedDataParallel()
    with pytest.raises(sparsetrain.SparsetrainError, match="FSDP1 .*fully_shard"):
        sparsetrain.attach(net, torch.optim.SGD(net.parameters(), lr=0.1), "rigl", density=0.5, total_steps=10)


def test_a_parameter_replaced_after_attach_is_reported_at_the_next_step():
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sparsetrain.attach(net, opt, "rigl", density=0.5, total_steps=10)
    net[1].weight = nn.Parameter(torch.zeros(2, 3))
    net(torch.randn(2, 4)).sum().backward()
    with pytest.raises(sparsetrain.SparsetrainError, match="'weight' was replaced after sparsetrain.attach"):
        opt.step()


def test_helpers_leave_plain_tensors_alone():
    t = torch.arange(4.0)
    assert sharding.local(t) is t and sharding.full(t) is t and sharding.shard_like(t, t) is t
    state = {"grad_ema": {"w": t}, "n": 3}
    assert sharding.shard_state(state, {"w": nn.Parameter(torch.zeros(4))}) == state
    with sharding.full_view(ctx := _ctx()) as view:
        assert view is ctx


def test_dcp_lists_come_back_as_lists():
    assert sharding._lists({"a": {0: "x", 1: "y"}, "b": {1: "z"}}) == {"a": ["x", "y"], "b": {1: "z"}}


def _ctx():
    from sparsetrain.context import SparseContext

    p = nn.Parameter(torch.ones(2))
    return SparseContext({"w": p}, {"w": torch.ones(2, dtype=torch.bool)}, None, 1, torch.Generator())


@pytest.mark.ddp
@needs_gloo
def test_benchmark_quick_reports_the_fsdp2_over_ddp_ratio(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fsdp_bench", WORKER.parent.parent / "benchmarks" / "fsdp.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "RESULTS.md"
    assert bench.main(["--quick", "--steps", "4", "--results", str(results)]) == 0
    text = results.read_text()
    assert "<!-- begin fsdp-latest -->" in text and "| FSDP2 / DDP, sparse |" in text
    assert "| fsdp2 sparse |" in capsys.readouterr().out
