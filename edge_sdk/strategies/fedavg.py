"""FedAvg: every client trains the whole model (the ceiling, and a plumbing check)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

from torch import nn

from edge_sdk.strategies._registry import register_strategy
from edge_sdk.strategies.base import Strategy

__all__ = ["FedAvg"]

K = TypeVar("K", bound=Hashable)


@register_strategy
class FedAvg(Strategy):
    """Whole-model training and the sample-weighted mean; tiers are ignored."""

    name = "fedavg"
    summary = "every client trains the whole model (the accuracy ceiling)"
    plan_name = None

    def sizes(self, ratios: Mapping[K, float]) -> dict[K, float]:
        return {k: 1.0 for k in ratios}

    def merge_mean(self, global_model: nn.Module, updates: Sequence[Any], *, round: int = 0) -> nn.Module:
        from edge_sdk.aggregation.rules import fedavg

        return fedavg(global_model, list(updates), rule=self.name)
