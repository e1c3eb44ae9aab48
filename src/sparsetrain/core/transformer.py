"""Transformer MLP units as channel groups: which hidden units Chase may empty and compaction remove.

A hidden unit ``j`` of a transformer MLP is a *channel*: its row in the up
projection(s) (GPT-2's ``c_fc``; Llama's ``gate_proj`` and ``up_proj``) and
its column in the down projection (``c_proj``; ``down_proj``). MLP blocks are
found by structure (the child names below), for ``nn.Linear`` and for Hugging
Face's transposed ``Conv1D`` alike (:mod:`sparsetrain.core.layout`), with no
trace: torch-pruning's trace does not see through attention's head split, a
SwiGLU product or a model that returns a tuple, so a model holding such blocks
offers only its MLP units to Chase (:func:`transformer_groups`). Their removal
is :func:`sparsetrain.deploy.transformer.compact_mlp`.

Example:
    >>> import torch
    >>> from sparsetrain.train.models import create_model
    >>> net = create_model("gpt", num_classes=20, context=8, n_layer=1, n_head=2, n_embd=16)
    >>> [(g.name, g.size) for g in transformer_groups(net)]
    [('h.0.mlp', 64)]
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


def _hidden(model: nn.Module, block: MLPBlock) -> int:
    up = model.get_submodule(block.ups[0])
    return up.weight.shape[out_axis(up)]


def transformer_groups(model: nn.Module, ignore: Iterable[str] = ()) -> list[ChannelGroup]:
    """One channel group per transformer MLP: its hidden units (producers: the up projections' rows and
    biases; consumer: the down projection's columns). ``ignore``: globs over MLP module names."""
    model, patterns = unwrap(model), list(ignore)
    groups = []
    for block in mlp_blocks(model):
        if any(fnmatch.fnmatchcase(block.name, p) for p in patterns):
            continue
        size = _hidden(model, block)
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
