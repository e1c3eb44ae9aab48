"""Reference models for the trainer and benchmarks (pure torch, no torchvision).

Every builder takes ``num_classes`` and ``in_channels`` and returns a plain
``nn.Module`` that outputs logits ``(N, num_classes)`` (``gpt``, a language
model, takes ``context`` and outputs ``(N, time, vocabulary)``)::

    from sparsetrain.train.models import create_model, list_models
    net = create_model("resnet20", num_classes=100)
"""

from sparsetrain.train.models import gpt, resnet, resnet_cifar, small, vgg, wrn  # noqa: F401  (registration)
from sparsetrain.train.models.registry import create_model, input_kwargs, list_models, model_signature, register_model

__all__ = ["create_model", "input_kwargs", "list_models", "model_signature", "register_model"]
