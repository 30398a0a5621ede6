"""CIFAR-style ResNets (3x3 stem, no max-pool, BasicBlocks)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from edge_sdk.errors import InvalidInputError

__all__ = ["BasicBlock", "ResNet", "make_norm2d", "NORMS"]

NORMS = ("batch", "group", "none")


def make_norm2d(norm: str, track_running_stats: bool = True) -> Callable[[int], nn.Module]:
    """Factory for the 2-d normalisation layer after each convolution.

    ``group`` uses ``gcd(channels, 32)`` groups so that any width works.
    """
    if norm == "batch":
        return lambda c: nn.BatchNorm2d(c, track_running_stats=track_running_stats)
    if norm == "group":
        return lambda c: nn.GroupNorm(math.gcd(c, 32), c)
    if norm == "none":
        return lambda c: nn.Identity()
    raise InvalidInputError(f"norm={norm!r} is not accepted; expected one of {', '.join(NORMS)}")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; 1x1 conv + norm shortcut when the shape changes."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        norm_layer: Callable[[int], nn.Module] | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or (lambda c: nn.BatchNorm2d(c))
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=bias)
        self.bn1 = norm_layer(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=bias)
        self.bn2 = norm_layer(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, 0, bias=bias), norm_layer(planes)
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv -> stages of BasicBlocks (first block of stage i>0 has stride 2) -> pool -> fc."""

    def __init__(
        self,
        stage_channels: Sequence[int],
        blocks_per_stage: int,
        num_classes: int = 10,
        in_channels: int = 3,
        norm: str = "batch",
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        norm_layer = make_norm2d(norm, track_running_stats)
        bias = norm == "none"
        c0 = stage_channels[0]
        self.conv1 = nn.Conv2d(in_channels, c0, 3, 1, 1, bias=bias)
        self.bn1 = norm_layer(c0)
        self.relu = nn.ReLU()
        stages = []
        in_planes = c0
        for i, planes in enumerate(stage_channels):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, norm_layer, bias))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.avgpool(x)))
