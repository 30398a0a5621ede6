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
        Option("gradient", str, "surrogate", "gradient of the masked weights: surrogate = surrogate gradient "
               "(paper), hard = hard mask (released code)", choices=("surrogate", "hard")),
        Option("scope", str, "global", "one top-k threshold over all layers (the paper's) or one per layer",
               choices=("global", "layer")),
        Option("budget", str, "maskable", "size budget: maskable = int(ratio x conv/linear weights and biases) "
               "held, norm layers on top (released code); all = the held share of all parameters is the ratio",
               choices=("maskable", "all")),
    )

    def plan_options(self) -> dict[str, Any]:
        out = {}
        if self.option("scope") != "global":
            out["scope"] = self.option("scope")
        if self.option("budget") != "maskable":
            out["budget"] = self.option("budget")
        return out

    def train_options(self) -> dict[str, Any]:
        return {"fiarse_gradient": self.option("gradient")}
