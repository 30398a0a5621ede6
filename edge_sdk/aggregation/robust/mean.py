"""The plain mean over holders (``none``): today's rule, kept as the default."""

from __future__ import annotations

import torch

from edge_sdk.aggregation.robust._base import MergeRule, register_merge_rule

__all__ = ["Mean"]


@register_merge_rule
class Mean(MergeRule):
    """Weighted mean of the holders' changes. With trusted sample counts and no DP, outlier
    check or dtype problem, the strategy's own merge runs instead (bit-for-bit today's)."""

    name = "none"
    summary = "the weighted mean over the clients holding each coordinate (no defence)"
    weighted = True
    robust = False

    def combine(self, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        held = ~torch.isnan(values)
        w = torch.where(held, weights.to(values.dtype)[:, None], torch.zeros((), dtype=values.dtype))
        return (torch.nan_to_num(values) * w).sum(0) / w.sum(0).clamp_min(1e-30)
