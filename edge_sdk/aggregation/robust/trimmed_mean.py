"""Coordinate-wise trimmed mean over the clients that hold each coordinate."""

from __future__ import annotations

import math

import torch

from edge_sdk.aggregation.robust._base import MergeRule, _positive_param, register_merge_rule
from edge_sdk.aggregation.robust._order import sorted_holders

__all__ = ["TrimmedMean"]


@register_merge_rule
class TrimmedMean(MergeRule):
    """Drop the floor(beta * k) smallest and largest of a coordinate's k holders' changes and
    average the rest (unweighted). A coordinate with fewer than ceil(1/beta) holders would
    trim nothing, so it falls back."""

    name = "trimmed-mean"
    summary = "coordinate-wise trimmed mean over the holders (BETA trimmed per side, default 0.2)"
    param_help = "fraction trimmed from each side, 0 < BETA < 0.5"
    default_beta = 0.2

    def check_param(self, param: float | None) -> float | None:
        return _positive_param(self.name, param, below=0.5)

    @property
    def beta(self) -> float:
        return self.default_beta if self.param is None else self.param

    def min_holders(self) -> int:
        return max(3, math.ceil(1.0 / self.beta - 1e-9))

    def combine(self, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ordered, count = sorted_holders(values)
        trim = torch.floor(count.to(torch.float64) * self.beta).to(torch.int64)
        csum = torch.cat([torch.zeros_like(ordered[:1]), ordered.cumsum(0)])  # read below count only
        upper = csum.gather(0, (count - trim)[None])[0]
        lower = csum.gather(0, trim[None])[0]
        return (upper - lower) / (count - 2 * trim).clamp_min(1).to(values.dtype)
