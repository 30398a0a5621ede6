"""Server-side aggregation of client updates into the global model.

``aggregate(global_model, updates, rule)`` updates ``global_model`` in place and returns it.
Every update is validated (strategy accepted by the rule, plan made for this global model,
tensors exactly those the plan holds, all values finite) before anything is written: a bad
update raises :class:`~edge_sdk.errors.UpdateRejectedError` and leaves the model untouched.

``rule`` is a registered rule (``fedavg``, ``fedtsa`` with its options, or one added with
:func:`register_rule`) or the name of a strategy (:mod:`edge_sdk.strategies`), whose own
merge runs: for the submodel strategies, the per-element mean over the clients that hold
each element.

Robust merging and differential privacy: a strategy built with
``merge=MergeSettings(rule=merge_rule("median"), dp=DPSettings(...))`` (rules are registered
objects, :mod:`edge_sdk.aggregation.robust`); see :mod:`edge_sdk.aggregation.robust_merge`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from edge_sdk.errors import InvalidInputError, UnknownNameError
from edge_sdk.training import Update

from edge_sdk.aggregation.robust import MergeRule, merge_rule, merge_rule_names, register_merge_rule
from edge_sdk.aggregation.robust_merge import MergeReport, MergeSettings

__all__ = ["aggregate", "register_rule", "rule_names", "MergeSettings", "MergeReport", "MergeRule", "merge_rule",
           "merge_rule_names", "register_merge_rule"]

RuleFn = Callable[..., nn.Module]  # (global_model, updates, **options) -> global_model


def _registry() -> dict[str, RuleFn]:
    from edge_sdk.aggregation.fedtsa import fedtsa
    from edge_sdk.aggregation.rules import fedavg

    return {"fedavg": fedavg, "fedtsa": fedtsa}


_RULES: dict[str, RuleFn] = _registry()


def rule_names() -> tuple[str, ...]:
    """Every registered rule and every strategy name ``aggregate`` accepts."""
    from edge_sdk.strategies import strategy_names

    return tuple(_RULES) + tuple(n for n in strategy_names() if n not in _RULES)


def register_rule(name: str, fn: RuleFn) -> None:
    """Add an aggregation rule ``fn(global_model, updates, **options) -> global_model``."""
    if not isinstance(name, str) or not name or not callable(fn):
        raise InvalidInputError("register_rule: expected a non-empty name and a callable")
    _RULES[name] = fn


def aggregate(global_model: nn.Module, updates: Sequence[Update], rule: str, **options: Any) -> nn.Module:
    """Merge ``updates`` into ``global_model`` in place with ``rule``; returns the model.

    ``options`` go to a registered rule (only ``fedtsa`` takes any: ``server_data``,
    ``temperature``, ``distill_steps``, ...; see :func:`edge_sdk.aggregation.fedtsa.fedtsa`)."""
    if not isinstance(global_model, nn.Module):
        raise InvalidInputError(f"aggregate: global_model must be a torch.nn.Module, got {type(global_model).__name__}")
    updates = list(updates) if not isinstance(updates, list) else updates
    fn = _RULES.get(rule)
    if fn is not None:
        return fn(global_model, updates, **options)
    from edge_sdk.strategies import strategy_names

    if rule not in strategy_names():
        raise UnknownNameError(f"unknown aggregation rule {rule!r}; known: {', '.join(rule_names())}")
    if options:
        raise InvalidInputError(f"aggregate({rule}): unknown option(s) {', '.join(sorted(options))}; none accepted")
    from edge_sdk.strategies import create_strategy

    return create_strategy(rule).merge(global_model, updates)
