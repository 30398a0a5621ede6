"""FedRA: random block allocation for federated tuning (Su et al., ECCV 2024).

For a model whose body is ``model.blocks`` (a stack of same-shaped blocks), each round every
client gets ``ceil(capacity * L)`` blocks drawn at random without replacement (not
contiguous; kept in their original order); the blocks it does not get are skipped (identity,
the residual path). Embeddings, the final norm and the head are always kept. The backbone is
frozen; the client trains LoRA adapters on the Linear layers of its blocks, and the head.

The server's global model carries the adapters: ``plan_fedra`` adds them (rank
``lora_rank``, ``B = 0`` so the function is unchanged) the first time it sees a model without
them. The ``fedra`` aggregation rule averages each adapter over the clients that trained it
this round and the head over all clients.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk import _decode
from edge_sdk.errors import InvalidInputError, PlanMismatchError, SchemaError
from edge_sdk.submodel._plan import Signature, SubmodelPlan, model_signature, param_count, plan_fields
from edge_sdk.submodel.lora import add_lora, lora_rank_of

log = logging.getLogger(__name__)

__all__ = ["FedRAPlan", "plan_fedra", "draw_blocks"]


def _blocks(model: nn.Module) -> nn.Module:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0:
        raise InvalidInputError(f"fedra needs a model whose body is model.blocks (an nn.Sequential of blocks); "
                                f"{type(model).__name__} has none")
    shapes = [tuple((n, tuple(t.shape)) for n, t in b.state_dict().items()) for b in blocks]
    if any(s != shapes[0] for s in shapes):
        raise InvalidInputError("fedra needs same-shaped blocks in model.blocks")
    return blocks


def _head_prefix(model: nn.Module) -> str:
    for name in ("head", "fc", "classifier"):
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and not name.startswith("blocks."):
            last = name
    if last is None:
        raise InvalidInputError(f"fedra: cannot find the head of {type(model).__name__} (no head/fc attribute)")
    return last


def draw_blocks(num_blocks: int, capacity: float, rng: np.random.Generator) -> list[int]:
    """``ceil(capacity * num_blocks)`` distinct block indices, sorted (original order)."""
    n = min(num_blocks, max(1, math.ceil(capacity * num_blocks - 1e-9)))
    return sorted(int(i) for i in rng.choice(num_blocks, size=n, replace=False))


class FedRAPlan(SubmodelPlan):
    """The blocks one client keeps, and the tensors it trains (adapters of those blocks, head)."""

    kind = "fedra"

    def __init__(self, ratio: float, round: int, kept_fraction: float, signature: Signature,
                 num_blocks: int, kept_blocks: Sequence[int], trainable: Sequence[str], lora_rank: int) -> None:
        super().__init__("fedra", ratio, round, kept_fraction, signature)
        self.num_blocks = int(num_blocks)
        self.kept_blocks = [int(b) for b in kept_blocks]
        self.trainable = list(trainable)
        self.lora_rank = int(lora_rank)

    def held_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: self.signature[n][0] for n in self.trainable}

    def extract(self, global_model: nn.Module) -> nn.Module:
        self.check_model(global_model)
        blocks = _blocks(global_model)
        kept = set(self.kept_blocks)
        memo: dict[int, Any] = {id(b): nn.Identity() for i, b in enumerate(blocks) if i not in kept}
        sub = copy.deepcopy(global_model, memo)
        train = set(self.trainable)
        for name, p in sub.named_parameters():
            p.requires_grad_(name in train)
        return sub

    def collect(self, submodel: nn.Module) -> dict[str, torch.Tensor]:
        params = dict(submodel.named_parameters())
        missing = [n for n in self.trainable if n not in params]
        if missing:
            raise PlanMismatchError(f"fedra plan: the submodel lacks {missing[0]!r}; train the module "
                                    f"returned by plan.extract(global_model)")
        return {n: params[n].detach().clone() for n in self.trainable}

    def gather(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def scatter(self, name: str, value: torch.Tensor, num: torch.Tensor, den: torch.Tensor,
                weight: float) -> None:
        num.add_(value.to(num.dtype))
        den.add_(weight)

    def same_as(self, other: SubmodelPlan) -> bool:
        return (super().same_as(other) and isinstance(other, FedRAPlan) and other.kept_blocks == self.kept_blocks
                and other.trainable == self.trainable)

    def _header(self) -> dict[str, Any]:
        h = super()._header()
        h.update(num_blocks=self.num_blocks, kept_blocks=self.kept_blocks, trainable=self.trainable,
                 lora_rank=self.lora_rank)
        return h

    @classmethod
    def _from_parts(cls, header, blobs, signature):  # type: ignore[no-untyped-def]
        """Checked: kept blocks strictly increasing in [0, num_blocks); trainable names unique
        parameters of the signature, block tensors only of kept blocks; no blobs."""
        f = plan_fields(header, ("num_blocks", "kept_blocks", "trainable", "lora_rank"), ("fedra",))
        if blobs:
            raise SchemaError(f"plan: unknown blob {next(iter(blobs))!r}; a fedra plan holds none")
        num_blocks = _decode.check_int(header["num_blocks"], "plan: num_blocks", 1, max(1, len(signature)))
        kept = [_decode.check_int(b, f"plan: kept_blocks[{i}]", 0, num_blocks - 1)
                for i, b in enumerate(_decode.check_list(header["kept_blocks"], "plan: kept_blocks"))]
        if not kept or any(a >= b for a, b in zip(kept, kept[1:])):
            raise SchemaError(f"plan: kept_blocks must be a non-empty, strictly increasing list, got "
                              f"{_decode.show(kept)}")
        lora_rank = _decode.check_int(header["lora_rank"], "plan: lora_rank", 1, 1 << 16)
        trainable = [_decode.check_str(n, f"plan: trainable[{i}]")
                     for i, n in enumerate(_decode.check_list(header["trainable"], "plan: trainable"))]
        if len(set(trainable)) != len(trainable):
            raise SchemaError("plan: trainable lists a tensor twice")
        held = set(kept)
        for n in trainable:
            if not signature.get(n, ((), False))[1]:
                raise SchemaError(f"plan: trainable tensor {n!r} is not a parameter of the signature")
            parts = n.split(".")
            if parts[0] == "blocks" and len(parts) > 1 and (not (parts[1].isascii() and parts[1].isdigit()) or int(parts[1]) not in held):
                raise SchemaError(f"plan: trainable tensor {n!r} is in a block the plan does not keep")
        return cls(f["ratio"], f["round"], f["kept_fraction"], signature, num_blocks, kept, trainable, lora_rank)


def plan_fedra(global_model: nn.Module, capacities: Sequence[float], *, rng: np.random.Generator | int,
               lora_rank: int = 8, round: int = 0) -> list[FedRAPlan]:
    """One plan per client: a fresh random allocation of ceil(c x L) blocks each.

    Adds LoRA adapters (rank ``lora_rank``) to the global model's blocks in place if it has
    none yet. ``rng`` is a numpy Generator (or a seed) so allocations are reproducible.
    """
    from edge_sdk.submodel import check_ratio

    if not isinstance(global_model, nn.Module):
        raise InvalidInputError(f"global_model must be a torch.nn.Module, got {type(global_model).__name__}")
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(f"plan_fedra: rng must be a numpy Generator or an int seed, got {type(rng).__name__}")
    caps = [check_ratio(c, "capacity") for c in capacities]
    if not caps:
        raise InvalidInputError("plan_fedra: capacities is empty; give one capacity per client")
    blocks = _blocks(global_model)
    existing = lora_rank_of(blocks, lora_rank)
    if existing is None:
        gen = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
        n = add_lora(blocks, lora_rank, generator=gen)
        if n == 0:
            raise InvalidInputError("plan_fedra: the blocks have no nn.Linear layers to put LoRA adapters on")
        log.info("fedra: added rank-%d LoRA adapters to %d Linear layers of the global model", lora_rank, n)
    elif existing[0] != existing[1]:
        raise PlanMismatchError(f"plan_fedra: the global model already has rank-{existing[0]} adapters, "
                                f"lora_rank={lora_rank} was asked")
    signature = model_signature(global_model)
    total = param_count(signature)
    L = len(blocks)
    head = _head_prefix(global_model)
    block_params = [sum(p.numel() for p in b.parameters()) for b in blocks]
    lora_names = [[f"blocks.{i}.{n}" for n, _ in b.named_parameters() if n.rsplit(".", 1)[-1] in ("lora_A", "lora_B")]
                  for i, b in enumerate(blocks)]
    head_names = [n for n, _ in global_model.named_parameters() if n == head or n.startswith(head + ".")]
    outside = total - sum(block_params)
    plans = []
    for c in caps:
        kept = draw_blocks(L, c, rng)
        held = outside + sum(block_params[i] for i in kept)
        trainable = [n for i in kept for n in lora_names[i]] + head_names
        plans.append(FedRAPlan(c, round, held / total, signature, L, kept, trainable, lora_rank))
    return plans
