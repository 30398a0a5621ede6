"""Channel-level importance extraction (ours): physically smaller dense submodels."""

from __future__ import annotations

from edge_sdk.strategies._registry import register_strategy
from edge_sdk.strategies.base import Strategy

__all__ = ["FiarseStructured"]


@register_strategy
class FiarseStructured(Strategy):
    """Keep the output channels / neurons / heads of largest importance (squared L2 norm of
    every coupled weight entry), the same fraction in every channel group."""

    name = "fiarse-structured"
    summary = "channel-level importance: a smaller dense submodel (faster on a CPU)"
    plan_name = "fiarse-structured"
