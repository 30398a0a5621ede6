"""CIFAR-style ResNets (3x3 stem, no max-pool, BasicBlocks)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from edge_sdk.errors import InvalidInputError
from edge_sdk.models._base import (
    ModelConfig,
    Options,
    check_bool,
    check_choice,
    check_positive_int,
    image_input_shape,
    scaled,
)
from edge_sdk.models._registry import register_model
from edge_sdk.models.analytic import Term, conv_term, linear_term

__all__ = ["BasicBlock", "ResNet", "make_norm2d", "NORMS", "stage_channels"]

NORMS = ("batch", "group", "none")
RESNET18_BASE = (64, 128, 256, 512)  # stage channels at width 1
RESNET8_BASE = (16, 32, 64)


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


def stage_channels(base: Sequence[int], width: float) -> tuple[int, ...]:
    """Stage channel counts of a ResNet at ``width``."""
    return tuple(scaled(c, width) for c in base)


def _check(name: str, o: Options) -> Options:
    return {
        "in_channels": check_positive_int(name, "in_channels", o["in_channels"]),
        "img_size": check_positive_int(name, "img_size", o["img_size"]),
        "norm": check_choice(name, "norm", o["norm"], NORMS),
        "track_running_stats": check_bool(name, "track_running_stats", o["track_running_stats"]),
    }


def _flops(base: Sequence[int], cfg: ModelConfig, b: int) -> list[Term]:
    chans = stage_channels(base, cfg.width)
    c_in, size, _ = cfg.input_shape
    terms = [conv_term("conv1", b, size * size, chans[0], c_in, 9, first=True)]
    c_in = chans[0]
    for i, planes in enumerate(chans):
        for j in range(cfg.depth):
            stride = 2 if (i > 0 and j == 0) else 1
            out = (size - 1) // stride + 1  # 3x3 pad 1 and 1x1 pad 0 give the same size
            p = f"layers.{i}.{j}"
            terms.append(conv_term(f"{p}.conv1", b, out * out, planes, c_in, 9))
            terms.append(conv_term(f"{p}.conv2", b, out * out, planes, planes, 9))
            if stride != 1 or c_in != planes:
                terms.append(conv_term(f"{p}.shortcut.0", b, out * out, planes, c_in, 1))
            c_in, size = planes, out
    terms.append(linear_term("fc", b, c_in, cfg.num_classes))
    return terms


def _build(base: Sequence[int], cfg: ModelConfig) -> ResNet:
    o = cfg.options
    return ResNet(
        stage_channels(base, cfg.width),
        cfg.depth,
        cfg.num_classes,
        in_channels=o["in_channels"],
        norm=o["norm"],
        track_running_stats=o["track_running_stats"],
    )


# both ResNets take the same options
_register_resnet = partial(
    register_model,
    defaults={"in_channels": 3, "img_size": 32, "norm": "batch", "track_running_stats": True},
    input_shape=image_input_shape,
    check=_check,
)


@_register_resnet(
    "resnet18",
    description="CIFAR-style ResNet-18: 3x3 stem, BasicBlocks [2,2,2,2] at 64/128/256/512",
    default_depth=2,
    flops=partial(_flops, RESNET18_BASE),
)
def resnet18(cfg: ModelConfig) -> ResNet:
    return _build(RESNET18_BASE, cfg)


@_register_resnet(
    "resnet8",
    description="CIFAR ResNet-8: 3x3 stem, 3 stages of 1 BasicBlock at 16/32/64",
    default_depth=1,
    flops=partial(_flops, RESNET8_BASE),
)
def resnet8(cfg: ModelConfig) -> ResNet:
    return _build(RESNET8_BASE, cfg)
