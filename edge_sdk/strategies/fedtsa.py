"""FedTSA (ECCV 2024): capability tiers, in-tier averaging, then mutual learning on server data."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from edge_sdk.strategies._registry import register_strategy
from edge_sdk.strategies.base import Strategy
from edge_sdk.strategies.options import Option

__all__ = ["FedTSA"]


@register_strategy
class FedTSA(Strategy):
    """Each tier trains HeteroFL's nested submodel of its size; stage 1 averages inside a
    tier; stage 2 runs deep mutual learning between the tier models on unlabeled server
    data (the target is the mean of their logits, KL at a temperature); the tier models
    then merge into the global model. ``server_data`` (a
    :class:`edge_sdk.server_data.ServerDataSource`) is given by the driver; None runs
    stage 1 only."""

    name = "fedtsa"
    summary = "tier submodels (HeteroFL slices) + server-side mutual learning between tiers"
    plan_name = "heterofl"
    uses_server_data = True
    robust_scope = "tier"  # robust rules and DP replace stage 1's in-tier mean
    options = (
        Option("steps", int, 20, "mutual-learning steps per round", minimum=1, aliases=("distill-steps",)),
        Option("temperature", float, 3.0, "distillation temperature", positive=True),
        Option("lr", float, 0.01, "mutual-learning learning rate", positive=True),
        Option("batch_size", int, 64, "server batch size of mutual learning", minimum=1),
    )

    def __init__(self, *, seed: int = 0, server_data: Any = None, **options: Any) -> None:
        super().__init__(seed=seed, **options)
        self.server_data = server_data

    @classmethod
    def accepted_plans(cls) -> tuple[str, ...]:
        from edge_sdk.submodel.structured import STRUCTURED_STRATEGIES

        return tuple(STRUCTURED_STRATEGIES)

    def merge_mean(self, global_model: nn.Module, updates: Sequence[Any], *, round: int = 0) -> nn.Module:
        from edge_sdk.aggregation.fedtsa import fedtsa_aggregate

        model, report = fedtsa_aggregate(
            global_model, list(updates), server_data=self.server_data, temperature=self.option("temperature"),
            distill_steps=self.option("steps"), lr=self.option("lr"), batch_size=self.option("batch_size"),
            rng=np.random.default_rng([self.seed, 1231, int(round)]))
        self.last_report = dataclasses.asdict(report)
        return model

    def describe_report(self, report: Mapping[str, Any]) -> str | None:
        line = self._stage_line(report)
        merge = super().describe_report(report)
        return line if merge is None else f"{line}; {merge}"

    def _stage_line(self, report: Mapping[str, Any]) -> str:
        if report.get("stage2"):
            return (f"fedtsa stage 2: {report['distill_steps']} mutual-learning steps over {len(report['tiers'])} "
                    f"tier models, KL {report['kl_first']:.4g} -> {report['kl_last']:.4g}, "
                    f"{report['stage2_seconds']:.2f} s")
        return f"fedtsa stage 2 skipped ({len(report['tiers'])} tier model(s) this round)"
