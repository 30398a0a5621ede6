"""FedRolex (NeurIPS 2022): a rolling window of channels, the second baseline."""

from __future__ import annotations

from edge_sdk.strategies._registry import register_strategy
from edge_sdk.strategies.base import Strategy

__all__ = ["FedRolex"]


@register_strategy
class FedRolex(Strategy):
    """A window of consecutive channels (cyclic) that moves by one channel each round, so
    every channel of the full model is trained evenly over time."""

    name = "fedrolex"
    summary = "baseline: a rolling window of channels, one channel a round"
    plan_name = "fedrolex"
