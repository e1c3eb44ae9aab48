"""CIFAR VGG-16/19 with BatchNorm, as in the Chase and GraNet repositories (network-slimming layout).

Each entry of the channel list is a 3x3 conv (with bias) + BatchNorm + ReLU;
``"M"`` is 2x2 max pooling. There are four poolings and no fully connected
stack: the 2x2 map is average pooled and a single linear layer classifies.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from sparsetrain.train.models.registry import init_conv_bn, register_model

CFG: dict[int, list[int | str]] = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nn.Module):
    """``features`` from a channel list, global average pooling, ``classifier`` (one linear layer)."""

    def __init__(self, cfg: Sequence[int | str], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        init_conv_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("vgg16")
def vgg16(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """CIFAR VGG-16 with BatchNorm (13 conv layers + 1 linear, 14.7M parameters)."""
    return VGG(CFG[16], num_classes, in_channels)


@register_model("vgg19")
def vgg19(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """CIFAR VGG-19 with BatchNorm (16 conv layers + 1 linear, 20.0M parameters)."""
    return VGG(CFG[19], num_classes, in_channels)
