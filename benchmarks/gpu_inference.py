"""The inference parts of ``benchmarks/gpu_suite.py`` (issue 15): Chase's compact ResNet-50, 2:4
semi-structured linear layers at LLM shapes (and a registered GPT end to end), CSR for a 98 %-sparse
MLP. Each takes the suite's :class:`gpu_parts.Sizes` and a deadline, as the parts in ``gpu_parts.py``.

Example:
    >>> CHASE_MIN_RATIO
    0.5
"""

from __future__ import annotations

import statistics
import time

import torch
from common import table
from gpu_parts import DENSITY, Sizes, interleaved, ms, needs_cuda, pick_device
from torch import nn

from sparsetrain.train.models import create_model, list_models

#: Chase's minimum width beta for ResNet-50 (the seed's setting)
CHASE_MIN_RATIO = 0.5


# ---------------------------------------------------------------------------- (4) Chase compact inference
def chase_inference(sz: Sizes, deadline: float) -> dict:
    """Throughput of Chase's compact model vs the dense one (bf16, channels_last), per channel sparsity."""
    from sparsetrain.deploy.bench import bench, channel_sparse_masks, format_table, prepare
    device = pick_device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True
    example = torch.randn(2, 3, sz.side, sz.side)
    raw, lines, summary = {}, [], []
    for s_c in sz.channel_sparsities:
        if raw and time.monotonic() > deadline:
            summary.append([f"{s_c}", "not run: time budget spent", "", "", ""])
            continue
        model = create_model(sz.model, **sz.model_kwargs).eval()
        masks = channel_sparse_masks(model, example, s_c, min_ratio=CHASE_MIN_RATIO, density=DENSITY,
                                     score_norm="layer", prune_skip=True)
        models, counts, _ = prepare(model, example, masks=masks, csr=False)
        models = {n: m.to(dtype=dtype, memory_format=torch.channels_last) for n, m in models.items()}
        rows = bench(models, (3, sz.side, sz.side), batch_sizes=sz.chase_batches, device=device, reps=sz.chase_reps,
                     warmup=3, counts=counts, dtype=dtype)
        raw[str(s_c)] = rows
        for r in rows:
            if r["variant"] == "compact":
                summary.append([f"{s_c}", str(r["batch"]), f"{r['throughput']:.0f}", f"{r['speedup']:.2f}x",
                                f"{r['flop_ratio']:.2f}x"])
        lines += [f"**S_c = {s_c}**", "", format_table(rows), ""]
    at = [r for r in raw.get("0.4", []) if r["variant"] == "compact"]
    headline = ("S_c=0.4 speedup " + ", ".join(f"batch {r['batch']}: {r['speedup']:.2f}x" for r in at)
                + " (goal >= 1.7x)") if at else "no S_c=0.4 figure"
    head = [f"{sz.model} {sz.model_kwargs}, {sz.side}x{sz.side}, {dtype}, channels_last, inference_mode; one-shot "
            f"Chase channel removal (UMM, `score_norm=layer`, `prune_skip=True`, beta {CHASE_MIN_RATIO}, "
            f"unstructured density {DENSITY}) then `compact`; {sz.chase_reps} interleaved repetitions after 3 "
            "warm-ups (sparsetrain.deploy.bench).", "",
            table(["S_c", "batch", "compact samples/s", "speedup vs dense", "FLOP ratio"], summary), ""]
    return {"headline": headline, "lines": head + lines, "raw": raw}


# ---------------------------------------------------------------------------- (5) 2:4 semi-structured
def _two_four_linear(n_in: int, n_out: int, device: torch.device) -> nn.Linear:
    from sparsetrain.core.granularity import nm_mask
    torch.manual_seed(0)
    linear = nn.Linear(n_in, n_out, bias=False, device=device)
    with torch.no_grad():
        linear.weight.mul_(nm_mask(linear.weight.abs(), 2, 4))
    return linear.to(dtype=torch.bfloat16).eval()


def semi_structured(sz: Sizes, deadline: float) -> dict:
    """2:4 semi-structured ``nn.Linear`` (``to_sparse_semi_structured``) vs dense at LLM shapes, bf16."""
    device = needs_cuda()
    from torch.sparse import SparseSemiStructuredTensor

    from sparsetrain.deploy.inference import SemiStructuredLinear
    raw, rows = {}, []
    backends = {"cuSPARSELt": False, "CUTLASS": True}
    for n_in, n_out in sz.llm_shapes:
        dense = _two_four_linear(n_in, n_out, device)
        for tokens in sz.llm_tokens:
            key = f"{n_in}x{n_out}@{tokens}"
            if raw and time.monotonic() > deadline:
                rows.append([f"{n_in} -> {n_out}", str(tokens), "not run: time budget spent", "", "", ""])
                continue
            x = torch.randn(tokens, n_in, device=device, dtype=torch.bfloat16)
            fns, errors = {"dense": lambda d=dense, x=x: d(x)}, {}
            for backend, force_cutlass in backends.items():
                SparseSemiStructuredTensor._FORCE_CUTLASS = force_cutlass
                try:
                    sparse = SemiStructuredLinear(dense)
                    with torch.inference_mode():
                        err = (sparse(x) - dense(x)).abs().max().item() / dense(x).abs().max().item()
                    fns[backend] = lambda s=sparse, x=x: s(x)
                    errors[backend] = err
                except Exception as exc:  # noqa: BLE001 - a backend missing here is recorded, not fatal
                    errors[backend] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            SparseSemiStructuredTensor._FORCE_CUTLASS = False
            with torch.inference_mode():
                times = interleaved(fns, device, sz.reps, deadline=deadline)
            raw[key] = {"times_s": times, "max_rel_error_or_failure": errors}
            d = statistics.median(times["dense"])
            cells = [f"{d / statistics.median(times[b]):.2f}x" if b in times else str(errors[b])[:60]
                     for b in backends]
            rows.append([f"{n_in} -> {n_out}", str(tokens), ms(times["dense"]), *cells,
                         ", ".join(f"{b} {e:.1e}" for b, e in errors.items() if isinstance(e, float))])
    best = [max(statistics.median(v["times_s"]["dense"]) / statistics.median(v["times_s"][b])
                for b in backends if b in v["times_s"]) for v in raw.values() if len(v["times_s"]) > 1]
    headline = (f"2:4 speedup {min(best):.2f}x-{max(best):.2f}x over the shapes, best backend (goal >= 1.3x)"
                if best else "no 2:4 figure: no backend converted a weight (see the table)")
    lines = ["`nn.Linear` without bias, bf16, weights pruned 2:4 by magnitude (`nm_mask`), converted with "
             "`torch.sparse.to_sparse_semi_structured` (sparsetrain's `SemiStructuredLinear`) under each backend; "
             f"input [tokens, in]; {sz.reps} interleaved repetitions, CUDA events; speedup = dense median / 2:4 "
             "median; max error relative to the output's largest entry.", "",
             table(["in -> out", "tokens", "dense ms", "speedup cuSPARSELt", "speedup CUTLASS", "max rel. error"],
                   rows)]
    gpt = [name for name in list_models() if name.lower().startswith("gpt")]
    if not gpt:
        lines += ["", "End to end: skipped: no GPT model in sparsetrain's model registry "
                  f"({', '.join(list_models())})."]
    elif time.monotonic() < deadline:
        lines += ["", *_gpt_end_to_end(gpt[0], device, raw)]
    else:
        lines += ["", f"End to end ({gpt[0]}): not run: time budget spent."]
    return {"headline": headline, "lines": lines, "raw": raw}


def _gpt_end_to_end(name: str, device: torch.device, raw: dict) -> list[str]:
    """The registered GPT with every 2:4-able Linear pruned 2:4, then ``sparsify_for_inference(("2:4",))``."""
    from sparsetrain.core.granularity import nm_mask
    from sparsetrain.deploy.inference import sparsify_for_inference
    torch.manual_seed(0)
    model = create_model(name).to(device=device, dtype=torch.bfloat16).eval()
    vocab = next(m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding))  # the token embedding
    tokens = torch.randint(0, vocab, (8, 512), device=device)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.in_features % 64 == 0 and m.out_features % 64 == 0:
                m.weight.mul_(nm_mask(m.weight.abs(), 2, 4))
    fast, decisions = sparsify_for_inference(model, tokens, formats=("2:4",), min_speedup=1.0)
    with torch.inference_mode():
        times = interleaved({"dense": lambda: model(tokens), "2:4": lambda: fast(tokens)}, device, 20)
    raw[f"e2e:{name}"] = {"times_s": times, "layers_2:4": sum(d.choice == "2:4" for d in decisions.values()),
                          "layers": len(decisions)}
    speed = statistics.median(times["dense"]) / statistics.median(times["2:4"])
    return [f"End to end ({name}, batch 8 x 512 tokens, bf16): {raw[f'e2e:{name}']['layers_2:4']} of "
            f"{len(decisions)} pruned Linear layers chose 2:4 (measured per layer); forward dense "
            f"{ms(times['dense'])} ms, 2:4 {ms(times['2:4'])} ms: **{speed:.2f}x**."]


# ---------------------------------------------------------------------------- (6) CSR
def csr_mlp(sz: Sizes, deadline: float) -> dict:
    """A 98 %-sparse MLP: every Linear as CSR (``CSRLinear``) vs dense, fp32, on CUDA (CPU in a dry run)."""
    from sparsetrain.deploy.bench import bench, count, format_table
    from sparsetrain.deploy.inference import CSRLinear
    device = pick_device()
    torch.manual_seed(0)
    widths = sz.mlp_widths
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    dense = nn.Sequential(*layers[:-1]).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in dense:
            if isinstance(m, nn.Linear):
                m.weight.mul_(torch.rand(m.weight.shape, generator=gen) < 0.02)
    csr = nn.Sequential(*[CSRLinear(m) if isinstance(m, nn.Linear) else m for m in dense]).eval()
    one = torch.randn(1, widths[0])
    counts = {"dense": count(dense, one), "csr": count(dense, one, sparse=True)}
    rows = bench({"dense": dense, "csr": csr}, (widths[0],), batch_sizes=sz.mlp_batches, device=device,
                 reps=sz.reps, warmup=3, counts=counts)
    speed = ", ".join(f"batch {r['batch']}: {r['speedup']:.2f}x" for r in rows if r["variant"] == "csr")
    lines = [f"MLP {'-'.join(map(str, widths))}, every Linear 98 % sparse (random exact zeros), fp32, {device.type}; "
             f"CSR = `CSRLinear` (addmm with a sparse CSR weight) on every layer; {sz.reps} interleaved repetitions "
             "(sparsetrain.deploy.bench). A speedup below 1 is a slowdown.", "", format_table(rows)]
    return {"headline": f"CSR vs dense {speed}", "lines": lines, "raw": rows}
