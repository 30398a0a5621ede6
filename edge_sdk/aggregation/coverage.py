"""Which clients hold which coordinate: client changes laid out in global shape.

Plans differ by kind (FIARSE masks, structured index maps, FedRA trainable sets, None for
the whole model) but all expose ``gather`` / ``scatter``. Scattering ``1..k`` through a plan
once per tensor gives, for every held element, its position in the global tensor; with
that map each client's change is placed in a ``[clients, numel]`` stack with NaN where its
plan does not hold the coordinate, the layout every merge rule works on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["held_mask", "positions", "Coverage", "start_values"]


def _held_shape(plan: Any, name: str, tensor: torch.Tensor) -> tuple[int, ...] | None:
    if plan is None:
        return tuple(tensor.shape)
    shape = plan.held_shapes().get(name)
    return None if shape is None else tuple(shape)


def positions(plan: Any, name: str, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(global flat indices, held flat indices): held element ``h[k]`` of the plan's part of
    ``tensor`` sits at global flat index ``g[k]``. None when the plan does not hold ``name``."""
    shape = _held_shape(plan, name, tensor)
    if shape is None:
        return None
    numel = 1
    for s in shape:
        numel *= int(s)
    if plan is None:
        idx = torch.arange(tensor.numel())
        return idx, idx
    ids = torch.arange(1, numel + 1, dtype=torch.float64).reshape(shape)
    where = torch.zeros(tensor.shape, dtype=torch.float64)
    scratch = torch.zeros(tensor.shape, dtype=torch.float64)
    plan.scatter(name, ids, where, scratch, 1.0)
    flat = where.reshape(-1)
    g = torch.nonzero(flat > 0).reshape(-1)
    h = flat[g].round().to(torch.int64) - 1
    return g, h


def held_mask(plan: Any, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
    """int32 tensor shaped like ``tensor``: 1 where ``plan`` holds the element (None: not at all)."""
    pos = positions(plan, name, tensor)
    if pos is None:
        return None
    mask = torch.zeros(tensor.numel(), dtype=torch.int32)
    mask[pos[0]] = 1
    return mask.reshape(tensor.shape)


class Coverage:
    """The updates of one merge laid out per global tensor (position maps cached per plan)."""

    def __init__(self, updates: Sequence[Any], state: dict[str, torch.Tensor]) -> None:
        self.updates = list(updates)
        self.state = state
        self._pos: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor] | None] = {}
        self._identity: dict[tuple[int, str], bool] = {}
        self._base: dict[tuple[int, str], torch.Tensor] = {}

    def _positions(self, plan: Any, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        key = (id(plan), name)
        if key not in self._pos:
            pos = positions(plan, name, self.state[name])
            self._pos[key] = pos
            n = self.state[name].numel()
            self._identity[key] = pos is not None and pos[0].numel() == n and bool(
                torch.equal(pos[1], torch.arange(n)))
        return self._pos[key]

    def start(self, plan: Any, name: str) -> torch.Tensor:
        """The held part of the global tensor ``name`` (what the client started from)."""
        key = (id(plan), name)
        if key not in self._base:
            self._base[key] = start_values(plan, self.state, (name,))[name]
        return self._base[key]

    def stack(self, name: str, rows: Sequence[int] | None = None, dtype: torch.dtype | None = None
              ) -> torch.Tensor | None:
        """[len(rows), numel] changes of tensor ``name`` (update - global) in global layout,
        NaN where a client does not hold the coordinate; None when none of them holds any."""
        target = self.state[name]
        rows = range(len(self.updates)) if rows is None else rows
        dtype = dtype or (target.dtype if target.is_floating_point() else torch.float64)
        out = torch.full((len(rows), target.numel()), float("nan"), dtype=dtype)
        any_held = False
        for r, i in enumerate(rows):
            u = self.updates[i]
            if name not in u.tensors:
                continue
            pos = self._positions(u.plan, name)
            if pos is None:
                continue
            delta = u.tensors[name].to(dtype) - self.start(u.plan, name).to(dtype)
            if self._identity[(id(u.plan), name)]:
                out[r].copy_(delta.reshape(-1))
            else:
                out[r, pos[0]] = delta.reshape(-1)[pos[1]]
            any_held = True
        return out if any_held else None


def start_values(plan: Any, state: dict[str, torch.Tensor], names: Any) -> dict[str, torch.Tensor]:
    """What a client holding ``plan`` received of each tensor in ``names`` (its update's
    layout): the base its change is measured from."""
    return {n: state[n] if plan is None else plan.gather(n, state[n]) for n in names}
