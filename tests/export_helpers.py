"""Small data and models shared by the export tests (not a test module)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 (N, 1, 8, 8) in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 6) -> nn.Module:
    """A few epochs of Adam on (x, y), deterministic (seed 0, one thread); returns the model in eval mode."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()
