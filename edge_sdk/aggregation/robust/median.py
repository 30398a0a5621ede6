"""Coordinate-wise median over the clients that hold each coordinate."""

from __future__ import annotations

import torch

from edge_sdk.aggregation.robust._base import MergeRule, register_merge_rule
from edge_sdk.aggregation.robust._order import sorted_holders

__all__ = ["Median"]


@register_merge_rule
class Median(MergeRule):
    """The median of the holders' changes (mean of the two middle ones for an even count).
    Unweighted: a reported sample count cannot move it. Fewer than 3 holders fall back (with
    2 the median is their mean, which one attacker controls)."""

    name = "median"
    summary = "coordinate-wise median over the holders"

    def min_holders(self) -> int:
        return 3

    def combine(self, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ordered, count = sorted_holders(values)
        lo = ((count - 1) // 2).clamp_min(0)[None]
        hi = (count // 2)[None]
        return (ordered.gather(0, lo) + ordered.gather(0, hi))[0] / 2
