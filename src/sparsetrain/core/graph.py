"""Which channels can be removed: channel groups from torch-pruning's dependency graph (docs/algorithms.md, "Chase").

A *channel group* is a set of channels that must go together: the output
channels of one convolution / linear layer (its weight rows and bias entries),
the normalisation layers on them, and every parameter that reads them (the
input columns of the next convolution / linear layer; a flatten into a linear
maps one channel to several columns). Channels that meet in a residual
addition form one group with several producers: removed together or not at all.

The groups are found by tracing the model with torch-pruning's
``DependencyGraph`` (``pip install torch-pruning``), never from a table per
architecture. Rules (Chase, docs/algorithms.md, "Chase"):

- channels that reach the model's output (the classifier's outputs) are never offered;
- residual groups (several producers) are offered only with ``prune_skip=True``
  (the seed's code prunes internal widths of residual blocks only: the default);
- groups touching a grouped / depthwise convolution, or a normalisation that
  mixes channels (LayerNorm, GroupNorm with fewer groups than channels), are
  not offered: removing one channel there changes what the others compute;
- groups whose channels pass through a functional convolution / matmul on a raw
  ``nn.Parameter`` (``F.conv2d(x, self.weight)`` outside ``nn.Conv2d``) are not
  offered, with a warning naming the parameter: the dependency graph takes such an
  op for an element-wise one and would pair the channels before it with those after.
- groups touching a layer inside an attention (:func:`attention_modules`) are
  not offered: the trace does not see the split into heads (it takes all of a
  fused q/k/v projection's outputs for inputs of the output projection).
  Transformer MLP units and heads are found by structure instead
  (:mod:`sparsetrain.core.transformer`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(4, 2, 3))
    >>> [(g.name, g.size, g.norms) for g in channel_groups(net, torch.randn(2, 1, 8))]
    [('0', 4, ('1',))]
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparsetrain.core.selection import unwrap
from sparsetrain.errors import SparsetrainError

#: normalisations that act on each channel separately (a removed channel does not touch the others)
CHANNELWISE_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
                     nn.InstanceNorm3d, nn.SyncBatchNorm)
MIXING_NORMS = (nn.LayerNorm, nn.GroupNorm)
LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class ChannelSlice:
    """The positions of one parameter that belong to the channels of a group.

    Attributes:
        param: parameter name in ``model.named_parameters()`` (e.g. ``"features.0.weight"``).
        dim: the dimension the channels index (0 = output channels of a conv / linear
            weight or a bias; 1 = input channels of a consumer; swapped for ConvTranspose).
        index: ``index[c]`` = the positions along ``dim`` of channel ``c`` of the group
            (one position per channel, except e.g. a flatten into a linear: H*W columns).
    """

    param: str
    dim: int
    index: tuple[tuple[int, ...], ...]

    def positions(self) -> torch.Tensor:
        """``LongTensor[size, k]`` of the positions along ``dim`` (every channel has ``k``)."""
        widths = {len(ix) for ix in self.index}
        if len(widths) != 1:
            raise SparsetrainError(f"{self.param}: channels map to different numbers of positions {sorted(widths)}; "
                                   "this slice cannot be expressed as a [channels, k] index.")
        return torch.tensor(self.index, dtype=torch.long)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels removed together (docs/algorithms.md, "Chase").

    Attributes:
        name: module name of the first producer in model order (e.g. ``"features.0"``).
        size: number of channels in the group.
        producers: the weights (and biases) whose OUTPUT channels these are.
        consumers: the weights that READ these channels (input columns).
        norms: module names of the (channel-wise) normalisations on these channels;
            their entries are indexed like the first producer's output channels.
        residual: True when several layers produce these channels (tied by a residual addition).
    """

    name: str
    size: int
    producers: tuple[ChannelSlice, ...]
    consumers: tuple[ChannelSlice, ...]
    norms: tuple[str, ...]
    residual: bool

    @property
    def producer_modules(self) -> tuple[str, ...]:
        """Module names of the producing layers (one per weight)."""
        return tuple(s.param.rsplit(".", 1)[0] for s in self.producers if s.param.endswith("weight"))


def _torch_pruning():
    try:
        import torch_pruning as tp
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise SparsetrainError("finding removable channels needs torch-pruning: pip install 'sparsetrain[export]' "
                               "(or pip install torch-pruning).") from None
    return tp


def _trace_input(example_input: Any) -> Any:
    """Positional arguments for the trace: a tensor batch is cut to one sample (tracing needs the
    graph, not the batch) and wrapped in a tuple; tuples / lists / dicts are passed as given."""
    if isinstance(example_input, torch.Tensor):
        x = example_input[:1] if example_input.dim() > 1 and example_input.shape[0] > 1 else example_input
        return (x,)
    return example_input


class _Tracker:
    """Forward pre/post hooks that remember which module was running when the trace failed."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[str] = []
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(lambda m, a, n=name: self.stack.append(n)))
            self.handles.append(module.register_forward_hook(self._pop))

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.stack:
            self.stack.pop()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _build(model: nn.Module, example_input: Any):
    """Trace ``model`` in eval mode (BN statistics untouched), restoring every module's mode."""
    tp = _torch_pruning()
    if example_input is None:
        raise SparsetrainError("finding removable channels traces the model: pass example_input (an input batch), "
                               "e.g. sparsetrain.attach(model, opt, 'chase', example_input=x, ...).")
    modes = {m: m.training for m in model.modules()}
    tracker = _Tracker(model)
    args = _trace_input(example_input)
    try:
        model.eval()
        with torch.no_grad():  # our own forward first: a failure then names the layer that raised
            model(**args) if isinstance(args, dict) else model(*args)
        tracker.stack.clear()
        return tp.DependencyGraph().build_dependency(model, example_inputs=args, verbose=False)
    except Exception as err:  # noqa: BLE001 - any failure inside a user's forward becomes one clear message
        layer = tracker.stack[-1] if tracker.stack else "<the model's forward>"
        raise SparsetrainError(
            f"cannot trace the channel dependency graph of {type(model).__name__}: layer {layer!r} failed with "
            f"{type(err).__name__}: {err}. Pass an example_input the model accepts, or exclude that layer "
            "(ignore=[...]).") from err
    finally:
        tracker.remove()
        for m, mode in modes.items():
            m.train(mode)


#: children that make a module an attention, whatever its class is called (fused q/k/v, q/k projections)
_ATTENTION_CHILDREN = (("c_attn",), ("q_proj", "k_proj"), ("query", "key"), ("to_q", "to_k"))


def attention_modules(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that compute attention (the model itself is never one).

    ``nn.MultiheadAttention``, a module whose class name says so (``...Attention``, ``...Attn``), or one
    with query / key projections as children (:data:`_ATTENTION_CHILDREN`).

    Example:
        >>> attention_modules(nn.TransformerEncoderLayer(8, 2))
        ['self_attn']
    """
    names = []
    for name, module in unwrap(model).named_modules():
        kind = type(module).__name__.lower()
        if name and (isinstance(module, nn.MultiheadAttention) or "attention" in kind or "attn" in kind or any(
                all(isinstance(getattr(module, c, None), nn.Module) for c in children)
                for children in _ATTENTION_CHILDREN)):
            names.append(name)
    return names


def _inside(module: str, parents: list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in parents)


def _slice(param: str, dim: int, idxs, root_idxs, size: int) -> ChannelSlice:
    per_channel: list[list[int]] = [[] for _ in range(size)]
    for i, r in zip(idxs, root_idxs, strict=True):
        per_channel[int(r)].append(int(i))
    return ChannelSlice(param, dim, tuple(tuple(sorted(set(ix))) for ix in per_channel))


def _raw_weight(group, param_names: dict[int, str]) -> str | None:
    """The raw parameter a torch-pruning group passes through, if any.

    Only the parameter node tells: a functional op's grad_fn is no guide, since an
    ``nn.Linear`` on a 3-D input also leaves an ``Addmm`` the graph files as element-wise.
    """
    for item in group.items:
        module = item.dep.target.module
        if isinstance(module, nn.Parameter) and module.dim() >= 2:
            return repr(param_names.get(id(module), "a raw parameter"))
    return None


def _reaches_output(node) -> bool:
    return not node.outputs


def _group(dg, group, names: dict[nn.Module, str], order: dict[str, int],
           module_order: dict[str, int]) -> ChannelGroup | None:
    """Our view of one torch-pruning group, or None when it may not be offered."""
    root = group[0].dep.target.module
    size = dg.get_out_channels(root)
    producers: list[ChannelSlice] = []
    consumers: list[ChannelSlice] = []
    norms: list[str] = []
    for item in group.items:
        dep, module = item.dep, item.dep.target.module
        out = dg.is_out_channel_pruning_fn(dep.handler)
        if out and _reaches_output(dep.target):
            return None  # these channels are (part of) the model's output
        if isinstance(module, LAYERS):
            if getattr(module, "groups", 1) != 1:
                return None
            transposed = bool(getattr(module, "transposed", False))
            name = names[module]
            if out:
                producers.append(_slice(f"{name}.weight", int(transposed), item.idxs, item.root_idxs, size))
                if getattr(module, "bias", None) is not None:
                    producers.append(_slice(f"{name}.bias", 0, item.idxs, item.root_idxs, size))
            else:
                consumers.append(_slice(f"{name}.weight", int(not transposed), item.idxs, item.root_idxs, size))
        elif isinstance(module, MIXING_NORMS) and not (
                isinstance(module, nn.GroupNorm) and module.num_groups == module.num_channels):
            return None
        elif isinstance(module, (*CHANNELWISE_NORMS, nn.GroupNorm)) and names[module] not in norms:
            norms.append(names[module])
    if not producers or not consumers:
        return None
    producers.sort(key=lambda s: (order[s.param], s.param))
    consumers.sort(key=lambda s: (order[s.param], s.param))
    weights = [s for s in producers if s.param.endswith(".weight")]
    return ChannelGroup(name=weights[0].param.rsplit(".", 1)[0], size=size, producers=tuple(producers),
                        consumers=tuple(consumers), norms=tuple(sorted(norms, key=module_order.__getitem__)),
                        residual=len(weights) > 1)


def channel_groups(model: nn.Module, example_input: Any, *, prune_skip: bool = False,
                   ignore: Iterable[str] = ()) -> list[ChannelGroup]:
    """The removable channel groups of ``model``, in model order (docs/algorithms.md, "Chase").

    Args:
        model: any ``nn.Module`` (DDP / compiled wrappers are looked through).
        example_input: an input the model accepts (a batch is cut to one sample
            for the trace); the forward runs once in eval mode, so BatchNorm
            statistics and dropout RNG are untouched.
        prune_skip: also offer channels tied through residual additions (the
            paper's "Chase (prune skip)"); default False = the seed's code,
            internal widths of residual blocks only.
        ignore: glob patterns over module names; a group any of whose producers
            matches is not offered (e.g. ``["stem.*"]``).

    Returns:
        One :class:`ChannelGroup` per removable set of channels.

    Raises:
        SparsetrainError: no example input, torch-pruning missing, or the trace
            failed (the message names the layer).
    """
    model = unwrap(model)
    dg = _build(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    module_order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    patterns, attention = list(ignore), attention_modules(model)
    param_names = {id(p): n for n, p in model.named_parameters()}
    groups, raw = [], set()
    for tp_group in dg.get_all_groups(root_module_types=LAYERS):
        through = _raw_weight(tp_group, param_names)
        if through is not None:
            raw.add(through)
            continue
        group = _group(dg, tp_group, names, order, module_order)
        if group is None or (group.residual and not prune_skip):
            continue
        if any(_inside(s.param.rsplit(".", 1)[0], attention) for s in (*group.producers, *group.consumers)):
            continue
        if any(fnmatch.fnmatchcase(m, p) for m in group.producer_modules for p in patterns):
            continue
        groups.append(group)
    if raw:
        warnings.warn(f"channels that pass through {', '.join(sorted(raw))} stay: the dependency graph cannot "
                      "trace a convolution / matmul on a raw nn.Parameter (hold it in nn.Conv*/nn.Linear to let "
                      "them go); every other channel group is found as usual.", stacklevel=2)
    return sorted(groups, key=lambda g: order[g.producers[0].param])


__all__ = ["ChannelGroup", "ChannelSlice", "attention_modules", "channel_groups"]
