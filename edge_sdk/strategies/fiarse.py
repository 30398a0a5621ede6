"""FIARSE (NeurIPS 2024): importance-aware submodels at parameter level."""

from __future__ import annotations

from typing import Any

from edge_sdk.strategies._registry import register_strategy
from edge_sdk.strategies.base import Strategy
from edge_sdk.strategies.options import Option

__all__ = ["Fiarse"]


@register_strategy
class Fiarse(Strategy):
    """One global magnitude threshold keeps the top-k of all conv/linear weights and biases;
    masks come from the current global model each round, so sizes are nested; each element
    is averaged over the clients that hold it."""

    name = "fiarse"
    summary = "parameter-level top-k magnitude masks, per-element mean over holders"
    plan_name = "fiarse"
    options = (
        Option("gradient", str, "surrogate", "gradient of the masked weights: the paper's surrogate (default) "
               "or the hard mask's (the released code)", choices=("surrogate", "hard")),
        Option("scope", str, "global", "one top-k threshold over all layers (the paper's) or one per layer",
               choices=("global", "layer")),
    )

    def plan_options(self) -> dict[str, Any]:
        scope = self.option("scope")
        return {} if scope == "global" else {"scope": scope}

    def train_options(self) -> dict[str, Any]:
        return {"fiarse_gradient": self.option("gradient")}
