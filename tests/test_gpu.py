"""CUDA-only checks of the GPU paths no CPU run executes (``pytest -m gpu``; skipped elsewhere, see conftest).

- top-k on CUDA selects exactly what the CPU selects for the same scores
  (docs/concepts.md, "Guarantees": ties go to the lower index on every device), on the
  direct and the sampled-band path, with candidates and with ``topk_masks``;
- every registered method, trained for the same steps on the same data from
  the same seed, gives the same masks on CPU and CUDA (float64, so the two
  devices' gradients agree far below any score gap), and keeps its invariants
  there (the checker of tests/test_properties.py, run on CUDA);
- 2:4 masks trained on CUDA feed ``to_sparse_semi_structured`` (both
  backends) and give the dense layer's outputs;
- bf16 / fp16 autocast with a GradScaler (and a step it skips on an inf
  gradient) keeps exact zeros, clean optimizer state and the counts.

``benchmarks/gpu_suite.py`` runs these first and records the outcome.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import sparsetrain
from _kit import ModelSpec, batch, build_model, count, one_variant_per_method
from sparsetrain.core.topk import topk_mask, topk_masks
from sparsetrain.deploy.inference import is_two_four, sparsify_for_inference
from sparsetrain.methods import method_signature
from test_properties import _check_exact_zeros, run_and_check

gpu = pytest.mark.gpu


def _scores(n: int, levels: int | None, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (n,), generator=g).float() if levels else torch.randn(n, generator=g)
    scores[::97] = math.nan  # NaN reads as the lowest score
    scores[5::101] = math.inf
    return scores


# --------------------------------------------------------------------------- top-k
@gpu
@pytest.mark.parametrize("n", [1000, 100_000], ids=["direct", "sampled-band"])
@pytest.mark.parametrize("levels", [3, 1000, None], ids=["heavy-ties", "ties", "continuous"])
def test_topk_on_cuda_equals_cpu_bit_for_bit(n, levels):
    scores = _scores(n, levels, n)
    cand = torch.rand(n, generator=torch.Generator().manual_seed(1)) < 0.6
    on = scores.cuda(), cand.cuda()
    for k in (1, 7, n // 10, n // 2, n - 1, n):
        assert torch.equal(topk_mask(on[0], k).cpu(), topk_mask(scores, k)), k
        assert torch.equal(topk_mask(on[0], k, on[1]).cpu(), topk_mask(scores, k, cand)), k
        assert torch.equal(topk_mask(on[0], k, exclude=~on[1]).cpu(), topk_mask(scores, k, exclude=~cand)), k


@gpu
def test_topk_masks_on_cuda_equals_cpu_bit_for_bit():
    sizes, levels = [10, 999, 20_000, 70_000], [3, None, 5, None]
    scores = [_scores(n, lv, i) for i, (n, lv) in enumerate(zip(sizes, levels, strict=True))]
    cands = [torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.5 for n in sizes]
    ks = [3, 100, 7_000, 1]
    counts = [int(c.sum()) for c in cands]
    cpu = topk_masks(scores, ks, cands, n_candidates=counts)
    cuda = topk_masks([s.cuda() for s in scores], ks, [c.cuda() for c in cands], n_candidates=counts)
    for a, b in zip(cpu, cuda, strict=True):
        assert torch.equal(a, b.cpu())
    cpu = topk_masks(scores, ks, exclude=cands)
    cuda = topk_masks([s.cuda() for s in scores], ks, exclude=[c.cuda() for c in cands])
    for a, b in zip(cpu, cuda, strict=True):
        assert torch.equal(a, b.cpu())


# --------------------------------------------------------------------------- every method, CPU vs CUDA
def _same_event(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12) if isinstance(a[k], float) else a[k] == b[k]
               for k in a)


@gpu
@pytest.mark.parametrize("variant", one_variant_per_method(), ids=lambda v: v.id)
def test_masks_are_identical_on_cpu_and_cuda(variant):
    spec = ModelSpec("conv", (6, 8), batchnorm=True, in_channels=3, side=6)
    sp_cpu, events_cpu, updates_cpu = run_and_check(variant, spec, "sgd", 0.3, dtype=torch.float64)
    sp_gpu, events_gpu, updates_gpu = run_and_check(variant, spec, "sgd", 0.3, device="cuda", dtype=torch.float64)
    assert len(events_cpu) == len(events_gpu)
    for a, b in zip(events_cpu, events_gpu, strict=True):
        assert _same_event(a, b), (a, b)
    for (_, after_cpu), (_, after_gpu) in zip(updates_cpu, updates_gpu, strict=True):
        for name in after_cpu:
            assert torch.equal(after_cpu[name], after_gpu[name].cpu()), name
    for name, mask in sp_cpu.masks.items():
        assert torch.equal(mask, sp_gpu.masks[name].cpu()), name


def test_the_cuda_harness_runs_on_the_cpu_in_float64():
    """The float64 path of the checker above, kept working where no GPU is (CI)."""
    variant = next(v for v in one_variant_per_method() if v.method == "rigl")
    sp, events, _ = run_and_check(variant, ModelSpec("conv", (6, 8), batchnorm=True, in_channels=3, side=6), "sgd",
                                  0.3, dtype=torch.float64)
    assert events and all(m.dtype == torch.bool for m in sp.masks.values())
    assert all(p.dtype == torch.float64 for p in sp.ctx.params.values())


# --------------------------------------------------------------------------- 2:4 semi-structured
@gpu
@pytest.mark.parametrize("cutlass", [False, True], ids=["cusparselt", "cutlass"])
def test_two_four_masks_trained_on_cuda_run_as_semi_structured(cutlass, monkeypatch):
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 semi-structured kernels need compute capability 8.0 or newer")
    from torch.sparse import SparseSemiStructuredTensor
    monkeypatch.setattr(SparseSemiStructuredTensor, "_FORCE_CUTLASS", cutlass)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sp = sparsetrain.attach(model, opt, "rigl", granularity="2:4", update_every=2, total_steps=10)
    for _ in range(6):
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(torch.randn(64, 128, device="cuda")).float().pow(2).mean()
        loss.backward()
        opt.step()
    assert sum(h.get("changed", 0) for h in sp.history) > 0
    sp.detach()
    model = model.half().eval()
    assert all(is_two_four(m.weight) for m in model if isinstance(m, nn.Linear))
    x = torch.randn(64, 128, device="cuda", dtype=torch.half)

    def prefer_two_four(label, fn):  # runs the kernel, then makes 2:4 the choice
        fn()
        return 0.0 if label == "2:4" else 1.0

    fast, decisions = sparsify_for_inference(model, x, formats=("2:4",), timer=prefer_two_four)
    assert {n: (d.choice, d.skipped) for n, d in decisions.items()} == {"0": ("2:4", {}), "2": ("2:4", {})}
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=2e-2, atol=2e-2)


# --------------------------------------------------------------------------- autocast + GradScaler
@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("method", ["rigl", "granet", "set", "static"])
def test_autocast_with_grad_scaler_keeps_the_invariants(method, dtype):
    spec = ModelSpec("conv", (8, 8), batchnorm=True, in_channels=3, side=6)
    model = build_model(spec).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    kwargs = {"update_every": 3} if "update_every" in method_signature(method).parameters else {}
    sp = sparsetrain.attach(model, opt, method, density=0.3, total_steps=24, **kwargs)
    params = {n: model.get_parameter(n) for n in sp.masks}
    scaler = torch.amp.GradScaler("cuda")
    start = {n: count(m) for n, m in sp.masks.items()}
    applied, previous = 0, dict(start)
    for t in range(24):
        x, y = (v.cuda() for v in batch(spec, t))
        if t == 10:
            x[0, 0, 0, 0] = math.inf  # an inf gradient: the scaler skips this optimizer step
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        applied += scaler.get_scale() >= scale  # the scale drops exactly when a step is skipped
        assert sp.step_count == applied, f"step {t}: the sparsifier counted a step the scaler skipped"
        masks = {n: m.clone() for n, m in sp.masks.items()}
        _check_exact_zeros(params, masks, opt, f"{method} {dtype} step {t}")
        counts = {n: count(m) for n, m in masks.items()}
        if method == "granet":  # dense-to-sparse: never more than before
            assert sum(counts.values()) <= sum(previous.values()), f"step {t}: granet grew the total"
        else:
            assert counts == start, f"step {t}: per-layer counts moved"
        previous = counts
    assert applied < 24, "the inf step was not skipped"
    assert len(sp.history) > 1 or method == "static"


# --------------------------------------------------------------------------- resume on the GPU
@gpu
def test_resume_on_cuda_is_bit_identical_with_dropout(capsys, tmp_path, monkeypatch):
    """Dropout on the GPU draws from the CUDA RNG: the checkpoint carries it (issue 17)."""
    from test_trainer import assert_same_run, cli, interrupt_after_epoch
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    args = ["train", "--epochs", "3", "--run.plots", "false", "--run.progress", "false", "--device", "cuda",
            "--model.name", "wrn28_2", "--model.dropout", "0.3", "--data.name", "synthetic",
            "--data.input_shape", "[3, 8, 8]", "--data.num_train", "64", "--data.num_test", "16",
            "--batch_size", "16", "--method.name", "rigl", "--method.update_every", "3"]
    rc, _, err = cli(capsys, *args, "--run.dir", tmp_path / "ref")
    assert rc == 0, err
    with monkeypatch.context() as m:
        interrupt_after_epoch(m, 1)
        assert cli(capsys, *args, "--run.dir", tmp_path / "run")[0] == 130
    name = "rigl-wrn28_2-synthetic-s0"
    rc, _, err = cli(capsys, "train", "--resume", tmp_path / "run" / name)
    assert rc == 0, err
    assert_same_run(tmp_path / "run" / name, tmp_path / "ref" / name, epochs=3)
