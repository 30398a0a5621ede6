"""Server-side aggregation of client updates into the global model.

``aggregate(global_model, updates, rule)`` updates ``global_model`` in place and returns it.
Every update is validated (strategy accepted by the rule, plan made for this global model,
tensors exactly those the plan holds, all values finite) before anything is written: a bad
update raises :class:`~edge_sdk.errors.UpdateRejectedError` and leaves the model untouched.
Rules live in a registry (name -> function); :func:`register_rule` adds one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from torch import nn

from edge_sdk.errors import InvalidInputError, UnknownNameError
from edge_sdk.training import Update

__all__ = ["RULES", "aggregate", "register_rule", "rule_names"]

RuleFn = Callable[..., nn.Module]  # (global_model, updates, **options) -> global_model


def _registry() -> dict[str, RuleFn]:
    from edge_sdk.aggregation import fedra, rules

    reg: dict[str, RuleFn] = {
        name: partial(rules.per_element, rule=name)
        for name in ("fiarse", "fiarse-structured", "heterofl", "fedrolex")
    }
    reg["fedra"] = fedra.aggregate_fedra
    reg["fedavg"] = partial(rules.fedavg, rule="fedavg")
    from edge_sdk.aggregation.fedtsa import fedtsa

    reg["fedtsa"] = fedtsa
    return reg


_RULES: dict[str, RuleFn] = _registry()
RULES = ("fiarse", "fiarse-structured", "heterofl", "fedrolex", "fedra", "fedavg", "fedtsa")


def rule_names() -> tuple[str, ...]:
    """Every registered rule (RULES plus rules added with register_rule)."""
    return tuple(_RULES)


def register_rule(name: str, fn: RuleFn) -> None:
    """Add an aggregation rule ``fn(global_model, updates, **options) -> global_model``."""
    if not isinstance(name, str) or not name or not callable(fn):
        raise InvalidInputError("register_rule: expected a non-empty name and a callable")
    _RULES[name] = fn


def aggregate(global_model: nn.Module, updates: Sequence[Update], rule: str, **options: Any) -> nn.Module:
    """Merge ``updates`` into ``global_model`` in place with ``rule``; returns the model.

    ``options`` go to the rule (only ``fedtsa`` takes any: ``server_data``, ``temperature``,
    ``distill_steps``, ...; see :func:`edge_sdk.aggregation.fedtsa.fedtsa`)."""
    fn = _RULES.get(rule)
    if fn is None:
        raise UnknownNameError(f"unknown aggregation rule {rule!r}; known: {', '.join(_RULES)}")
    if not isinstance(global_model, nn.Module):
        raise InvalidInputError(f"aggregate: global_model must be a torch.nn.Module, got {type(global_model).__name__}")
    return fn(global_model, list(updates) if not isinstance(updates, list) else updates, **options)
