"""The model registry: ``register_model``, ``list_models``, ``create_model`` (timm style)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from torch import nn

from sparsetrain.core.registry import Registry
from sparsetrain.errors import SparsetrainError

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str):
    """Register a builder ``(num_classes=..., in_channels=..., **kw) -> nn.Module`` under ``name``.

    Example:
        >>> @register_model("tiny_linear")
        ... def tiny_linear(num_classes: int = 10, in_channels: int = 4) -> nn.Module:
        ...     return nn.Linear(in_channels, num_classes)
        >>> create_model("tiny_linear", num_classes=3).out_features
        3
    """
    return MODELS.register(name)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob ``pattern`` (e.g. ``"resnet*"``)."""
    return MODELS.names(pattern)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. ``create_model("resnet20", num_classes=100)``.

    Unknown names raise :func:`sparsetrain.errors.unknown_choice` (with close
    matches); unknown keyword arguments raise a :class:`SparsetrainError`.
    """
    builder = MODELS.get(name)
    params = inspect.signature(builder).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise SparsetrainError(f"model {name!r} has no argument {', '.join(map(repr, unknown))}. "
                               f"Its arguments are: {', '.join(params)}.")
    return builder(**kwargs)


def init_conv_bn(model: nn.Module) -> None:
    """He (fan-out) normal init for convolutions, BatchNorm weight 1 and bias 0 (torchvision's ResNet init)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def model_signature(name: str) -> dict[str, inspect.Parameter]:
    """The builder's parameters (for config validation)."""
    return dict(inspect.signature(MODELS.get(name)).parameters)


def input_kwargs(name: str, input_shape, given: dict | None = None) -> dict[str, int]:
    """Fill the model's input-size arguments from the data's shape unless the config sets them.

    ``in_channels`` from the first dim, ``in_features`` (MLP) from the product,
    ``image_size`` (LeNet-5) and ``context`` (a sequence model's length) from the last dim.

    Example:
        >>> input_kwargs("mlp", (1, 40)), input_kwargs("mlp", (1, 40), {"in_features": 8})
        ({'in_channels': 1, 'in_features': 40}, {'in_channels': 1})
    """
    params, given = model_signature(name), given or {}
    derived = {"in_channels": int(input_shape[0]), "in_features": int(math.prod(input_shape)),
               "image_size": int(input_shape[-1]), "context": int(input_shape[-1])}
    return {k: v for k, v in derived.items() if k in params and given.get(k) is None}
