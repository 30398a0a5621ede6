"""A small 1-d CNN for MNIST-1D-like signals (Conv1d/BatchNorm1d/ReLU/Flatten/Linear only)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CNN1D", "conv1d_out_length"]


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
