"""Which clients hold which coordinate: client changes laid out in global shape.

Plans differ by kind (FIARSE masks, structured index maps, FedRA trainable sets, None for
the whole model) but all expose ``gather`` / ``scatter``. Scattering ``1..k`` through a plan
once per tensor gives, for every held element, its position in the global tensor; with
that map each client's change is placed in a ``[clients, numel]`` stack with NaN where its
plan does not hold the coordinate, the layout every merge rule works on.

:meth:`Coverage.blocks` cuts a tensor's coordinates into :class:`Block` s. When the round
has few distinct plans (structured strategies: one per tier), the coordinates fall into few
classes by *which* plans hold them (HeteroFL: held by all tiers, by all but the smallest,
...); each class is one dense block with exactly its holders as rows, so a rule sorts 5
values per coordinate where the full stack would make it sort 20 with 15 NaN. With many
distinct plans (FIARSE masks: one per client) the tensor is one block, the NaN stack.
A rule gives the same result either way: it only ever sees a coordinate's holders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["held_mask", "positions", "Block", "Coverage", "start_values"]

MAX_GROUPS = 16  # distinct plans up to which a tensor is cut into dense classes (a class code is an int32 bitmask)
MAX_CLASSES = 32  # more holder classes than this in one tensor: one NaN block (a Python step per class)


@dataclass
class Block:
    """Part of one global tensor: ``values[r, k]`` is the change of update ``rows[r]`` at
    flat index ``cols[k]`` of the tensor (``cols`` None: every index, in order). ``dense``:
    every row holds every column of the block; otherwise NaN marks an unheld coordinate."""

    rows: list[int]
    cols: torch.Tensor | None
    values: torch.Tensor
    dense: bool

    def subset(self, rows: Sequence[int]) -> Block | None:
        """The block restricted to the updates in ``rows`` (in this block's order); None when
        none of them is in it."""
        wanted = set(rows)
        pick = [r for r, i in enumerate(self.rows) if i in wanted]
        if len(pick) == len(self.rows):
            return self
        if not pick:
            return None
        return Block([self.rows[r] for r in pick], self.cols, self.values[pick], self.dense)


def positions(plan: Any, name: str, tensor: torch.Tensor, held: Any = None, ids: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(global flat indices, held flat indices): held element ``h[k]`` of the plan's part of
    ``tensor`` sits at global flat index ``g[k]``. None when the plan does not hold ``name``.

    Every plan's ``gather`` selects elements of the global tensor (it is what a client
    receives), so gathering the global flat indices 0..numel-1 gives each held element's
    position; ``h`` is then 0..held-1. ``held``: the plan's held tensor names, if known;
    ``ids``: ``torch.arange(tensor.numel())``, if at hand."""
    ids = torch.arange(tensor.numel()) if ids is None else ids
    if plan is None:
        return ids, ids
    if name not in (plan.held_shapes() if held is None else held):
        return None
    g = plan.gather(name, ids.reshape(tensor.shape)).reshape(-1)
    return g, ids[:g.numel()]


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
        self._held: dict[int, set[str]] = {}
        self._arange: dict[str, torch.Tensor] = {}
        self.groups = _plan_groups(self.updates)  # None: too many distinct plans for dense classes

    def _positions(self, plan: Any, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        key = (id(plan), name)
        if key not in self._pos:
            if plan is not None and id(plan) not in self._held:
                self._held[id(plan)] = set(plan.held_shapes())
            ids = self._ids(name)
            pos = positions(plan, name, self.state[name], None if plan is None else self._held[id(plan)], ids)
            self._pos[key] = pos
            self._identity[key] = pos is not None and (pos[0] is ids or (
                pos[0].numel() == ids.numel() and bool(torch.equal(pos[0], ids))))
        return self._pos[key]

    def _ids(self, name: str) -> torch.Tensor:
        """0..numel-1 of tensor ``name`` (int64), made once per merge."""
        if name not in self._arange:
            self._arange[name] = torch.arange(self.state[name].numel())
        return self._arange[name]

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


    def blocks(self, name: str) -> list[Block] | None:
        """The float tensor ``name``'s changes as blocks (see the module docstring); None
        when no update holds any of it. Each held coordinate lies in exactly one block, and
        a dense block's rows are exactly that coordinate's holders."""
        if self.groups is not None:
            out = self._class_blocks(name)
            if out != "stack":
                return out  # type: ignore[return-value]
        s = self.stack(name)
        return None if s is None else [Block(list(range(len(self.updates))), None, s, False)]

    def _class_blocks(self, name: str) -> list[Block] | None | str:
        target = self.state[name]
        numel = target.numel()
        dtype = target.dtype
        parts = []  # (bit, rows, global flat indices or None for all, changes [rows, held] in that order)
        for bit, (plan, members) in enumerate(self.groups or ()):
            rows = [i for i in members if name in self.updates[i].tensors]
            pos = self._positions(plan, name) if rows else None
            if pos is None:
                continue
            base = self.start(plan, name).reshape(-1).to(dtype)
            d = torch.stack([self.updates[i].tensors[name].reshape(-1).to(dtype) for i in rows])
            d -= base
            parts.append((bit, rows, None if self._identity[(id(plan), name)] else pos[0], d))  # pos[1]: 0..held-1
        if not parts:
            return None
        if len(parts) == 1:
            bit, rows, cols, d = parts[0]
            return [Block(rows, cols, d, True)]
        code = torch.zeros(numel, dtype=torch.int32)
        for bit, _, cols, _ in parts:
            if cols is None:
                code += 1 << bit
            else:
                code[cols] += 1 << bit
        classes = torch.nonzero(torch.bincount(code)[1:]).reshape(-1) + 1
        if len(classes) > MAX_CLASSES:
            return "stack"
        inverse: dict[int, torch.Tensor] = {}
        ids = self._ids(name)
        out = []
        for c in classes.tolist():
            cols = torch.nonzero(code == c).reshape(-1)
            members = [p for p in parts if c >> p[0] & 1]
            rows = [i for p in members for i in p[1]]
            values = torch.empty((len(rows), cols.numel()), dtype=dtype)
            r0 = 0
            for bit, member_rows, held, d in members:
                if held is None:
                    k = cols
                else:
                    if bit not in inverse:  # global flat index -> position in this group's changes
                        inv = torch.empty(numel, dtype=torch.int64)
                        inv[held] = ids[:held.numel()]
                        inverse[bit] = inv
                    k = inverse[bit][cols]
                torch.index_select(d, 1, k, out=values[r0:r0 + len(member_rows)])
                r0 += len(member_rows)
            out.append(Block(rows, None if cols.numel() == numel else cols, values, True))
        return out


def _plan_groups(updates: Sequence[Any]) -> list[tuple[Any, list[int]]] | None:
    """Updates grouped by identical plan (None: more than MAX_GROUPS distinct plans)."""
    from edge_sdk.aggregation.screening import same_plan

    groups: list[tuple[Any, list[int]]] = []
    for i, u in enumerate(updates):
        for plan, members in groups:
            if u.plan is plan or same_plan(u.plan, plan):
                members.append(i)
                break
        else:
            if len(groups) == MAX_GROUPS:
                return None
            groups.append((u.plan, [i]))
    return groups


def start_values(plan: Any, state: dict[str, torch.Tensor], names: Any) -> dict[str, torch.Tensor]:
    """What a client holding ``plan`` received of each tensor in ``names`` (its update's
    layout): the base its change is measured from."""
    return {n: state[n] if plan is None else plan.gather(n, state[n]) for n in names}
