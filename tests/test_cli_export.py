"""``sparsetrain compact | export | bench`` end to end on a tiny Chase run (ISSUE 4 export; docs/algorithms.md,
"Chase")."""

from __future__ import annotations

import json

import pytest
import torch

from _kit import torch_state
from sparsetrain.cli import main
from sparsetrain.cli.export import example_batch, load_run
from sparsetrain.deploy.checkpoint import load_compact, read_metadata

pytestmark = pytest.mark.usefixtures("one_thread")

#: MNIST-1D, 600 samples, a 16-wide 1D CNN, Chase removing half of the channels within 2 epochs
CHASE_RUN = ["train", "--epochs", "2", "--data.num_samples", "600", "--batch_size", "50", "--model.width", "16",
             "--threads", "1", "--run.plots", "false", "--method.name", "chase", "--method.update_every", "3",
             "--method.channel_every", "3", "--method.channel_sparsity", "0.5", "--method.density", "0.3",
             "--method.end", "0.8"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def chase_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_runs")
    with torch_state():
        assert main([*CHASE_RUN, "--run.dir", str(root)]) == 0
    return root / "chase-cnn1d-mnist1d-s0"


def test_compact_writes_a_rebuildable_smaller_model(capsys, chase_run, tmp_path):
    rc, out, err = cli(capsys, "compact", str(chase_run), "--out", str(tmp_path))
    assert rc == 0, err
    assert "removed" in out and "params" in out
    loaded = load_run(chase_run)
    small, masks = load_compact(tmp_path / "compact.safetensors", loaded.factory)
    spec = json.loads((tmp_path / "width_spec.json").read_text())
    assert json.loads(read_metadata(tmp_path / "compact.safetensors")["width_spec"]) == spec
    assert sum(len(v) for v in spec["removed"].values()) > 0
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in loaded.model.parameters())
    x = example_batch(loaded)  # real MNIST-1D test inputs
    masked = loaded.model
    with torch.no_grad():
        for n, p in masked.named_parameters():
            if n in loaded.masks:
                p.mul_(loaded.masks[n])
        ref = masked(x)
        torch.testing.assert_close(small.eval()(x), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_export_onnx_and_sparse(capsys, chase_run, tmp_path):
    onnx_path, sparse_path = tmp_path / "m.onnx", tmp_path / "m.safetensors"
    rc, out, err = cli(capsys, "export", str(chase_run), "--onnx", str(onnx_path), "--sparse", str(sparse_path),
                       "--legacy-onnx")
    assert rc == 0, err
    assert onnx_path.is_file() and sparse_path.is_file() and "onnx.checker passed" in out
    pytest.importorskip("onnxruntime")
    err_value = float(out.split("max |diff| vs torch ")[1].split()[0])
    assert err_value < 1e-4


@pytest.mark.slow
def test_export_onnx_with_the_default_dynamo_exporter(capsys, chase_run, tmp_path):
    rc, out, err = cli(capsys, "export", str(chase_run), "--onnx", str(tmp_path / "m.onnx"))
    assert rc == 0, err
    assert "onnx.checker passed" in out


def test_bench_a_run(capsys, chase_run, tmp_path):
    rc, out, err = cli(capsys, "bench", str(chase_run), "--reps", "2", "--warmup", "1", "--batch-sizes", "1,4",
                       "--json", str(tmp_path / "b.json"))
    assert rc == 0, err
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [(r["variant"], r["batch"]) for r in rows] == [(v, b) for b in (1, 4) for v in ("dense", "compact", "csr")]
    dense, compact = rows[0], rows[1]
    assert compact["params"] < dense["params"] and compact["flops"] < dense["flops"]
    assert all(r["min_ms"] <= r["median_ms"] <= r["max_ms"] for r in rows)
    assert "| compact | 4 |" in out


def test_bench_a_bundled_model_with_one_shot_chase_masks(capsys, tmp_path):
    rc, out, err = cli(capsys, "bench", "lenet5", "--input-shape", "1,28,28", "--channel-sparsity", "0.5",
                       "--reps", "2", "--warmup", "1", "--batch-sizes", "2", "--no-csr", "--json",
                       str(tmp_path / "b.json"))
    assert rc == 0, err
    dense, compact = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert compact["params"] < dense["params"] and compact["flop_ratio"] > 1.0


@pytest.mark.parametrize("argv, message", [
    (["bench", "vgg91"], "unknown model"),
    (["bench", "lenet5", "--batch-sizes", "1,x"], "--batch-sizes"),
    (["export", "RUN"], "--onnx"),
    (["compact", "no/such/run"], "no checkpoint"),
    (["bench", "gpt"], "token ids"),  # regression: it built the GPT with in_channels
])
def test_bad_input_is_one_clear_message(capsys, tmp_path, argv, message):
    rc, _, err = cli(capsys, *argv)
    assert rc == 2 and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_bench_on_cuda_without_cuda_is_refused(capsys):
    rc, _, err = cli(capsys, "bench", "lenet5", "--input-shape", "1,28,28", "--device", "cuda", "--reps", "1")
    assert rc == 2 and "not available on this machine (available: cpu" in err


def _removed_per_group(model, x, masks, prune_skip):
    from sparsetrain.core.graph import channel_groups
    out = {}
    for g in channel_groups(model, x, prune_skip=prune_skip):
        s = next(s for s in g.producers if s.param.endswith(".weight"))
        rows = masks[s.param].movedim(s.dim, 0).reshape(masks[s.param].shape[s.dim], -1).any(1)
        out[g.name] = (g.size, int((~rows[s.positions()].any(1)).sum()))
    return out


def test_one_shot_masks_honour_prune_skip_and_score_norm():
    """bench's one-shot Chase masks: S_c of the offered channels empty; prune_skip offers the residual groups too;
    score_norm="layer" spreads the removal over more groups than the raw global UMM ranking."""
    from sparsetrain.core.graph import channel_groups
    from sparsetrain.deploy.bench import channel_sparse_masks
    from sparsetrain.train.models import create_model
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 16, 16)
    inner = {g.name for g in channel_groups(model, x)}
    for skip in (False, True):
        for norm in ("none", "layer"):
            masks = channel_sparse_masks(model, x, 0.5, min_ratio=0.2, score_norm=norm, prune_skip=skip)
            per = _removed_per_group(model, x, masks, prune_skip=True)
            offered = [v for k, v in per.items() if skip or k in inner]
            assert sum(r for _, r in offered) == int(0.5 * sum(n for n, _ in offered))
            if not skip:
                assert all(r == 0 for k, (_, r) in per.items() if k not in inner)
            else:
                assert any(r > 0 for k, (_, r) in per.items() if k not in inner)
    spread = {norm: sum(r > 0 for _, r in _removed_per_group(
        model, x, channel_sparse_masks(model, x, 0.5, score_norm=norm), prune_skip=False).values())
        for norm in ("none", "layer")}
    assert spread["layer"] > spread["none"]


def test_bench_cli_passes_score_norm_and_prune_skip(capsys, tmp_path):
    params = {}
    for extra in ([], ["--score-norm", "layer"], ["--prune-skip"], ["--score-norm", "layer", "--prune-skip"]):
        rc, out, err = cli(capsys, "bench", "resnet20", "--input-shape", "3,16,16", "--reps", "1", "--warmup", "0",
                           "--batch-sizes", "2", "--no-csr", "--json", str(tmp_path / "b.json"), *extra)
        assert rc == 0, err
        params[" ".join(extra)] = json.loads((tmp_path / "b.json").read_text())["rows"][1]["params"]
    assert len(set(params.values())) == 4, params  # each option changes the masks
    assert params["--prune-skip"] < params[""]


#: the GPT language model of the reference trainer at its tiniest (benchmarks/gpt_lm.py, TINY)
GPT_RUN = ["train", "--config", "rigl_gpt_pystdlib", "--epochs", "1", "--data.train_chars", "4000",
           "--data.val_chars", "1000", "--data.test_chars", "1000", "--data.context", "16", "--model.n_layer", "1",
           "--model.n_head", "2", "--model.n_embd", "32", "--batch_size", "16", "--threads", "1",
           "--run.plots", "false", "--run.progress", "false", "--run.name", "gpt"]


def test_compact_and_export_a_gpt_run(capsys, tmp_path):
    """Regression: both failed on a GPT run (the channel trace refused its embedding and misread attention)."""
    with torch_state():
        assert main([*GPT_RUN, "--run.dir", str(tmp_path)]) == 0
    run = tmp_path / "gpt"
    rc, out, err = cli(capsys, "compact", str(run), "--out", str(tmp_path / "small"))
    assert rc == 0, err
    loaded = load_run(run)
    small, _ = load_compact(tmp_path / "small" / "compact.safetensors", loaded.factory)
    x = example_batch(loaded)  # token ids of the test split
    assert x.dtype == torch.long
    masked = loaded.model
    with torch.no_grad():
        for n, p in masked.named_parameters():
            if n in loaded.masks:
                p.mul_(loaded.masks[n])
        torch.testing.assert_close(small.eval()(x), masked(x), rtol=0, atol=1e-5)
    rc, out, err = cli(capsys, "export", str(run), "--sparse", str(tmp_path / "gpt.safetensors"), "--onnx",
                       str(tmp_path / "gpt.onnx"), "--legacy-onnx")
    assert rc == 0, err
    assert (tmp_path / "gpt.safetensors").is_file() and (tmp_path / "gpt.onnx").is_file()
    rc, out, err = cli(capsys, "bench", str(run))  # random float inputs would crash inside the embedding
    assert rc == 2 and "token ids" in err
