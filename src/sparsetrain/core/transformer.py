"""Transformer MLP units and attention heads as channel groups: what Chase may empty and compaction remove.

A hidden unit ``j`` of a transformer MLP is a *channel*: its row in the up
projection(s) (GPT-2's ``c_fc``; Llama's ``gate_proj`` and ``up_proj``) and
its column in the down projection (``c_proj``; ``down_proj``). MLP blocks are
found by structure (the child names below), for ``nn.Linear`` and for Hugging
Face's transposed ``Conv1D`` alike (:mod:`sparsetrain.core.layout`), with no
trace: torch-pruning's trace does not see through attention's head split, a
SwiGLU product or a model that returns a tuple, so a model holding such blocks
offers only its MLP units to Chase (:func:`transformer_groups`). Their removal
is :func:`sparsetrain.deploy.transformer.compact_mlp`.

An attention *head* ``h`` is found the same way (:func:`attention_blocks`): its
rows in the query / key / value projections (GPT-2's fused ``c_attn``; Llama's
``q_proj``, ``k_proj``, ``v_proj``, which may hold fewer key / value heads
than query heads, grouped-query attention) and its columns in the output
projection (``c_proj``; ``o_proj``). :func:`head_groups` offers them as channel
groups; :mod:`sparsetrain.deploy.heads` removes the heads that no longer add
anything. docs/guides/transformers.md, "Compaction".

Example:
    >>> import torch
    >>> from sparsetrain.train.models import create_model
    >>> net = create_model("gpt", num_classes=20, context=8, n_layer=1, n_head=2, n_embd=16)
    >>> [(g.name, g.size) for g in transformer_groups(net)]
    [('h.0.mlp', 64)]
    >>> [(b.name, b.heads, b.head_dim) for b in attention_blocks(net)]
    [('h.0.attn', 2, 8)]
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor, nn

from sparsetrain.core.graph import ChannelGroup, ChannelSlice
from sparsetrain.core.layout import hf_conv1d, out_axis
from sparsetrain.core.selection import unwrap

#: (up projections, down projection, whether the up projections are multiplied: gated)
MLP_LAYOUTS: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("gate_proj", "up_proj"), "down_proj", True),  # Llama, Mistral, Qwen
    (("c_fc",), "c_proj", False),  # GPT-2 (Conv1D), CLIP, our GPT (Linear)
)
#: ``fc1`` / ``fc2`` (OPT, Phi) are left out on purpose: CNN heads (LeNet) use the same names for
#: layers that are not one MLP, and a name match must never make Chase or compaction wrong.

#: (query / key / value projections: one fused or three, output projection)
ATTENTION_LAYOUTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("q_proj", "k_proj", "v_proj"), "o_proj"),  # Llama, Mistral, Qwen (grouped-query attention)
    (("c_attn",), "c_proj"),  # GPT-2 (Conv1D), our GPT (Linear): q, k, v stacked along the outputs
)
#: attributes holding the number of heads, read when a module has no ``head_dim``
HEAD_COUNTS = ("num_heads", "n_head", "num_attention_heads")


@dataclass(frozen=True)
class MLPBlock:
    """One transformer MLP found by structure.

    Attributes:
        name: module name of the MLP.
        ups: names of its up projections (the producers of its hidden units).
        down: name of its down projection (the consumer).
        gated: True when the up projections are multiplied (SwiGLU): a unit is off when any of them is.
        act: the activation between the projections (``None`` when the block has none we can call).
    """

    name: str
    ups: tuple[str, ...]
    down: str
    gated: bool
    act: Callable[[Tensor], Tensor] | None


def _projection(module: nn.Module | None) -> bool:
    conv1d = hf_conv1d()
    return isinstance(module, nn.Linear) or (conv1d is not None and isinstance(module, conv1d))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def mlp_blocks(model: nn.Module) -> list[MLPBlock]:
    """The model's transformer MLPs (modules with up / down projections named as in :data:`MLP_LAYOUTS`)."""
    out = []
    for name, module in unwrap(model).named_modules():
        for ups, down, gated in MLP_LAYOUTS:
            layers = [getattr(module, n, None) for n in (*ups, down)]
            if all(_projection(m) for m in layers):
                act = next((a for a in (getattr(module, n, None) for n in ("act", "act_fn", "activation_fn"))
                            if callable(a)), None)
                out.append(MLPBlock(name, tuple(_join(name, u) for u in ups), _join(name, down), gated, act))
                break
    return out


def in_axis(module: nn.Module) -> int:
    return 1 - out_axis(module)


def live_units(t: Tensor, dim: int) -> Tensor:
    """Per unit along ``dim`` of ``t``: whether any of its entries is nonzero.

    Example:
        >>> import torch
        >>> live_units(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), 1).tolist()
        [False, True]
    """
    return t.detach().movedim(dim, 0).reshape(t.shape[dim], -1).ne(0).any(1)


@dataclass(frozen=True)
class AttentionBlock:
    """One multi-head attention found by structure.

    Attributes:
        name: module name of the attention.
        qkv: its query / key / value projections: ``(c_attn,)`` when fused (q, k, v stacked along the
            outputs, each ``heads * head_dim`` wide), else ``(q_proj, k_proj, v_proj)``.
        out: its output projection (reads ``heads * head_dim`` inputs, head ``h`` at ``h * head_dim``).
        heads: query heads.
        kv_heads: key / value heads (fewer than ``heads`` under grouped-query attention: query head
            ``h`` reads key / value head ``h // (heads // kv_heads)``).
        head_dim: the width of one head.
    """

    name: str
    qkv: tuple[str, ...]
    out: str
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def fused(self) -> bool:
        return len(self.qkv) == 1

    @property
    def group(self) -> int:
        """Query heads per key / value head."""
        return self.heads // self.kv_heads


def _width(module: nn.Module, axis: int) -> int:
    return int(module.weight.shape[axis])


def _head_dim(module: nn.Module, inner: int) -> int | None:
    d = getattr(module, "head_dim", None)
    if isinstance(d, int) and d > 0:
        return d
    for attr in HEAD_COUNTS:
        n = getattr(module, attr, None)
        if isinstance(n, int) and n > 0 and inner % n == 0:
            return inner // n
    return None


def attention_blocks(model: nn.Module) -> list[AttentionBlock]:
    """The model's multi-head attentions (children named as in :data:`ATTENTION_LAYOUTS`, with a ``head_dim``
    or a head count attribute of :data:`HEAD_COUNTS`). A fused projection that is not three times the
    output projection's input (GPT-2's cross-attention) is not one of them."""
    out = []
    for name, module in unwrap(model).named_modules():
        for qkv, proj in ATTENTION_LAYOUTS:
            layers = [getattr(module, n, None) for n in (*qkv, proj)]
            if not all(_projection(m) for m in layers):
                continue
            *projections, o = layers
            inner = _width(o, in_axis(o))
            widths = [_width(m, out_axis(m)) for m in projections]
            d = _head_dim(module, inner)
            kv = inner if len(widths) == 1 else widths[1]
            shaped = widths == [3 * inner] if len(widths) == 1 else widths[0] == inner and widths[1] == widths[2]
            if shaped and d and inner % d == 0 and kv % d == 0 and kv and (inner // d) % (kv // d) == 0:
                out.append(AttentionBlock(name, tuple(_join(name, n) for n in qkv), _join(name, proj), inner // d,
                                          kv // d, d))
            break
    return out


def _head_index(block: AttentionBlock, heads: int, offsets: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    d = block.head_dim
    return tuple(tuple(o + h * d + i for o in offsets for i in range(d)) for h in range(heads))


def head_groups(model: nn.Module, ignore: Iterable[str] = ()) -> list[ChannelGroup]:
    """One channel group per attention: its heads (producers: each head's query rows, and its key / value
    rows unless they are shared by several query heads; consumers: its columns of the output projection).
    Emptying a group's channel empties the head's output columns, which makes it removable
    (:func:`sparsetrain.deploy.heads.compact_heads`). ``ignore``: globs over attention module names."""
    model, patterns = unwrap(model), list(ignore)
    groups = []
    for block in attention_blocks(model):
        if any(fnmatch.fnmatchcase(block.name, p) for p in patterns):
            continue
        inner = block.heads * block.head_dim
        if block.fused:
            stacked = {block.qkv[0]: _head_index(block, block.heads, (0, inner, 2 * inner))}
        else:
            own = _head_index(block, block.heads, (0,))
            stacked = {block.qkv[0]: own} | ({n: own for n in block.qkv[1:]} if block.group == 1 else {})
        producers = []
        for layer_name, index in stacked.items():
            layer = model.get_submodule(layer_name)
            producers.append(ChannelSlice(f"{layer_name}.weight", out_axis(layer), index))
            if getattr(layer, "bias", None) is not None:
                producers.append(ChannelSlice(f"{layer_name}.bias", 0, index))
        o = model.get_submodule(block.out)
        consumers = (ChannelSlice(f"{block.out}.weight", in_axis(o), _head_index(block, block.heads, (0,))),)
        groups.append(ChannelGroup(block.name, block.heads, tuple(producers), consumers, (), False))
    return groups


def hidden_width(model: nn.Module, block: MLPBlock) -> int:
    """The number of hidden units of ``block``."""
    up = model.get_submodule(block.ups[0])
    return int(up.weight.shape[out_axis(up)])


def transformer_groups(model: nn.Module, ignore: Iterable[str] = ()) -> list[ChannelGroup]:
    """One channel group per transformer MLP: its hidden units (producers: the up projections' rows and
    biases; consumer: the down projection's columns). ``ignore``: globs over MLP module names."""
    model, patterns = unwrap(model), list(ignore)
    groups = []
    for block in mlp_blocks(model):
        if any(fnmatch.fnmatchcase(block.name, p) for p in patterns):
            continue
        size = hidden_width(model, block)
        index = tuple((j,) for j in range(size))
        producers = []
        for up in block.ups:
            layer = model.get_submodule(up)
            producers.append(ChannelSlice(f"{up}.weight", out_axis(layer), index))
            if getattr(layer, "bias", None) is not None:
                producers.append(ChannelSlice(f"{up}.bias", 0, index))
        down = model.get_submodule(block.down)
        consumers = (ChannelSlice(f"{block.down}.weight", in_axis(down), index),)
        groups.append(ChannelGroup(block.name, size, tuple(producers), consumers, (), False))
    return groups
