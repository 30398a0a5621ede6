"""Server-side strategies, one small class per rule over a shared base (no Flower import).

A strategy decides, for one round, each node's plan from its assigned size, what tensors go
to the node, how the updates are merged, and what model stands for a tier at the end (for
evaluation and export). The Flower plumbing (messages, timeouts, late joiners) lives in
:mod:`edge_sdk.flower.server` and is the same for every rule.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import InvalidInputError, MissingDependencyError, UnknownNameError
from edge_sdk.flower.codec import Payload, payload_tensors
from edge_sdk.flower.config import RunSettings
from edge_sdk.submodel._plan import SubmodelPlan

__all__ = [
    "HeteroStrategy",
    "FiarseStrategy",
    "FiarseStructuredStrategy",
    "HeteroFLStrategy",
    "FedRolexStrategy",
    "FedRAStrategy",
    "FedTSAStrategy",
    "FedAvgStrategy",
    "STRATEGIES",
    "strategy_names",
    "make_strategy",
]


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


class HeteroStrategy:
    """Shared base: per-tier plans of ``edge_sdk.submodel.plan(plan_strategy, ...)``, payloads of
    the held tensors, merge with ``edge_sdk.aggregation.aggregate(..., rule)``."""

    name: ClassVar[str] = ""
    plan_strategy: ClassVar[str | None] = None  # None: the node holds the whole model
    rule: ClassVar[str] = ""
    fill: ClassVar[str] = "held"

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings

    # ---- availability -------------------------------------------------------------------
    @classmethod
    def available(cls) -> bool:
        """Whether the SDK pieces this rule needs are installed."""
        from edge_sdk.aggregation import rule_names

        return cls.rule in rule_names()

    @classmethod
    def require(cls) -> None:
        if not cls.available():
            raise MissingDependencyError(f"strategy {cls.name!r} is not available in this build: "
                                         f"edge_sdk.aggregation has no {cls.rule!r} rule")

    # ---- the model ----------------------------------------------------------------------
    def build_global(self) -> nn.Module:
        """The initial global model (seeded by the run's seed)."""
        from edge_sdk import models

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            model = models.create(self.settings.model, **self.settings.model_options)
        return self.prepare_global(model)

    def prepare_global(self, model: nn.Module) -> nn.Module:
        """Hook for rules that change the global model once before round 1."""
        return model

    # ---- plans --------------------------------------------------------------------------
    def sizes(self, ratios: Mapping[int, float]) -> dict[int, float]:
        """The size each node trains this round (its tier's ratio, or 1 for FedAvg)."""
        return {n: float(r) for n, r in ratios.items()}

    def plan_for(self, global_model: nn.Module, ratio: float, *, round: int) -> SubmodelPlan | None:
        from edge_sdk import submodel

        if self.plan_strategy is None:
            return None
        return submodel.plan(self.plan_strategy, global_model, float(ratio), round=round)

    def make_plans(self, global_model: nn.Module, ratios: Mapping[int, float], *, round: int,
                   rng: np.random.Generator) -> dict[int, SubmodelPlan | None]:
        """One plan per node; nodes of equal size share one plan object (one payload)."""
        by_ratio: dict[float, SubmodelPlan | None] = {}
        out: dict[int, SubmodelPlan | None] = {}
        for node, ratio in sorted(self.sizes(ratios).items()):
            if ratio not in by_ratio:
                by_ratio[ratio] = self.plan_for(global_model, ratio, round=round)
            out[node] = by_ratio[ratio]
        return out

    def payload(self, plan: SubmodelPlan | None, global_model: nn.Module, *, round: int,
                meta: Mapping[str, Any] | None = None) -> Payload:
        """What a node holding ``plan`` receives."""
        return Payload(self.name, round, self.settings.model, dict(self.settings.model_options), plan,
                       payload_tensors(plan, global_model, self.fill), dict(meta or {}), self.fill)

    # ---- merge --------------------------------------------------------------------------
    last_aggregation: dict[str, Any] | None = None  # what the last merge did, for rules that say

    def aggregate(self, global_model: nn.Module, updates: Sequence[Any], *, round: int = 0) -> nn.Module:
        """Merge ``updates`` (of round ``round``) into ``global_model``."""
        from edge_sdk.aggregation import aggregate

        return aggregate(global_model, list(updates), self.rule)

    # ---- the end ------------------------------------------------------------------------
    def export_size(self, ratio: float) -> float:
        """The size whose model is exported for nodes that train size ``ratio``."""
        return float(ratio)

    def tier_model(self, global_model: nn.Module, ratio: float, *, round: int) -> nn.Module:
        """A plain module standing for size ``ratio`` of the final global model (for export):
        the extracted submodel, with FIARSE's unheld weights zeroed."""
        plan = self.plan_for(global_model, ratio, round=round)
        if plan is None:
            return global_model
        sub = plan.extract(global_model)
        dense = getattr(sub, "dense", None)
        return dense() if callable(dense) else sub


class FiarseStrategy(HeteroStrategy):
    """FIARSE: parameter-level top-k magnitude masks, per-element averaging."""

    name = "fiarse"
    plan_strategy = "fiarse"
    rule = "fiarse"


class FiarseStructuredStrategy(HeteroStrategy):
    """Channel-level importance extraction: physically smaller dense submodels."""

    name = "fiarse-structured"
    plan_strategy = "fiarse-structured"
    rule = "fiarse-structured"


class HeteroFLStrategy(HeteroStrategy):
    """HeteroFL: static leftmost-channel slices."""

    name = "heterofl"
    plan_strategy = "heterofl"
    rule = "heterofl"


class FedRolexStrategy(HeteroStrategy):
    """FedRolex: a rolling window of channels, one channel a round."""

    name = "fedrolex"
    plan_strategy = "fedrolex"
    rule = "fedrolex"


class FedAvgStrategy(HeteroStrategy):
    """FedAvg: every node trains the whole model (the ceiling, and a plumbing check)."""

    name = "fedavg"
    plan_strategy = None
    rule = "fedavg"

    def sizes(self, ratios: Mapping[int, float]) -> dict[int, float]:
        return {n: 1.0 for n in ratios}


class FedRAStrategy(HeteroStrategy):
    """FedRA: each node gets a fresh random set of ceil(c x depth) blocks every round and
    trains LoRA adapters on them (the backbone stays frozen)."""

    name = "fedra"
    plan_strategy = "fedra"
    rule = "fedra"
    fill = "state"  # the node needs its frozen blocks too, not only what it uploads

    @classmethod
    def available(cls) -> bool:
        return all(_has_module(m) for m in ("edge_sdk.submodel.fedra", "edge_sdk.aggregation.fedra")) \
            and super().available()

    def prepare_global(self, model: nn.Module) -> nn.Module:
        if not isinstance(getattr(model, "blocks", None), (nn.Sequential, nn.ModuleList)):
            raise InvalidInputError(f"strategy fedra needs a model whose body is a 'blocks' stack "
                                    f"(e.g. vit_tiny, mixer_tiny); {self.settings.model!r} has none")
        from edge_sdk.submodel.lora import add_lora, lora_rank_of

        if lora_rank_of(model.blocks, self.settings.lora_rank) is None:
            gen = torch.Generator().manual_seed(self.settings.seed)
            add_lora(model.blocks, self.settings.lora_rank, generator=gen)
        return model

    def plan_for(self, global_model: nn.Module, ratio: float, *, round: int) -> SubmodelPlan | None:
        from edge_sdk.submodel import plan_fedra

        rng = np.random.default_rng([self.settings.seed, 4241, round])
        return plan_fedra(global_model, [float(ratio)], rng=rng, lora_rank=self.settings.lora_rank, round=round)[0]

    def make_plans(self, global_model: nn.Module, ratios: Mapping[int, float], *, round: int,
                   rng: np.random.Generator) -> dict[int, SubmodelPlan | None]:
        from edge_sdk.submodel import plan_fedra

        nodes = sorted(ratios)
        plans = plan_fedra(global_model, [float(ratios[n]) for n in nodes], rng=rng,
                           lora_rank=self.settings.lora_rank, round=round)
        return dict(zip(nodes, plans))

    def export_size(self, ratio: float) -> float:
        return 1.0  # FedRA trains adapters on block subsets; every node runs the whole model

    def tier_model(self, global_model: nn.Module, ratio: float, *, round: int) -> nn.Module:
        return global_model


class FedTSAStrategy(HeteroStrategy):
    """FedTSA: capability clusters, one submodel size per cluster (HeteroFL's nested
    submodels), in-cluster averaging, then server-side mutual distillation between the tier
    models on the data named by run config ``server-data`` (required: without it the rule
    would silently be stage 1 only). Options: ``fedtsa-steps``, ``fedtsa-temperature``,
    ``fedtsa-lr``, ``fedtsa-batch-size``."""

    name = "fedtsa"
    plan_strategy = "heterofl"
    rule = "fedtsa"

    @classmethod
    def available(cls) -> bool:
        return all(_has_module(m) for m in ("edge_sdk.server_data", "edge_sdk.aggregation.fedtsa")) \
            and super().available()

    def __init__(self, settings: RunSettings) -> None:
        super().__init__(settings)
        from edge_sdk import datasets
        from edge_sdk.flower.config import SERVER_DATA_FORMS
        from edge_sdk.flower.serverdata import load_server_data

        spec = settings.server_data_spec()
        if spec is None:
            forms = SERVER_DATA_FORMS.format(names=", ".join(datasets.names()))
            raise InvalidInputError("config server-data is empty; strategy 'fedtsa' needs server-side data for its "
                                    f"stage 2 (mutual learning between the tier models): expected {forms}")
        self.server_spec = spec
        self.server_data = load_server_data(spec)

    def prepare_global(self, model: nn.Module) -> nn.Module:
        from edge_sdk.flower.serverdata import check_server_data

        check_server_data(self.server_spec, self.server_data.x, model, self.settings.model)
        return model

    def aggregate(self, global_model: nn.Module, updates: Sequence[Any], *, round: int = 0) -> nn.Module:
        import dataclasses

        from edge_sdk.aggregation.fedtsa import fedtsa_aggregate

        s = self.settings
        model, report = fedtsa_aggregate(
            global_model, list(updates), server_data=self.server_data, temperature=float(s.fedtsa_temperature),
            distill_steps=int(s.fedtsa_steps), lr=float(s.fedtsa_lr), batch_size=int(s.fedtsa_batch_size),
            rng=np.random.default_rng([s.seed, 1231, int(round)]))
        self.last_aggregation = dataclasses.asdict(report)
        return model


STRATEGIES: dict[str, type[HeteroStrategy]] = {
    cls.name: cls
    for cls in (FiarseStrategy, FiarseStructuredStrategy, HeteroFLStrategy, FedRolexStrategy,
                FedRAStrategy, FedTSAStrategy, FedAvgStrategy)
}


def strategy_names(*, available_only: bool = False) -> tuple[str, ...]:
    return tuple(n for n, c in STRATEGIES.items() if not available_only or c.available())


def make_strategy(settings: RunSettings) -> HeteroStrategy:
    """The strategy named by ``settings.strategy``; raises if unknown or not available."""
    cls = STRATEGIES.get(settings.strategy)
    if cls is None:
        raise UnknownNameError(f"unknown strategy {settings.strategy!r}; known: {', '.join(STRATEGIES)}")
    cls.require()
    return cls(settings)
