"""A small built-in LoRA for Linear layers (peft would pull in transformers)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edge_sdk.errors import InvalidInputError

__all__ = ["LoRALinear", "add_lora", "lora_rank_of"]


class LoRALinear(nn.Linear):
    """``y = x W^T + b + scaling * (x A^T) B^T`` with ``A`` (rank, in) and ``B`` (out, rank).

    A subclass of nn.Linear so the base ``weight`` / ``bias`` keep their state-dict names;
    the adapters add ``lora_A`` and ``lora_B``. ``B`` starts at zero, so adding adapters does
    not change the model's function.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rank: int = 8,
                 alpha: float | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.rank = int(rank)
        self.scaling = float(alpha if alpha is not None else rank) / self.rank
        self.lora_A = nn.Parameter(torch.empty(self.rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, self.rank))
        bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform(a=sqrt(5)) as nn.Linear / peft
        with torch.no_grad():
            self.lora_A.uniform_(-bound, bound, generator=generator)

    @classmethod
    def from_linear(cls, lin: nn.Linear, rank: int, generator: torch.Generator | None = None) -> LoRALinear:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = lin.in_features, lin.out_features
        new.weight = lin.weight  # shared, not copied
        new.bias = lin.bias
        new.rank = int(rank)
        new.scaling = 1.0
        bound = 1.0 / math.sqrt(lin.in_features)
        a = torch.empty(new.rank, lin.in_features, dtype=lin.weight.dtype)
        a.uniform_(-bound, bound, generator=generator)
        new.lora_A = nn.Parameter(a)
        new.lora_B = nn.Parameter(torch.zeros(lin.out_features, new.rank, dtype=lin.weight.dtype))
        new.train(lin.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rank={self.rank}"


def lora_rank_of(module: nn.Module, requested: int) -> tuple[int, int] | None:
    """(actual rank, rank ``requested`` would give) of the first adapter, None if there is none."""
    for m in module.modules():
        if isinstance(m, LoRALinear):
            return m.rank, min(requested, m.in_features, m.out_features)
    return None


def add_lora(module: nn.Module, rank: int = 8, *, generator: torch.Generator | None = None) -> int:
    """Replace every plain nn.Linear inside ``module`` by a LoRALinear (in place); count them."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InvalidInputError(f"lora_rank={rank!r} is not accepted; expected an integer >= 1")
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, LoRALinear.from_linear(child, min(rank, child.in_features, child.out_features),
                                                             generator))
                count += 1
    return count
