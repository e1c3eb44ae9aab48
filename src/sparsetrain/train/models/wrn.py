"""Wide ResNets (Zagoruyko & Komodakis 2016) for CIFAR: WRN-28-2, the RigL CIFAR model.

Pre-activation basic blocks (BN-ReLU-conv twice), widths 16, 16k, 32k, 64k,
(depth - 4) / 6 blocks per stage, 1x1 projection shortcuts where the shape
changes, optional dropout between the two convolutions.
"""

from __future__ import annotations

from torch import Tensor, nn

from sparsetrain.train.models.registry import init_conv_bn, register_model


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3 (stride), [dropout], BN-ReLU-conv3x3, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.dropout(self.conv1(pre)))))
        # the projection reads the pre-activated input, as in the reference WRN code
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-``depth``-``k``: 3x3 stem with 16 channels, three stages, BN-ReLU, pool, linear."""

    def __init__(self, depth: int = 28, k: int = 2, num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 22, 28, 40), got {depth}.")
        n = (depth - 4) // 6
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages, cin = [], 16
        for i, cout in enumerate((16 * k, 32 * k, 64 * k)):
            blocks = []
            for j in range(n):
                blocks.append(WideBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1, dropout=dropout))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_conv_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv(x))))
        return self.fc(self.pool(self.relu(self.bn(out))).flatten(1))


@register_model("wrn28_2")
def wrn28_2(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """WRN-28-2 (1.47M parameters), the model of RigL's CIFAR-10 experiments."""
    return WideResNet(28, 2, num_classes, in_channels, dropout)
