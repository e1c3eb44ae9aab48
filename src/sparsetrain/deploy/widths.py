"""Width specs: resize layers in place, record their new widths, and rebuild a compact model from them.

A compact model (:func:`sparsetrain.deploy.compact.compact`) is the same
class as the original with narrower layers. Its *width spec* is a JSON-able
dict ``{"format", "version", "model", "removed", "widths"}`` where ``widths``
maps each resized module to its new attributes (``in_channels``,
``out_features``, ``num_features``, ...) and the shapes of its tensors
(``None`` for a bias that is absent). :func:`rebuild` applies it to a freshly
built original model and loads the weights, refusing a spec that does not
match them (docs/algorithms.md, "Chase").

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> small = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> resize_module(small[0], {0: torch.tensor([0, 2])}); resize_module(small[2], {1: torch.tensor([0, 2])})
    >>> spec = {"format": "sparsetrain-width-spec", "version": 1, "widths": module_widths(small, net)}
    >>> rebuild(net, spec, small.state_dict())[0].out_features
    2
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sparsetrain.core.layout import hf_conv1d
from sparsetrain.errors import SparsetrainError

_ATTRS = ("in_channels", "out_channels", "in_features", "out_features", "num_features", "num_channels",
          "num_groups", "nf", "n_head", "num_heads", "num_key_value_heads", "num_key_value_groups", "split_size")
#: ``nf``: a Hugging Face Conv1D's outputs; the others: an attention's heads (:mod:`sparsetrain.deploy.heads`)


def _index(t: Tensor | None, dim: int, idx: Tensor) -> Tensor | None:
    return None if t is None else t.detach().index_select(dim, idx.to(t.device)).clone()


def _set(module: nn.Module, name: str, value: Tensor | None, in_place: bool = False) -> None:
    if value is None:
        return
    if in_place and module._parameters.get(name) is not None:
        old = module._parameters[name]  # the same Parameter object: optimizers, hooks and user references stay valid
        # autograd caches the parameter's gradient accumulator, with the old shape, while any earlier graph
        # (the last step's loss) is alive; it drops the cache only when the dtype changes: change it twice
        old.data = value.new_empty(0, dtype=torch.float64 if value.dtype != torch.float64 else torch.float32)
        old.data = value
        old.grad = None
    elif name in module._parameters:
        module._parameters[name] = nn.Parameter(value, requires_grad=module._parameters[name].requires_grad)
    else:
        module._buffers[name] = value


def resize_module(module: nn.Module, keep: dict[int, Tensor], *, in_place: bool = False) -> None:
    """Keep only the indices ``keep[dim]`` along weight dimension ``dim`` (norms: dim 0 = features).

    Conv / Linear / Hugging Face Conv1D: dim 0 and 1 of the weight (the bias
    follows the output dimension, 1 for a Conv1D); BatchNorm / InstanceNorm / channel-wise GroupNorm: the features.
    Width attributes (``out_channels``, ``in_features``, ...) are updated.
    ``in_place=True`` narrows the existing ``nn.Parameter`` objects (their
    ``.data``; gradients are dropped) instead of creating new ones, so an
    optimizer that holds them keeps working (:mod:`sparsetrain.deploy.shrink`).
    """
    conv1d = hf_conv1d()
    if conv1d is not None and isinstance(module, conv1d):  # Hugging Face's transposed linear: [in, out]
        for dim, idx in keep.items():
            _set(module, "weight", _index(module.weight, dim, idx), in_place)
            if dim == 1:
                _set(module, "bias", _index(module.bias, 0, idx), in_place)
        module.nf = module.weight.shape[1]
    elif isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        out_dim = 1 if getattr(module, "transposed", False) else 0
        for dim, idx in keep.items():
            _set(module, "weight", _index(module.weight, dim, idx), in_place)
            if dim == out_dim:
                _set(module, "bias", _index(module.bias, 0, idx), in_place)
        shape = module.weight.shape
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = shape[0], shape[1]
        elif out_dim:
            module.in_channels, module.out_channels = shape[0], shape[1]
        else:
            module.out_channels, module.in_channels = shape[0], shape[1]
    elif isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm)):
        idx = keep[0]
        for name in ("weight", "bias", "running_mean", "running_var"):
            _set(module, name, _index(getattr(module, name, None), 0, idx), in_place)
        if isinstance(module, nn.GroupNorm):
            module.num_channels = module.num_groups = len(idx)
        else:
            module.num_features = len(idx)
    else:
        raise SparsetrainError(f"cannot resize a {type(module).__name__}: only Conv, Linear and channel-wise norms.")


def module_widths(small: nn.Module, source: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module: {"attrs": {...}, "tensors": {name: shape or None}}}`` for every module that changed."""
    before = dict(source.named_modules())
    widths = {}
    for name, module in small.named_modules():
        old = before[name]
        tensors = {**module._parameters, **module._buffers}
        shapes = {k: None if v is None else list(v.shape) for k, v in tensors.items()}
        old_shapes = {k: None if v is None else list(v.shape) for k, v in {**old._parameters, **old._buffers}.items()}
        if shapes != old_shapes or _attrs(module) != _attrs(old):  # an attention with fewer heads: attributes only
            widths[name] = width_entry(module)
    return widths


def width_entry(module: nn.Module) -> dict[str, Any]:
    """One module's entry of a width spec: its type, width attributes and tensor shapes.

    Example:
        >>> width_entry(nn.Linear(4, 3, bias=False))["attrs"]
        {'in_features': 4, 'out_features': 3}
    """
    tensors = {**module._parameters, **module._buffers}
    return {"type": type(module).__name__, "attrs": _attrs(module),
            "tensors": {k: None if v is None else list(v.shape) for k, v in tensors.items()}}


def _attrs(module: nn.Module) -> dict[str, int]:
    return {a: getattr(module, a) for a in _ATTRS if isinstance(getattr(module, a, None), int)}


def _check_spec(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or spec.get("format") != "sparsetrain-width-spec":
        raise SparsetrainError("not a width spec: expected the dict returned by sparsetrain.compact "
                               "(format 'sparsetrain-width-spec').")
    if spec.get("version") != 1:
        raise SparsetrainError(f"width spec version {spec.get('version')!r} is not supported (this sparsetrain "
                               "reads version 1).")
    return spec


def apply_widths(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """Resize the layers of ``model`` (in place) to the widths of ``spec``; weights are left uninitialised."""
    modules = dict(model.named_modules())
    for name, entry in _check_spec(spec)["widths"].items():
        if name not in modules:
            raise SparsetrainError(f"the width spec names layer {name!r}, which {type(model).__name__} does not "
                                   "have: rebuild from the same architecture the model was compacted from.")
        module = modules[name]
        if type(module).__name__ != entry.get("type"):
            raise SparsetrainError(f"the width spec's layer {name!r} is a {entry.get('type')}, but "
                                   f"{type(model).__name__} has a {type(module).__name__} there: rebuild from the "
                                   "architecture the model was compacted from.")
        for attr, value in entry["attrs"].items():
            setattr(module, attr, value)
        for tname, shape in entry["tensors"].items():
            if shape is None:
                continue
            if tname in module._buffers:
                old = module._buffers[tname]
                module._buffers[tname] = torch.zeros(shape, dtype=old.dtype) if old is not None else torch.zeros(shape)
            else:  # a parameter, possibly one the original lacks (a bias created by folding)
                old = module._parameters.get(tname)
                dtype = old.dtype if old is not None else module.weight.dtype
                module._parameters[tname] = nn.Parameter(torch.zeros(shape, dtype=dtype))
    return model


def rebuild(model_or_factory: nn.Module | Callable[[], nn.Module], spec: dict[str, Any],
            state_dict: dict[str, Tensor] | None = None) -> nn.Module:
    """Build the compact model of ``spec`` and load ``state_dict`` into it.

    Args:
        model_or_factory: the original architecture (a module, deep-copied, or a
            zero-argument builder, e.g. ``lambda: create_model("vgg19")``).
        spec: the width spec returned by ``compact``.
        state_dict: the compact model's weights; ``None`` leaves them zero.

    Raises:
        SparsetrainError: a spec that is not one, names unknown layers, or does
            not match the weights (with the first mismatching tensors).
    """
    model = model_or_factory() if not isinstance(model_or_factory, nn.Module) else copy.deepcopy(model_or_factory)
    apply_widths(model, spec)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:400]
            raise SparsetrainError(f"the width spec does not match its weights: {detail}. Use the spec saved "
                                   "with these weights.") from None
    return model


__all__ = ["apply_widths", "module_widths", "rebuild", "resize_module", "width_entry"]
