"""Merge rules as registered objects: one statistic per coordinate over its holders.

A rule sees, for one chunk of one global tensor, every client's change with NaN where the
client's plan does not hold the coordinate, and returns one change per coordinate. It never
sees plans: masks (FIARSE), index maps (structured strategies), block sets (FedRA) and tiers
(FedTSA stage 1) all arrive as the NaN pattern, so one rule serves every strategy.

A new rule is one module with a ``@register_merge_rule`` class plus its import line in
``edge_sdk.aggregation.robust``; ``--robust NAME[:PARAM]`` and the run-config key
``robust`` then reach it.
"""

from __future__ import annotations

import math
from typing import ClassVar, TypeVar

import torch

from edge_sdk._specs import split_spec
from edge_sdk.errors import InvalidInputError, UnknownNameError

__all__ = ["MergeRule", "register_merge_rule", "merge_rule", "merge_rule_names", "merge_rule_class"]

_RULES: dict[str, type[MergeRule]] = {}
R = TypeVar("R", bound="type[MergeRule]")


class MergeRule:
    """Base class. ``param`` is the optional ``:PARAM`` of the spec (None: the default).

    ``weighted``: the rule uses per-client weights (the sample-count policy's); order
    statistics do not. ``needs_bound``: the rule clips each change to a norm bound. Override
    :meth:`min_holders` (coordinates held by fewer clients fall back to the clipped mean)
    and :meth:`combine`.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    param_help: ClassVar[str] = ""  # what ``:PARAM`` means ('' : the rule takes none)
    weighted: ClassVar[bool] = False
    needs_bound: ClassVar[bool] = False
    robust: ClassVar[bool] = True  # False only for the plain mean

    def __init__(self, param: float | None = None) -> None:
        self.param = self.check_param(param)

    def check_param(self, param: float | None) -> float | None:
        if param is not None:
            raise InvalidInputError(f"merge rule {self.name} takes no parameter (got {param!r})")
        return None

    @property
    def spec(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param:g}"

    def min_holders(self) -> int:
        """Fewest holders the statistic needs to mean what it says."""
        return 1

    def combine(self, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """One change per column of ``values`` ([clients, coords], NaN where not held; every
        column has at least :meth:`min_holders` finite entries). ``weights`` [clients] >= 0."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def _positive_param(rule: str, param: float | None, *, below: float | None = None) -> float | None:
    if param is None:
        return None
    if isinstance(param, bool) or not isinstance(param, (int, float)) or not math.isfinite(param) or param <= 0 \
            or (below is not None and param >= below):
        rng = f"0 < value < {below:g}" if below is not None else "a finite number > 0"
        raise InvalidInputError(f"merge rule {rule}: parameter {param!r} is not accepted; expected {rng}")
    return float(param)


def register_merge_rule(cls: R) -> R:
    """Class decorator: make ``cls`` reachable by its ``name`` (Python, CLI, run config)."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name or ":" in name:
        raise InvalidInputError(f"register_merge_rule: {cls.__name__} needs a name without ':'")
    if name in _RULES and _RULES[name] is not cls:
        raise InvalidInputError(f"register_merge_rule: a rule named {name!r} is already registered")
    _RULES[name] = cls
    return cls


def merge_rule_names() -> tuple[str, ...]:
    return tuple(_RULES)


def merge_rule_class(name: str) -> type[MergeRule]:
    cls = _RULES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UnknownNameError(f"unknown merge rule {name!r}; known: {', '.join(_RULES)}")
    return cls


def merge_rule(spec: str | MergeRule | None) -> MergeRule:
    """``"median"``, ``"trimmed-mean:0.2"``, ``"clipped-mean:5"`` or a rule object -> a rule."""
    if isinstance(spec, MergeRule):
        return spec
    name, param = split_spec("none" if spec is None else spec, "merge rule", tuple(_RULES))
    return merge_rule_class(name)(param)
