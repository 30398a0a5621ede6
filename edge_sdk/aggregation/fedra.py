"""The FedRA rule: each block's adapters averaged over the clients that trained them this
round (sample-weighted), the head over all clients; the frozen backbone never changes."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from edge_sdk.aggregation.rules import per_element
from edge_sdk.training import Update

__all__ = ["aggregate_fedra"]


def aggregate_fedra(global_model: nn.Module, updates: Sequence[Update]) -> nn.Module:
    """FedRA updates carry only adapters of their drawn blocks and the head, so the
    per-element mean over holders is exactly FedRA's per-block average."""
    return per_element(global_model, updates, "fedra")
