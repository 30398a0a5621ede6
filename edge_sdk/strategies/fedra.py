"""FedRA (ECCV 2024): random block allocation with LoRA for federated tuning."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from edge_sdk.strategies._registry import register_strategy
from edge_sdk.strategies.base import Strategy
from edge_sdk.strategies.options import Option

__all__ = ["FedRA"]

K = TypeVar("K", bound=Hashable)


@register_strategy
class FedRA(Strategy):
    """Every round each client draws a fresh random set of ceil(c x depth) blocks (order
    kept) and trains LoRA adapters on them and the head; the backbone stays frozen; each
    block's adapters are averaged over the clients that trained them."""

    name = "fedra"
    summary = "random block allocation with LoRA (needs a 'blocks' model: vit_tiny, mixer_tiny)"
    plan_name = "fedra"
    fill = "state"  # a client needs its frozen blocks too, not only what it uploads
    plans_per_client = True
    options = (Option("lora_rank", int, 8, "rank of the LoRA adapters", key="lora-rank", minimum=1),)

    @classmethod
    def model_problem(cls, model: nn.Module) -> str | None:
        blocks = getattr(model, "blocks", None)
        ok = isinstance(blocks, (nn.ModuleList, nn.Sequential)) and len(blocks) > 0
        return None if ok else "a model whose body is a 'blocks' stack (e.g. vit_tiny, mixer_tiny)"

    def prepare_global(self, model: nn.Module, rng: np.random.Generator) -> nn.Module:
        """Add the LoRA adapters (seeded from ``rng``, as a first plan would)."""
        from edge_sdk.submodel.lora import add_lora, lora_rank_of

        self.check_model(model)
        rank = self.option("lora_rank")
        if lora_rank_of(model.blocks, rank) is None:
            add_lora(model.blocks, rank, generator=torch.Generator().manual_seed(int(rng.integers(2**31 - 1))))
        return model

    def plan(self, global_model: nn.Module, ratio: float, *, round: int, rng: np.random.Generator,
             example_input: torch.Tensor | None = None) -> Any:
        from edge_sdk.submodel import plan_fedra

        return plan_fedra(global_model, [float(ratio)], rng=rng, lora_rank=self.option("lora_rank"), round=round)[0]

    def make_plans(self, global_model: nn.Module, ratios: Mapping[K, float], *, round: int,
                   rng: np.random.Generator, example_input: torch.Tensor | None = None) -> dict[K, Any]:
        from edge_sdk.submodel import plan_fedra

        keys = sorted(ratios)
        plans = plan_fedra(global_model, [float(ratios[k]) for k in keys], rng=rng,
                           lora_rank=self.option("lora_rank"), round=round)
        return dict(zip(keys, plans))

    def export_size(self, ratio: float) -> float:
        return 1.0  # adapters are trained on block subsets; every client runs the whole model

    def tier_model(self, global_model: nn.Module, ratio: float, *, round: int) -> nn.Module:
        return global_model
