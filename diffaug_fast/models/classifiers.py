"""Image classifiers for DiffAug training: small pre-activation ResNets / WideResNets for 28x28 and
32x32 inputs, and any torchvision classification model by name (models/torchvision_models.py). Any
``nn.Module`` mapping ``[B, C, H, W]`` to logits works with the trainer; these are conveniences.

``norm="group"`` swaps BatchNorm for GroupNorm: no dependence on the batch, so data-parallel runs
give the same result as one process without synchronized statistics.
"""
from __future__ import annotations

from torch import nn

from diffaug_fast.models.torchvision_models import build_torchvision, close_matches, torchvision_names


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"argument 'norm' is {kind!r}; expected 'batch' or 'group'")


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = norm_layer(norm, cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm2, self.conv2 = norm_layer(norm, cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None)

    def forward(self, x):
        h = self.norm1(x).relu()
        skip = x if self.shortcut is None else self.shortcut(h)
        h = self.conv1(h)
        h = self.conv2(self.dropout(self.norm2(h).relu()))
        return h + skip


class PreActResNet(nn.Module):
    """Stem conv, three stages (stride 1, 2, 2) of pre-activation blocks, global average pool, linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths=(16, 32, 64), blocks: int = 1,
                 norm: str = "batch", dropout: float = 0.0):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers, cin = [], widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks):
                layers.append(PreActBlock(cin, width, 2 if stage > 0 and b == 0 else 1, norm, dropout))
                cin = width
        self.blocks = nn.Sequential(*layers)
        self.head_norm = norm_layer(norm, cin)
        self.fc = nn.Linear(cin, num_classes)

    def features(self, x):
        """Pooled features before the linear head [B, widths[-1]]."""
        return self.head_norm(self.blocks(self.stem(x))).relu().mean((2, 3))

    def forward(self, x):
        return self.fc(self.features(x))


def wide_resnet(depth: int = 16, widen: int = 4, num_classes: int = 10, in_channels: int = 1,
                dropout: float = 0.0, norm: str = "batch") -> PreActResNet:
    """WRN-depth-widen (Zagoruyko & Komodakis): (depth - 4) / 6 blocks per stage, widths 16k, 32k, 64k."""
    if (depth - 4) % 6:
        raise ValueError(f"wide_resnet(): argument 'depth' must be 6n + 4, got {depth}")
    return PreActResNet(num_classes, in_channels, (16 * widen, 32 * widen, 64 * widen), (depth - 4) // 6,
                        norm, dropout)


CLASSIFIERS = ("resnet-small", "resnet-medium", "wrn-16-4", "wrn-28-10")  # ours; any torchvision name works too


def build_classifier(name: str = "resnet-small", *, num_classes: int = 10, in_channels: int = 1,
                     image_size: int = 28, norm: str = "batch") -> nn.Module:
    """A classifier by name: one of ``CLASSIFIERS`` (ours) or any torchvision.models classifier (resnet50,
    vit_b_16, convnext_tiny, ...: see models/torchvision_models.py). ``norm`` applies to ours only."""
    if name == "resnet-small":  # 78 k parameters: the 2-core CPU default
        return PreActResNet(num_classes, in_channels, (16, 32, 64), 1, norm)
    if name == "resnet-medium":  # 0.3 M parameters
        return PreActResNet(num_classes, in_channels, (32, 64, 128), 1, norm)
    if name == "wrn-16-4":
        return wide_resnet(16, 4, num_classes, in_channels, norm=norm)
    if name == "wrn-28-10":
        return wide_resnet(28, 10, num_classes, in_channels, norm=norm)
    if name in torchvision_names():
        if norm != "batch":
            raise ValueError(f"argument 'norm' is {norm!r}: torchvision's {name} keeps its own normalisation layers "
                             f"(norm 'group' is for {', '.join(CLASSIFIERS)})")
        return build_torchvision(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    raise ValueError(f"unknown classifier {name!r}; {close_matches(name, CLASSIFIERS)}")
