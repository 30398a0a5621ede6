"""HeteroFL (ICLR 2021): static leftmost-channel slices, the first baseline."""

from __future__ import annotations

from edge_sdk.strategies._registry import register_strategy
from edge_sdk.strategies.base import Strategy

__all__ = ["HeteroFL"]


@register_strategy
class HeteroFL(Strategy):
    """Every client of size r holds the leftmost fraction of each channel group (nested)."""

    name = "heterofl"
    summary = "baseline: static leftmost-channel slices"
    plan_name = "heterofl"
