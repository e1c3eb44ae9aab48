"""Compact transformer MLPs (issue 13): CPU latency of a GPT with half its MLP units removed vs dense.

    python benchmarks/transformer.py            # full run, a few minutes on 2 CPU cores
    python benchmarks/transformer.py --quick    # smoke run, seconds

For each MLP style (our GPT's GELU MLP with ``nn.Linear``, its Llama-style
SwiGLU variant, and Hugging Face GPT-2 with its transposed ``Conv1D``) a GPT
is built at random init, ``--unit-sparsity`` of the hidden units of every MLP
are emptied (the units with the lowest L1 norm of their up-projection rows:
what Chase's channel removal leaves behind), and
:func:`sparsetrain.deploy.transformer.compact_mlp` removes them. Timed, in
eval mode and ``torch.no_grad``: the MLP blocks alone (every block's MLP on
the same hidden states) and the whole forward pass, dense (masked) and
compact, alternately over ``--rounds`` rounds; the table gives medians and
the speed-up dense / compact. The compact model's logits are checked against
the masked dense model's (max |difference| printed). Goal: >= 1.5x for the
MLP blocks at 50 % unit sparsity. A second table adds attention heads: also
``--head-sparsity`` of every attention's heads emptied (the heads with the
lowest L1 norm of their output-projection columns; those columns zeroed),
both removed by :func:`sparsetrain.deploy.transformer.compact_transformer`,
and the whole forward pass timed (0 skips the table).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

from sparsetrain.core.transformer import attention_blocks, in_axis
from sparsetrain.deploy.inference import median_seconds
from sparsetrain.deploy.transformer import compact_mlp, compact_transformer, mlp_blocks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Tee, demote, machine_info, table, write_section  # noqa: E402

FULL = {"n_embd": 384, "n_layer": 4, "n_head": 6, "context": 128, "batch": 8, "rounds": 5, "reps": 10}
QUICK = {"n_embd": 32, "n_layer": 1, "n_head": 2, "context": 16, "batch": 2, "rounds": 1, "reps": 2}
STYLES = ("gelu", "swiglu", "hf-gpt2")
VOCAB = 98


def build(style: str, cfg: dict) -> nn.Module:
    """A GPT of ``style`` at random init (seed 0)."""
    torch.manual_seed(0)
    if style == "hf-gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel
        return GPT2LMHeadModel(GPT2Config(n_layer=cfg["n_layer"], n_embd=cfg["n_embd"], n_head=cfg["n_head"],
                                          vocab_size=VOCAB, n_positions=cfg["context"],
                                          # GPT-2's own ids (50256) lie outside this vocabulary
                                          bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)).eval()
    from sparsetrain.train.models import create_model
    return create_model("gpt", num_classes=VOCAB, context=cfg["context"], n_layer=cfg["n_layer"],
                        n_head=cfg["n_head"], n_embd=cfg["n_embd"], mlp=style).eval()


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def empty_units(model: nn.Module, fraction: float) -> int:
    """Zero the ``fraction`` of each MLP's hidden units with the lowest up-row L1 norm; returns units emptied."""
    from sparsetrain.core.layout import out_axis
    emptied = 0
    for block in mlp_blocks(model):
        up = model.get_submodule(block.ups[0])
        rows = up.weight.abs().movedim(out_axis(up), 0).flatten(1).sum(1)
        drop = torch.argsort(rows, stable=True)[: int(fraction * rows.numel())]
        for name in block.ups:
            layer = model.get_submodule(name)
            layer.weight.movedim(out_axis(layer), 0)[drop] = 0
            if getattr(layer, "bias", None) is not None:
                layer.bias[drop] = 0
        emptied += drop.numel()
    return emptied


@torch.no_grad()
def empty_heads(model: nn.Module, fraction: float) -> int:
    """Zero the output-projection columns of the ``fraction`` of each attention's heads with the lowest L1 norm."""
    emptied = 0
    for block in attention_blocks(model):
        out = model.get_submodule(block.out)
        columns = out.weight.movedim(in_axis(out), 0)  # [heads * head_dim, ...]
        norms = columns.abs().reshape(block.heads, -1).sum(1)
        for h in torch.argsort(norms, stable=True)[: int(fraction * block.heads)].tolist():
            columns[h * block.head_dim:(h + 1) * block.head_dim] = 0
            emptied += 1
    return emptied


def alternate(fns: dict[str, object], cfg: dict) -> dict[str, float]:
    """Median seconds of each function, timed in turn over ``cfg["rounds"]`` rounds so drift hits all."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(cfg["rounds"]):
        for name, fn in fns.items():
            times[name].append(median_seconds(fn, reps=cfg["reps"], warmup=1))
    return {k: statistics.median(v) for k, v in times.items()}


def measure_heads(style: str, cfg: dict, fraction: float, head_fraction: float) -> list[str]:
    """Whole forward pass, dense (masked) vs with the emptied MLP units and heads removed."""
    dense = build(style, cfg)
    empty_units(dense, fraction)
    emptied = empty_heads(dense, head_fraction)
    x = torch.randint(0, VOCAB, (cfg["batch"], cfg["context"]), generator=torch.Generator().manual_seed(1))
    small, spec = compact_transformer(dense, x)
    small.eval()
    with torch.no_grad():
        error = float((logits(dense, x) - logits(small, x)).abs().max())
    heads = [(b.heads, a.heads) for b, a in zip(attention_blocks(dense), attention_blocks(small), strict=True)]
    med = alternate({"dense": lambda: logits(dense, x), "compact": lambda: logits(small, x)}, cfg)
    params = [sum(p.numel() for p in m.parameters()) for m in (dense, small)]
    return [style, f"{sum(h[0] for h in heads)} -> {sum(h[1] for h in heads)} ({emptied} emptied)",
            f"{params[0]:,} -> {params[1]:,}", f"{med['dense'] * 1e3:.3f}", f"{med['compact'] * 1e3:.3f}",
            f"{med['dense'] / med['compact']:.2f}x", f"{error:.1e}"]


def mlp_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The hidden states entering each MLP, recorded by one forward pass."""
    seen: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(b.name).register_forward_hook(
        lambda m, args, out, name=b.name: seen.__setitem__(name, args[0].detach())) for b in mlp_blocks(model)]
    with torch.no_grad():
        logits(model, x)
    for h in handles:
        h.remove()
    return seen


def measure(style: str, cfg: dict, fraction: float) -> list[str]:
    dense = build(style, cfg)
    emptied = empty_units(dense, fraction)
    small, widths = compact_mlp(dense)
    small.eval()
    x = torch.randint(0, VOCAB, (cfg["batch"], cfg["context"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        error = float((logits(dense, x) - logits(small, x)).abs().max())
    inputs = mlp_inputs(dense, x)
    blocks = {name: (dense.get_submodule(name), small.get_submodule(name)) for name in inputs}

    def run_mlps(which: int) -> None:
        for name, pair in blocks.items():
            pair[which](inputs[name])

    med = alternate({"mlp_dense": lambda: run_mlps(0), "mlp_compact": lambda: run_mlps(1),
                     "fwd_dense": lambda: logits(dense, x), "fwd_compact": lambda: logits(small, x)}, cfg)
    before = sum(w[0] for w in widths.values())
    after = sum(w[1] for w in widths.values())
    return [style, f"{before} -> {after} ({emptied} emptied)", f"{med['mlp_dense'] * 1e3:.3f}",
            f"{med['mlp_compact'] * 1e3:.3f}", f"{med['mlp_dense'] / med['mlp_compact']:.2f}x",
            f"{med['fwd_dense'] * 1e3:.3f}", f"{med['fwd_compact'] * 1e3:.3f}",
            f"{med['fwd_dense'] / med['fwd_compact']:.2f}x", f"{error:.1e}"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke run)")
    parser.add_argument("--styles", default=",".join(STYLES), help=f"comma-separated MLP styles of {STYLES}")
    parser.add_argument("--unit-sparsity", type=float, default=0.5, help="fraction of MLP units emptied")
    parser.add_argument("--head-sparsity", type=float, default=0.5,
                        help="fraction of attention heads emptied for the second table (0: no such table)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--results", default=None, help="Markdown file for the report (default: "
                        "benchmarks/RESULTS.md, section 'transformer-compact'; --quick: none)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else FULL
    styles = [s for s in args.styles.split(",") if s]
    unknown = sorted(set(styles) - set(STYLES))
    if unknown:
        parser.error(f"unknown style {unknown[0]!r}; choose from {', '.join(STYLES)}")
    results = args.results or (None if args.quick else str(Path(__file__).resolve().parent / "RESULTS.md"))
    with Tee() as tee:
        print("\n".join(machine_info()))
        print(f"GPT: {cfg['n_layer']} layers, width {cfg['n_embd']}, {cfg['n_head']} heads, context "
              f"{cfg['context']}, batch {cfg['batch']}; {args.unit_sparsity:.0%} of the MLP units emptied; "
              f"medians of {cfg['rounds']} rounds x {cfg['reps']} reps (ms)\n")
        rows = [measure(style, cfg, args.unit_sparsity) for style in styles]
        print(table(["MLP", "hidden units", "MLPs dense", "MLPs compact", "MLP speed-up", "forward dense",
                     "forward compact", "forward speed-up", "max logit diff"], rows))
        if args.head_sparsity > 0:
            print(f"\nAlso {args.head_sparsity:.0%} of the attention heads emptied; MLP units and heads removed:\n")
            rows = [measure_heads(style, cfg, args.unit_sparsity, args.head_sparsity) for style in styles]
            print(table(["model", "heads", "params", "forward dense", "forward compact", "forward speed-up",
                         "max logit diff"], rows))
    if results:
        command = "python benchmarks/transformer.py" + "".join(f" {a}" for a in argv)
        write_section("transformer-compact", "## Compact transformer MLPs: CPU latency vs dense (issue 13)\n\n"
                      f"```\n{command}\n```\n\n" + demote(tee.text(), 2), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
