"""Transformer compaction: remove emptied MLP units and attention heads (Chase-style channel groups).

A hidden unit ``j`` of a transformer MLP is a *channel*: its row in the up
projection(s) (GPT-2's ``c_fc``; Llama's ``gate_proj`` and ``up_proj``) and
its column in the down projection (``c_proj``; ``down_proj``). MLP blocks are
found by structure (the child names below), for ``nn.Linear`` and for Hugging
Face's transposed ``Conv1D`` alike (:mod:`sparsetrain.core.layout`), with no
trace: torch-pruning's trace does not see through attention's head split, a
SwiGLU product or a model that returns a tuple, so a model holding such blocks
offers only its MLP units to Chase (:func:`transformer_groups`).

:func:`compact_mlp` removes the units a sparse model no longer uses and returns
a narrower copy whose outputs equal the masked model's: a unit goes when its
down-projection column is empty, when (Llama) one of its gate / up rows and
bias is empty (``act(0) = 0``, as for SiLU), or when (GPT-2) its up row is
empty: then it outputs the constant ``act(bias_j)``, folded into the down
projection's bias (a block without an ``act`` / ``act_fn`` module or without
a down bias loses such a unit only when its bias is zero too, assuming
``act(0) = 0``). Whole attention heads go by the rule of
:mod:`sparsetrain.deploy.heads`; :func:`compact_transformer` does both and is
what :func:`sparsetrain.deploy.compact.compact` (and ``sparsetrain compact``)
runs on a transformer.
Chase: Yin et al. 2023, "Dynamic Sparsity Is Channel-Level Sparsity Learner".
docs/guides/transformers.md, "Compaction".
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain.core.layout import out_axis
from sparsetrain.core.selection import unwrap
from sparsetrain.core.transformer import (  # noqa: F401
    MLP_LAYOUTS,
    MLPBlock,
    attention_blocks,
    hidden_width,
    in_axis,
    live_units,
    mlp_blocks,
    transformer_groups,
)
from sparsetrain.deploy.compact import _round_up
from sparsetrain.deploy.widths import module_widths, resize_module
from sparsetrain.errors import SparsetrainError


def _live_units(model: nn.Module, block: MLPBlock) -> tuple[Tensor, Tensor]:
    """(units to keep, units removed whose constant output must be folded into the down bias)."""
    down = model.get_submodule(block.down)
    reads = live_units(down.weight, in_axis(down))
    rows = []
    for up in block.ups:
        layer = model.get_submodule(up)
        row = live_units(layer.weight, out_axis(layer))
        bias = getattr(layer, "bias", None)
        rows.append((row, bias.detach().ne(0) if bias is not None else torch.zeros_like(row)))
    if block.gated:  # act(gate) * up: zero as soon as one factor is exactly zero
        alive = reads.clone()
        for row, bias in rows:
            alive &= row | bias
        return alive, torch.zeros_like(alive)
    row, bias = rows[0]
    if block.act is not None and getattr(down, "bias", None) is not None:
        return reads & row, reads & ~row  # an empty row outputs the constant act(b_j): folded
    return reads & (row | bias), torch.zeros_like(row)  # without act: only act(0) = 0 is assumed


def _take(module: nn.Module, dim: int, keep: Tensor) -> None:
    resize_module(module, {dim: torch.nonzero(keep).flatten().to(module.weight.device)})


def masked_copy(model: nn.Module, masks: dict[str, Tensor] | None, caller: str) -> nn.Module:
    """A deep copy of ``model`` with ``masks`` multiplied into its parameters."""
    small = copy.deepcopy(unwrap(model))
    params = dict(small.named_parameters())
    with torch.no_grad():
        for name, mask in (masks or {}).items():
            if name not in params:
                raise SparsetrainError(f"{caller}: the mask {name!r} names no parameter of the model.")
            params[name].mul_(mask.to(params[name].device, params[name].dtype))
    return small


@torch.no_grad()
def remove_units(model: nn.Module, block: MLPBlock, round_to: int = 1) -> list[int]:
    """Remove the unused hidden units of ``block`` from ``model`` (in place); returns the removed units.

    ``round_to`` keeps some empty units so that the width stays a multiple of it (outputs unchanged).
    """
    keep, fold = _live_units(model, block)
    removed = _round_up(torch.nonzero(~keep).flatten().tolist(), keep.numel(), round_to)
    keep = torch.ones_like(keep)
    keep[removed] = False
    fold &= ~keep  # a unit given back by the rounding keeps its own (constant) output
    down = model.get_submodule(block.down)
    if fold.any():  # act(b_j) * column j of the down projection is a constant: add it to the down bias
        up = model.get_submodule(block.ups[0])
        bias = up.bias if getattr(up, "bias", None) is not None else torch.zeros(keep.numel())
        value = block.act(bias[fold].to(down.weight.dtype))
        column = down.weight.movedim(in_axis(down), 1)[:, fold]
        down.bias.add_(column @ value)
    if not keep.any():  # keep one unit, zeroed, so the block stays a valid module (it contributes zero)
        keep[0] = True
        removed = removed[1:]
        for layer in (model.get_submodule(u) for u in block.ups):
            layer.weight.movedim(out_axis(layer), 0)[0].zero_()
            if getattr(layer, "bias", None) is not None:
                layer.bias[0] = 0
        down.weight.movedim(in_axis(down), 0)[0].zero_()
    if removed:
        for up in block.ups:
            layer = model.get_submodule(up)
            _take(layer, out_axis(layer), keep)
        _take(down, in_axis(down), keep)
    return removed


def compact_mlp(model: nn.Module, masks: dict[str, Tensor] | None = None, example_input: Any = None,
                atol: float = 1e-5) -> tuple[nn.Module, dict[str, tuple]]:
    """A copy of ``model`` without the MLP hidden units it no longer uses; outputs equal the masked model's.

    Args:
        model: a transformer with MLP blocks of :data:`MLP_LAYOUTS` (GPT-2 / Llama style).
        masks: ``{parameter name: bool mask}`` applied to the copy first (e.g. ``sparsifier.masks``);
            without it the model's zeros decide.
        example_input: if given, the compact copy's output on it is checked against the masked
            model's (eval mode); a difference above ``atol`` raises (a block whose forward is not
            ``down(act(up(x)))`` / ``down(act(gate(x)) * up(x))`` would show here).

    Returns:
        ``(compact copy, {mlp name: (hidden before, hidden after)})``.

    Example:
        >>> from sparsetrain.train.models import create_model
        >>> net = create_model("gpt", num_classes=20, context=8, n_layer=1, n_head=2, n_embd=16)
        >>> _ = net.h[0].mlp.c_proj.weight.data[:, :16].zero_()
        >>> small, widths = compact_mlp(net)
        >>> widths, small.h[0].mlp.c_fc.out_features
        ({'h.0.mlp': (64, 48)}, 48)
    """
    small = masked_copy(model, masks, "compact_mlp")
    blocks = mlp_blocks(small)
    if not blocks:
        raise SparsetrainError(f"{type(small).__name__} has no transformer MLP (children named "
                               f"{', '.join('/'.join((*u, d)) for u, d, _ in MLP_LAYOUTS)}); use "
                               "sparsetrain.deploy.compact for other models.")
    widths = {}
    for block in blocks:
        before = hidden_width(small, block)
        widths[block.name] = (before, before - len(remove_units(small, block)))
    if example_input is not None:
        verify(model, masks, small, example_input, atol)
    return small, widths


def is_transformer(model: nn.Module) -> bool:
    """Whether ``model`` holds MLP blocks or attentions that :func:`compact_transformer` knows."""
    return bool(mlp_blocks(model) or attention_blocks(model))


def compact_transformer(model: nn.Module, example_input: Any, *, masks: dict[str, Tensor] | None = None,
                        round_to: int = 1, atol: float = 1e-5) -> tuple[nn.Module, dict[str, Any]]:
    """Remove the unused MLP units and attention heads of a transformer; returns ``(compact copy, width spec)``.

    The contract of :func:`sparsetrain.deploy.compact.compact` (which calls this on a transformer):
    ``removed`` lists the removed units per MLP and the removed query heads per attention, ``widths`` the
    new shapes and head counts for :func:`sparsetrain.deploy.widths.rebuild`; a model with nothing to
    remove comes back unchanged, with a warning. ``round_to`` applies to MLP widths (heads are removed
    whole). The outputs on ``example_input`` must equal the masked model's (``atol``), else it raises.

    Example:
        >>> from sparsetrain.train.models import create_model
        >>> net = create_model("gpt", num_classes=20, context=8, n_layer=1, n_head=2, n_embd=16).eval()
        >>> _ = net.h[0].attn.c_proj.weight.data[:, :8].zero_()
        >>> small, spec = compact_transformer(net, torch.zeros(1, 8, dtype=torch.long))
        >>> spec["removed"], spec["widths"]["h.0.attn"]["attrs"]
        ({'h.0.attn': [0]}, {'n_head': 1})
    """
    from sparsetrain.deploy.heads import remove_heads
    source = unwrap(model)
    small = masked_copy(source, masks, "compact")
    removed = {b.name: remove_units(small, b, round_to) for b in mlp_blocks(small)}
    removed |= {b.name: remove_heads(small, b) for b in attention_blocks(small)}
    removed = {name: r for name, r in removed.items() if r}
    if not removed:
        warnings.warn(f"nothing to compact in {type(source).__name__}: no MLP unit or attention head is unused; "
                      "the model is returned unchanged.", stacklevel=2)
        return model, {"format": "sparsetrain-width-spec", "version": 1, "removed": {}, "widths": {}}
    verify(source, masks, small, example_input, atol)
    small.train(source.training)
    return small, {"format": "sparsetrain-width-spec", "version": 1, "model": type(source).__name__,
                   "round_to": round_to, "removed": removed, "widths": module_widths(small, source)}


def _output(model: nn.Module, x: Any) -> Tensor:
    was = model.training
    model.eval()
    out = model(*x) if isinstance(x, tuple) else model(x)
    model.train(was)
    out = getattr(out, "logits", out)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def verify(model: nn.Module, masks: dict[str, Tensor] | None, small: nn.Module, x: Any, atol: float) -> None:
    """Raise unless ``small`` computes on ``x`` what ``model`` with ``masks`` does (eval mode, within ``atol``)."""
    error = float((_output(masked_copy(model, masks, "compact"), x) - _output(small, x)).abs().max())
    if not error <= atol:
        raise SparsetrainError(f"the compact model's output differs from the masked model's by {error:.3g} "
                               f"(> atol={atol:g}): a block of {type(small).__name__} does not compute what its "
                               "layout says (an MLP down(act(up(x))) or down(act(gate(x)) * up(x)), an attention "
                               "softmax(q k^T) v with an output projection). Please report this model.")


__all__ = ["MLPBlock", "MLP_LAYOUTS", "compact_mlp", "compact_transformer", "is_transformer", "masked_copy",
           "mlp_blocks", "remove_units", "transformer_groups", "verify"]
