"""Remove whole attention heads that no longer add anything; the compact model computes what the masked one does.

Head ``h`` adds ``sum_j A_h[i, j] v_h[j] @ W_o[:, h]`` to position ``i``. It
adds exactly zero, at every position and under any attention mask, when

- its output-projection columns ``W_o[:, h]`` are all zero;
- or its value rows and value bias are all zero (``v_h = 0``).

Those heads go. A head whose value rows are zero but whose value bias ``b_v``
is not adds the constant ``W_o[:, h] @ b_v`` only where the softmax row sums
to 1: a query that may attend to no key at all (a left-padded position) gets
zeros from the attention kernels instead. Folding that constant into the
output bias would change the outputs there, so such a head stays. A head whose
query or key rows are zero stays too: its scores are constant, so it adds the
uniform average of its values, which depends on the input.

Under grouped-query attention (``kv_heads < heads``, Llama) the query heads of
a key / value group share its value rows, and every group must keep the same
number of query heads: a group goes (with its key / value rows) when all its
query heads can go, and each remaining group loses the same number ``r`` of
removable query heads, ``r`` the fewest any remaining group can lose. A layer
keeps at least one head. docs/guides/transformers.md, "Compaction".

Example:
    >>> import torch
    >>> from sparsetrain.train.models import create_model
    >>> net = create_model("gpt", num_classes=20, context=8, n_layer=1, n_head=4, n_embd=16).eval()
    >>> _ = net.h[0].attn.c_proj.weight.data[:, 4:12].zero_()   # heads 1 and 2 write nothing
    >>> small, heads = compact_heads(net)
    >>> heads, small.h[0].attn.n_head, tuple(small.h[0].attn.c_attn.weight.shape)
    ({'h.0.attn': (4, 2)}, 2, (24, 16))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain.core.layout import out_axis
from sparsetrain.core.transformer import AttentionBlock, attention_blocks, in_axis, live_units
from sparsetrain.deploy.widths import resize_module

#: attention attributes that count heads (or their width); those a module has are set to the new counts
_COUNTS = ("num_heads", "n_head", "num_attention_heads", "num_key_value_heads", "num_key_value_groups",
           "split_size")


def _value(model: nn.Module, block: AttentionBlock) -> tuple[nn.Module, int]:
    """The layer holding the value rows and the offset of the first one along its outputs."""
    layer = model.get_submodule(block.qkv[-1])
    return layer, 2 * block.heads * block.head_dim if block.fused else 0


def silent_heads(model: nn.Module, block: AttentionBlock) -> Tensor:
    """Per query head of ``block``: whether it adds exactly zero (no output columns, or no values at all)."""
    d = block.head_dim
    out = model.get_submodule(block.out)
    reads = live_units(out.weight, in_axis(out)).view(block.heads, d).any(1).cpu()
    layer, start = _value(model, block)
    span = slice(start, start + block.kv_heads * d)
    values = live_units(layer.weight, out_axis(layer))[span]
    bias = getattr(layer, "bias", None)
    if bias is not None:
        values = values | bias.detach()[span].ne(0).cpu()
    values = values.view(block.kv_heads, d).any(1).cpu()
    return ~reads | ~values[torch.arange(block.heads) // block.group]


def _choose(silent: Tensor, block: AttentionBlock) -> tuple[Tensor, Tensor]:
    """(query heads to remove, key / value heads to remove): whole groups, then the same count in each other."""
    silent = silent.view(block.kv_heads, block.group)
    whole = silent.all(1)
    if whole.all():
        whole[0] = False  # a layer keeps one head
    remove = whole[:, None].expand_as(silent).clone()
    kept = silent[~whole]
    r = min(int(kept.sum(1).min()), block.group - 1)
    for g in torch.nonzero(~whole).flatten().tolist():
        remove[g, torch.nonzero(silent[g]).flatten()[:r]] = True
    return remove.flatten(), whole


def _set_counts(module: nn.Module, heads: int, kv_heads: int, head_dim: int) -> None:
    values = {"num_heads": heads, "n_head": heads, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "num_key_value_groups": heads // kv_heads, "split_size": heads * head_dim}
    for attr in _COUNTS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, values[attr])


@torch.no_grad()
def remove_heads(model: nn.Module, block: AttentionBlock) -> list[int]:
    """Remove the silent heads of ``block`` from ``model`` (in place); returns the removed query heads."""
    remove, whole = _choose(silent_heads(model, block), block)
    if not remove.any():
        return []
    d = block.head_dim
    keep_q = (~remove).repeat_interleave(d)
    layers = [model.get_submodule(n) for n in block.qkv]
    if block.fused:
        resize_module(layers[0], {out_axis(layers[0]): torch.nonzero(keep_q.repeat(3)).flatten()})
    else:
        keep_kv = torch.nonzero((~whole).repeat_interleave(d)).flatten()
        resize_module(layers[0], {out_axis(layers[0]): torch.nonzero(keep_q).flatten()})
        for layer in layers[1:]:
            resize_module(layer, {out_axis(layer): keep_kv})
    out = model.get_submodule(block.out)
    resize_module(out, {in_axis(out): torch.nonzero(keep_q).flatten()})
    _set_counts(model.get_submodule(block.name), int((~remove).sum()), int((~whole).sum()), d)
    return torch.nonzero(remove).flatten().tolist()


def compact_heads(model: nn.Module, masks: dict[str, Tensor] | None = None, example_input: Any = None,
                  atol: float = 1e-5) -> tuple[nn.Module, dict[str, tuple[int, int]]]:
    """A copy of ``model`` without the attention heads it no longer uses; outputs equal the masked model's.

    Args:
        model: a transformer with attentions of :data:`sparsetrain.core.transformer.ATTENTION_LAYOUTS`.
        masks: ``{parameter name: bool mask}`` applied to the copy first (e.g. ``sparsifier.masks``).
        example_input: if given, the copy's output on it is checked against the masked model's.
        atol: the largest difference the check accepts.

    Returns:
        ``(compact copy, {attention name: (heads before, heads after)})``.
    """
    from sparsetrain.deploy.transformer import masked_copy, verify
    small = masked_copy(model, masks, "compact_heads")
    heads = {}
    for block in attention_blocks(small):
        heads[block.name] = (block.heads, block.heads - len(remove_heads(small, block)))
    if example_input is not None:
        verify(model, masks, small, example_input, atol)
    return small, heads


__all__ = ["compact_heads", "remove_heads", "silent_heads"]
