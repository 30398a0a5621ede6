"""Channel selectors: which units of every channel group a structured submodel keeps.

How many units each group keeps is decided before (the same width for every strategy, see
:func:`edge_sdk.submodel.structured.plan_structured`); a selector only picks *which*. A new
selection rule is one class::

    @register_selector("my-rule")
    class MyRule(ChannelSelector):
        def select(self, ctx):
            return [np.sort(ctx.rng.choice(s, c, replace=False)) for c, s in zip(ctx.counts, ctx.leaf_sizes)]

after which ``submodel.plan("my-rule", ...)`` makes plans with it (its module must be imported).
"""

from __future__ import annotations

import abc
import dataclasses
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import InvalidInputError, UnknownNameError
from edge_sdk.submodel.graph import Analysis

__all__ = [
    "SelectionContext",
    "ChannelSelector",
    "register_selector",
    "selector_names",
    "get_selector",
    "channel_importance",
    "make_rng",
    "ImportanceSelector",
    "LeftmostSelector",
    "RollingSelector",
    "ExploringImportanceSelector",
    "EXPLORE_MODES",
]

S = TypeVar("S", bound="type[ChannelSelector]")


def channel_importance(model: nn.Module, an: Analysis) -> list[np.ndarray]:
    """Squared L2 norm of every unit's weight entries, summed over all coupled weight tensors."""
    tensors = dict(model.named_parameters())
    imp = [np.zeros(s, dtype=np.float64) for s in an.leaf_sizes]
    with torch.no_grad():
        for name in an.importance_params:
            p = tensors.get(name)
            if p is None or p.dim() < 2:
                continue
            dims = an.param_dims[name]
            keep_dims = [d for d, ld in enumerate(dims) if any(i >= 0 for i, _ in ld)]
            if not keep_dims:
                continue
            other = [d for d in range(p.dim()) if d not in keep_dims]
            w = p.detach().float()
            # fused square-sum over the dimensions nobody prunes (e.g. conv kernels) first
            red = torch.linalg.vector_norm(w, dim=other).pow(2) if other else w.pow(2)
            for j, d in enumerate(keep_dims):
                rest = [k for k in range(red.dim()) if k != j]
                v = (red.sum(dim=rest) if rest else red).double().numpy()
                ld = dims[d]
                v = v.reshape([s for _, s in ld])
                for pos, (i, _) in enumerate(ld):
                    if i >= 0:
                        axes = tuple(k for k in range(len(ld)) if k != pos)
                        imp[i] += v.sum(axis=axes) if axes else v
    return imp


def make_rng(rng: np.random.Generator | int | None, round: int) -> np.random.Generator:
    """A Generator from ``rng``: passed through, seeded from an int, or seeded by the round."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng([round])
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral) or rng < 0:
        raise InvalidInputError(f"rng={rng!r} is not accepted; expected a numpy Generator, an integer "
                                f"seed >= 0 or None")
    return np.random.default_rng(int(rng))


@dataclass
class SelectionContext:
    """What a selector may look at; ``importance()`` is computed on first use only."""

    model: nn.Module  # the global model
    analysis: Analysis  # its channel-group analysis
    counts: list[int]  # units to keep per channel group (leaf)
    leaf_sizes: list[int]  # units per channel group
    round: int
    rng: np.random.Generator  # seeded by the caller
    _importance: list[np.ndarray] | None = field(default=None, init=False, repr=False)

    def importance(self) -> list[np.ndarray]:
        """Per-leaf importance (see :func:`channel_importance`), cached."""
        if self._importance is None:
            self._importance = channel_importance(self.model, self.analysis)
        return self._importance


class ChannelSelector(abc.ABC):
    """Picks the kept units of every channel group; registered under ``name``."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def select(self, ctx: SelectionContext) -> list[np.ndarray]:
        """Sorted kept indices per leaf, ``len(result[i]) == ctx.counts[i]``."""


_SELECTORS: dict[str, ChannelSelector] = {}
#: what a selector (so a plan strategy) may be called; a decoder can check a name it does not know
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: live read-only view of the registered selectors (name -> instance)
SELECTORS = MappingProxyType(_SELECTORS)


def register_selector(name: str) -> Callable[[S], S]:
    """Class decorator: register an instance of the class as plan strategy ``name``."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name == "fiarse":
        raise InvalidInputError(f"selector name {name!r} is not accepted; expected 1-64 of a-z 0-9 . _ - "
                                f"(starting with a letter or digit), other than 'fiarse'")

    def deco(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, ChannelSelector)):
            raise InvalidInputError(f"register_selector({name!r}) takes a ChannelSelector subclass, got {cls!r}")
        if name in _SELECTORS:
            raise InvalidInputError(f"a channel selector named {name!r} is already registered "
                                    f"({type(_SELECTORS[name]).__qualname__})")
        cls.name = name
        _SELECTORS[name] = cls()
        return cls

    return deco


def selector_names() -> tuple[str, ...]:
    """Registered selector names, in registration order."""
    return tuple(_SELECTORS)


def get_selector(name: str) -> ChannelSelector:
    sel = _SELECTORS.get(name) if isinstance(name, str) else None
    if sel is None:
        raise UnknownNameError(f"unknown channel selector {name!r}; known: {', '.join(_SELECTORS)}")
    return sel


def checked_selection(sel: ChannelSelector, ctx: SelectionContext) -> list[np.ndarray]:
    """Run ``sel`` and refuse a result that is not sorted unique in-range indices of the counts."""
    keep = sel.select(ctx)
    if not isinstance(keep, (list, tuple)) or len(keep) != len(ctx.counts):
        raise InvalidInputError(f"selector {sel.name!r} returned {type(keep).__name__} of "
                                f"{len(keep) if hasattr(keep, '__len__') else '?'} entries; expected a list "
                                f"of {len(ctx.counts)} index arrays")
    out: list[np.ndarray] = []
    for i, (k, c, s) in enumerate(zip(keep, ctx.counts, ctx.leaf_sizes)):
        arr = np.asarray(k)
        if arr.ndim != 1 or len(arr) != c or (len(arr) and (not np.issubdtype(arr.dtype, np.integer)
                                                            or arr[0] < 0 or arr[-1] >= s
                                                            or np.any(np.diff(arr) <= 0))):
            raise InvalidInputError(f"selector {sel.name!r}: channel group {i} needs {c} sorted distinct "
                                    f"indices in [0, {s}); got {arr.tolist()[:8]}")
        out.append(arr.astype(np.int64, copy=False))
    return out


def top_units(importance: list[np.ndarray], counts: list[int]) -> list[np.ndarray]:
    """Per group, the sorted indices of its ``count`` most important units (ties: lower index first)."""
    return [np.sort(np.argsort(-v, kind="stable")[:c]) for v, c in zip(importance, counts)]


@register_selector("fiarse-structured")
class ImportanceSelector(ChannelSelector):
    """The units of largest importance (ties: lower index first)."""

    def select(self, ctx: SelectionContext) -> list[np.ndarray]:
        return top_units(ctx.importance(), ctx.counts)


@register_selector("heterofl")
class LeftmostSelector(ChannelSelector):
    """HeteroFL: the leftmost units (a static, nested slice)."""

    def select(self, ctx: SelectionContext) -> list[np.ndarray]:
        return [np.arange(c, dtype=np.int64) for c in ctx.counts]


@register_selector("fedrolex")
class RollingSelector(ChannelSelector):
    """FedRolex: a cyclic window of consecutive units starting at ``round mod size``."""

    def select(self, ctx: SelectionContext) -> list[np.ndarray]:
        return [np.sort((ctx.round + np.arange(c)) % s) for c, s in zip(ctx.counts, ctx.leaf_sizes)]


#: how :class:`ExploringImportanceSelector` picks its exploration share
EXPLORE_MODES = ("rolling", "random")


class ExploringImportanceSelector(ChannelSelector):
    """Importance with an exploration share: of the ``c`` units a group keeps, the
    ``c - n`` most important ones plus ``n = round(share x c)`` of the others, where
    ``share = explore x 0.5 ** (round / half_life)`` (constant when ``half_life`` is 0),
    times the group's kept fraction ``c / size`` when ``by_width`` (so the wide tiers
    explore more of their channels, the narrow ones keep theirs for their top ranks).

    ``mode="rolling"``: the ``n`` explored units are a cyclic window over the units outside
    the important part (in index order) that advances by ``n`` every round, so every unit is
    reached within ``ceil((size - c + n) / n)`` rounds. ``mode="random"``: a uniformly random
    ``n`` of them from the plan's rng (seeded by the caller: deterministic for a seed).

    ``memory`` and ``hysteresis`` make the ranking depend on earlier rounds (see
    :meth:`importance` and :meth:`ranking`); the object keeps that state.

    Not registered: it is a parametrized form of ``fiarse-structured`` (the plans it makes
    carry that name and decode like any structured plan; they store the kept indices).
    """

    name = "fiarse-structured"

    def __init__(self, explore: float = 0.0, mode: str = "rolling", half_life: float = 0.0,
                 by_width: bool = False, memory: float = 0.0, hysteresis: float = 0.0) -> None:
        if isinstance(explore, bool) or not isinstance(explore, numbers.Real) or not 0.0 <= explore <= 1.0:
            raise InvalidInputError(f"explore={explore!r} is not accepted; expected a number in [0, 1]")
        if mode not in EXPLORE_MODES:
            raise InvalidInputError(f"mode={mode!r} is not accepted; expected one of {', '.join(EXPLORE_MODES)}")
        if isinstance(half_life, bool) or not isinstance(half_life, numbers.Real) or not half_life >= 0.0:
            raise InvalidInputError(f"half_life={half_life!r} is not accepted; expected a number >= 0")
        if isinstance(memory, bool) or not isinstance(memory, numbers.Real) or not 0.0 <= memory < 1.0:
            raise InvalidInputError(f"memory={memory!r} is not accepted; expected a number in [0, 1)")
        if isinstance(hysteresis, bool) or not isinstance(hysteresis, numbers.Real) or not hysteresis >= 0.0:
            raise InvalidInputError(f"hysteresis={hysteresis!r} is not accepted; expected a number >= 0")
        self.explore = float(explore)
        self.mode = mode
        self.half_life = float(half_life)
        self.by_width = bool(by_width)
        self.memory = float(memory)
        self._smoothed: list[np.ndarray] | None = None  # the importance remembered over rounds
        self._smoothed_round = -1  # the round it was last updated for
        self.hysteresis = float(hysteresis)
        # per size (kept counts, group sizes): the round of its last ranking and that ranking
        self._ranked: dict[tuple, tuple[int, list[np.ndarray]]] = {}

    def importance(self, ctx: SelectionContext) -> list[np.ndarray]:
        """The importance the ranking uses: this round's, or with ``memory`` > 0 its
        exponential average over rounds, ``s = memory x s + (1 - memory) x importance``,
        updated once per round number it is asked for (other channel groups start it anew)."""
        current = ctx.importance()
        if self.memory == 0.0:
            return current
        if self._smoothed is None or [len(v) for v in self._smoothed] != [len(v) for v in current]:
            self._smoothed, self._smoothed_round = [v.astype(np.float64) for v in current], ctx.round
        elif ctx.round != self._smoothed_round:
            self._smoothed = [self.memory * s + (1.0 - self.memory) * v for s, v in zip(self._smoothed, current)]
            self._smoothed_round = ctx.round
        return self._smoothed

    def ranking(self, ctx: SelectionContext) -> list[np.ndarray]:
        """Per group, its units from first to last as this selector ranks them at ``ctx.round``:
        by :meth:`importance`, where with ``hysteresis`` h > 0 the units this size kept in the
        previous round count ``(1 + h)`` times their importance, so that a unit takes a kept
        unit's place only when it is more than ``1 + h`` times as important (the ranking of a
        size is computed once per round and kept for the next)."""
        scores = self.importance(ctx)
        if self.hysteresis == 0.0:
            return [np.argsort(-v, kind="stable") for v in scores]
        key = (tuple(ctx.counts), tuple(ctx.leaf_sizes))
        last = self._ranked.get(key)
        if last is not None and last[0] == ctx.round:
            return last[1]
        if last is not None and last[0] < ctx.round:
            scores = [v.copy() for v in scores]
            for v, order, c in zip(scores, last[1], ctx.counts):
                v[order[:c]] *= 1.0 + self.hysteresis  # the units this size kept last round
        orders = [np.argsort(-v, kind="stable") for v in scores]
        self._ranked[key] = (ctx.round, orders)
        return orders

    def share(self, round: int) -> float:
        """The exploration share at ``round``."""
        if self.half_life > 0.0:
            return self.explore * 0.5 ** (round / self.half_life)
        return self.explore

    def explored(self, count: int, size: int, round: int) -> int:
        """How many of a group's ``count`` kept units (of ``size``) are explored at ``round``."""
        if count >= size:
            return 0
        share = self.share(round) * (count / size if self.by_width else 1.0)
        return min(count, int(share * count + 0.5))

    def select(self, ctx: SelectionContext) -> list[np.ndarray]:
        out = []
        for order, c, s in zip(self.ranking(ctx), ctx.counts, ctx.leaf_sizes):
            n = self.explored(c, s, ctx.round)
            top = order[:c - n]
            if n == 0:
                out.append(np.sort(top))
                continue
            rest = np.sort(order[c - n:])  # the units outside the important part, in index order
            if self.mode == "rolling":
                start = (ctx.round * n) % len(rest)
                extra = rest[(start + np.arange(n)) % len(rest)]
            else:
                extra = ctx.rng.choice(rest, size=n, replace=False)
            out.append(np.sort(np.concatenate([top, extra])).astype(np.int64))
        return out


class RememberedRanking(ChannelSelector):
    """The top units of ``source``'s ranking (no exploration): how a
    :class:`ExploringImportanceSelector` with memory or hysteresis ranks a size for
    evaluation and export. A model evaluated at round r is the one round r trained, which
    round r + 1 plans from: it is ranked as round r + 1 (so its own importance counts)."""

    name = "fiarse-structured"

    def __init__(self, source: ExploringImportanceSelector) -> None:
        self.source = source

    def select(self, ctx: SelectionContext) -> list[np.ndarray]:
        after = dataclasses.replace(ctx, round=ctx.round + 1)
        return [np.sort(order[:c]) for order, c in zip(self.source.ranking(after), ctx.counts)]
