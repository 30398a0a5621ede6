"""Federated Dropout (Caldas et al., 2018): random channels per client per round.

FedRolex's repository offers it next to its rolling window: every client draws its own
random subset of units in every channel group, fresh each round, so every channel of the
full model is trained by chance rather than by schedule (FedRolex) or by rank (FIARSE).
The whole method is this file: a channel selector and the strategy that uses it.
"""

from __future__ import annotations

import numpy as np

from edge_sdk.strategies._registry import register_strategy
from edge_sdk.strategies.base import Strategy
from edge_sdk.submodel.selectors import ChannelSelector, SelectionContext, register_selector

__all__ = ["RandomChannels", "FedDropout"]


@register_selector("feddropout")
class RandomChannels(ChannelSelector):
    """A uniformly random subset of each channel group, drawn from the plan's rng."""

    name = "feddropout"

    def select(self, ctx: SelectionContext) -> list[np.ndarray]:
        return [np.sort(ctx.rng.choice(size, size=count, replace=False)).astype(np.int64)
                for count, size in zip(ctx.counts, ctx.leaf_sizes)]


@register_strategy
class FedDropout(Strategy):
    """Each client trains a random channel subset of its size, drawn per client and round;
    each element is averaged over the clients that held it. The global model at size r is
    evaluated on one seeded random subset."""

    name = "feddropout"
    summary = "Federated Dropout: random channels per client per round"
    plan_name = "feddropout"
    plans_per_client = True
