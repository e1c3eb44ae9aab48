"""Small models: the LeNet-300-100 MLP, LeNet-5 and a 1D CNN for MNIST-1D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sparsetrain.train.models.registry import register_model


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs (LeNet-300-100 by default)."""

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (300, 100), num_classes: int = 10) -> None:
        super().__init__()
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x.flatten(1)))


@register_model("mlp")
def mlp(num_classes: int = 10, in_channels: int = 1, in_features: int | None = None,
        hidden: Sequence[int] = (300, 100)) -> MLP:
    """LeNet-300-100 style MLP: ``in_features`` -> ``hidden`` -> ``num_classes`` (default 784-300-100-10).

    ``in_features`` defaults to ``in_channels * 28 * 28`` (MNIST-sized images);
    pass it explicitly for other inputs (40 for MNIST-1D, 3072 for CIFAR).

    Example:
        >>> [m.out_features for m in mlp().modules() if isinstance(m, nn.Linear)]
        [300, 100, 10]
    """
    return MLP(in_features or in_channels * 28 * 28, tuple(hidden), num_classes)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, for 28x28 or 32x32 images."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = ((image_size // 2) - 4) // 2
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


@register_model("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> LeNet5:
    """LeNet-5: conv 6@5x5 (padded) - pool - conv 16@5x5 - pool - 120 - 84 - ``num_classes``.

    ``image_size`` is the side of the square input (28 for MNIST, 32 for CIFAR).
    """
    return LeNet5(num_classes, in_channels, image_size)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]


class CNN1d(nn.Module):
    """Four conv1d-BN-ReLU layers, global average pooling, a linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        half = width // 2
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, half, 5, 1),
            *_conv_bn_relu(half, width, 3, 2),
            *_conv_bn_relu(width, width, 3, 1),
            *_conv_bn_relu(width, width, 3, 2),
            nn.AdaptiveAvgPool1d(1),
        )
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # (N, L) -> (N, 1, L)
            x = x.unsqueeze(1)
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model("cnn1d")
def cnn1d(num_classes: int = 10, in_channels: int = 1, width: int = 64) -> CNN1d:
    """1D CNN for MNIST-1D: input ``(N, 1, 40)`` or ``(N, 40)``; 32-64-64-64 channels, 32k weights.

    Dense, it reaches about 98-99 % test accuracy on MNIST-1D's default
    4000/1000 split after 30 epochs of SGD (batch 128, lr 0.1 cosine, Nesterov,
    wd 5e-4): 98.7 % in 30-80 s on 2 shared CPU cores (MNIST-1D paper CNN: ~94 %).
    """
    return CNN1d(num_classes, in_channels, width)
