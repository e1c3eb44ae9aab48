"""Transformer MLP units: Chase-style channel groups and their physical removal (compaction).

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
``act(0) = 0``).
Chase: Yin et al. 2023, "Dynamic Sparsity Is Channel-Level Sparsity Learner".
docs/guides/transformers.md, "Compaction".
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain.core.layout import out_axis
from sparsetrain.core.selection import unwrap
from sparsetrain.core.transformer import MLP_LAYOUTS, MLPBlock, in_axis, mlp_blocks, transformer_groups  # noqa: F401
from sparsetrain.errors import SparsetrainError


def _units(t: Tensor, dim: int) -> Tensor:
    """Per unit along ``dim``: whether any entry is nonzero."""
    return t.detach().movedim(dim, 0).reshape(t.shape[dim], -1).ne(0).any(1)


def _live_units(model: nn.Module, block: MLPBlock) -> tuple[Tensor, Tensor]:
    """(units to keep, units removed whose constant output must be folded into the down bias)."""
    down = model.get_submodule(block.down)
    reads = _units(down.weight, in_axis(down))
    rows = []
    for up in block.ups:
        layer = model.get_submodule(up)
        row = _units(layer.weight, out_axis(layer))
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
    """Keep the ``keep`` positions of ``module``'s weight along ``dim`` (and of its bias on the out axis)."""
    idx = torch.nonzero(keep).flatten().to(module.weight.device)
    module.weight = nn.Parameter(module.weight.detach().index_select(dim, idx).clone(),
                                 requires_grad=module.weight.requires_grad)
    if dim == out_axis(module) and getattr(module, "bias", None) is not None:
        module.bias = nn.Parameter(module.bias.detach().index_select(0, idx).clone(),
                                   requires_grad=module.bias.requires_grad)
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif hasattr(module, "nf"):  # Hugging Face Conv1D
        module.nf = module.weight.shape[1]


@torch.no_grad()
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
    small = copy.deepcopy(unwrap(model))
    params = dict(small.named_parameters())
    for name, mask in (masks or {}).items():
        if name not in params:
            raise SparsetrainError(f"compact_mlp: the mask {name!r} names no parameter of the model.")
        params[name].mul_(mask.to(params[name].device, params[name].dtype))
    blocks = mlp_blocks(small)
    if not blocks:
        raise SparsetrainError(f"{type(small).__name__} has no transformer MLP (children named "
                               f"{', '.join('/'.join((*u, d)) for u, d, _ in MLP_LAYOUTS)}); use "
                               "sparsetrain.deploy.compact for other models.")
    widths = {}
    for block in blocks:
        keep, fold = _live_units(small, block)
        down = small.get_submodule(block.down)
        if fold.any():  # act(b_j) * column j of the down projection is a constant: add it to the down bias
            up = small.get_submodule(block.ups[0])
            bias = up.bias if getattr(up, "bias", None) is not None else torch.zeros(keep.numel())
            value = block.act(bias[fold].to(down.weight.dtype))
            column = down.weight.movedim(in_axis(down), 1)[:, fold]
            down.bias.add_(column @ value)
        before = int(keep.numel())
        if not keep.any():  # keep one unit so the block stays a valid module (it contributes zero)
            keep[0] = True
            for layer in (small.get_submodule(u) for u in block.ups):
                layer.weight.movedim(out_axis(layer), 0)[0].zero_()
                if getattr(layer, "bias", None) is not None:
                    layer.bias[0] = 0
            down.weight.movedim(in_axis(down), 0)[0].zero_()
        for up in block.ups:
            layer = small.get_submodule(up)
            _take(layer, out_axis(layer), keep)
        _take(down, in_axis(down), keep)
        widths[block.name] = (before, int(keep.sum()))
    if example_input is not None:
        _verify(model, masks, small, example_input, atol)
    return small, widths


def _output(model: nn.Module, x: Any) -> Tensor:
    was = model.training
    model.eval()
    out = model(*x) if isinstance(x, tuple) else model(x)
    model.train(was)
    out = getattr(out, "logits", out)
    return out[0] if isinstance(out, tuple) else out


def _verify(model: nn.Module, masks: dict[str, Tensor] | None, small: nn.Module, x: Any, atol: float) -> None:
    masked = copy.deepcopy(unwrap(model))
    params = dict(masked.named_parameters())
    for name, mask in (masks or {}).items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))
    error = float((_output(masked, x) - _output(small, x)).abs().max())
    if error > atol:
        raise SparsetrainError(f"compact_mlp: the compact model's output differs from the masked model's by "
                               f"{error:.3g} (> atol={atol:g}); an MLP block of {type(small).__name__} does not "
                               "compute down(act(up(x))) or down(act(gate(x)) * up(x)). Please report this model.")


__all__ = ["MLPBlock", "MLP_LAYOUTS", "compact_mlp", "mlp_blocks", "transformer_groups"]
