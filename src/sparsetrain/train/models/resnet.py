"""ResNet-18/34/50 (He et al. 2016) with a CIFAR stem (default) or the ImageNet stem.

``stem="cifar"``: one 3x3 stride-1 convolution, no max pooling (the
kuangliu / GraNet / Chase CIFAR ResNets, 11.2M parameters for ResNet-18 at 10
classes). ``stem="imagenet"``: 7x7 stride-2 convolution and 3x3 stride-2 max
pooling (torchvision's layout). Projection shortcuts are 1x1 conv + BatchNorm.
"""

from __future__ import annotations

from torch import Tensor, nn

from sparsetrain.errors import unknown_choice
from sparsetrain.train.models.registry import init_conv_bn, register_model
from sparsetrain.train.models.resnet_cifar import BasicBlock, shortcut

STEMS = ("cifar", "imagenet")


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, residual connection."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _stem(stem: str, in_channels: int) -> nn.Sequential:
    if stem == "cifar":
        return nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                             nn.ReLU(inplace=True))
    if stem == "imagenet":
        return nn.Sequential(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                             nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
    raise unknown_choice("stem", stem, STEMS)


class ResNet(nn.Module):
    """Stem, four stages (64, 128, 256, 512 planes), global average pooling, linear classifier."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], num_blocks: tuple[int, int, int, int],
                 num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> None:
        super().__init__()
        self.stem = _stem(stem, in_channels)
        cin, stages = 64, []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, stride=2 if (i > 0 and j == 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_conv_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stem(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(self.pool(out).flatten(1))


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> ResNet:
    """ResNet-18: basic blocks [2, 2, 2, 2] (11.2M parameters at 10 classes)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, stem)


@register_model("resnet34")
def resnet34(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> ResNet:
    """ResNet-34: basic blocks [3, 4, 6, 3] (21.3M parameters at 10 classes)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, stem)


@register_model("resnet50")
def resnet50(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> ResNet:
    """ResNet-50: bottleneck blocks [3, 4, 6, 3] (23.5M parameters at 10 classes)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, stem)
