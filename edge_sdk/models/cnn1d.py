"""A small 1-d CNN for MNIST-1D-like signals (Conv1d/BatchNorm1d/ReLU/Flatten/Linear only)."""

from __future__ import annotations

import torch
from torch import nn

from edge_sdk.errors import InvalidInputError
from edge_sdk.models._base import (
    ModelConfig,
    Options,
    check_bool,
    check_choice,
    check_positive_int,
    scaled,
)
from edge_sdk.models._registry import register_model
from edge_sdk.models.analytic import Term, conv_term, linear_term

__all__ = ["CNN1D", "conv1d_out_length", "CNN1D_BASE"]

CNN1D_BASE = 32  # channels at width 1


def conv1d_out_length(length: int, kernel_size: int, stride: int = 2) -> int:
    """Output length of a ``padding=kernel_size//2`` convolution."""
    pad = kernel_size // 2
    return (length + 2 * pad - kernel_size) // stride + 1


class CNN1D(nn.Module):
    """``depth`` x [Conv1d(k, stride 2, same-pad) -> norm -> ReLU], Flatten, Linear."""

    def __init__(
        self,
        channels: int = 32,
        depth: int = 3,
        num_classes: int = 10,
        in_channels: int = 1,
        length: int = 40,
        kernel_size: int = 5,
        norm: str = "batch",
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, n = in_channels, length
        for _ in range(depth):
            layers.append(
                nn.Conv1d(c_in, channels, kernel_size, 2, kernel_size // 2, bias=norm == "none")
            )
            if norm == "batch":
                layers.append(nn.BatchNorm1d(channels, track_running_stats=track_running_stats))
            layers.append(nn.ReLU())
            c_in, n = channels, conv1d_out_length(n, kernel_size)
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels * n, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.features(x)))


def _check(name: str, o: Options) -> Options:
    k = check_positive_int(name, "kernel_size", o["kernel_size"])
    if k % 2 == 0:
        raise InvalidInputError(f"{name}: kernel_size={k} is not accepted; expected an odd integer")
    return {
        "in_channels": check_positive_int(name, "in_channels", o["in_channels"]),
        "length": check_positive_int(name, "length", o["length"]),
        "kernel_size": k,
        "norm": check_choice(name, "norm", o["norm"], ("batch", "none")),
        "track_running_stats": check_bool(name, "track_running_stats", o["track_running_stats"]),
    }


def _flops(cfg: ModelConfig, b: int) -> list[Term]:
    c = scaled(CNN1D_BASE, cfg.width)
    k = cfg.options["kernel_size"]
    c_in, length = cfg.input_shape
    terms = []
    for i in range(cfg.depth):
        length = conv1d_out_length(length, k)
        terms.append(conv_term(f"features.{i}", b, length, c, c_in, k, first=i == 0))
        c_in = c
    terms.append(linear_term("fc", b, c * length, cfg.num_classes))
    return terms


@register_model(
    "cnn1d",
    description="1-d CNN for MNIST-1D: Conv1d(k5, stride 2)+BN+ReLU layers at 32 ch, Linear",
    default_depth=3,
    defaults={"in_channels": 1, "length": 40, "kernel_size": 5, "norm": "batch",
              "track_running_stats": True},
    input_shape=lambda o: (o["in_channels"], o["length"]),
    check=_check,
    flops=_flops,
)  # fmt: skip
def cnn1d(cfg: ModelConfig) -> CNN1D:
    return CNN1D(scaled(CNN1D_BASE, cfg.width), cfg.depth, cfg.num_classes, **cfg.options)
