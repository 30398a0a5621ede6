"""Submodel plans: what one client holds of the global model for one round.

``plan(strategy, global_model, ratio, ...)`` for ``fiarse`` (parameter-level masks) or any
registered channel selector (``fiarse-structured`` / ``heterofl`` / ``fedrolex`` built in:
channel-level, physically smaller submodels; see :mod:`edge_sdk.submodel.selectors`), and
``plan_fedra(global_model, capacities, rng=...)`` for FedRA block allocation.
A ratio is the fraction of the global model's parameters the client holds.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import InvalidInputError, UnknownNameError
from edge_sdk.submodel._plan import SubmodelPlan, model_signature
from edge_sdk.submodel.fiarse import FiarsePlan, FiarseSubmodel, plan_fiarse
from edge_sdk.submodel.selectors import ChannelSelector, SelectionContext, make_rng, register_selector, selector_names
from edge_sdk.submodel.structured import StructuredPlan, plan_structured

__all__ = [
    "plan",
    "plan_names",
    "ChannelSelector",
    "SelectionContext",
    "register_selector",
    "selector_names",
    "plan_fedra",
    "SubmodelPlan",
    "FiarsePlan",
    "FiarseSubmodel",
    "StructuredPlan",
    "FedRAPlan",
    "LoRALinear",
    "add_lora",
    "model_signature",
]


def plan_names() -> tuple[str, ...]:
    """Strategies :func:`plan` accepts: ``fiarse`` and every registered channel selector
    (including those a strategy module registers beside itself, e.g. Federated Dropout's)."""
    import edge_sdk.strategies  # noqa: F401 - registers the selectors that strategies bring

    return ("fiarse", *selector_names())


def check_ratio(ratio: Any, what: str = "ratio") -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not math.isfinite(float(ratio)) \
            or not 0.0 < float(ratio) <= 1.0:
        raise InvalidInputError(f"{what}={ratio!r} is not accepted; expected a number in (0, 1]")
    return float(ratio)


def plan(strategy: str, global_model: nn.Module, ratio: float, *, round: int = 0,
         example_input: torch.Tensor | None = None, rng: np.random.Generator | int | None = None,
         **options: Any) -> SubmodelPlan:
    """Make the plan of one client for one round.

    ``fiarse`` options: ``scope="global"`` (one top-k threshold over all conv/linear weights
    and biases, the paper's default) or ``"layer"``; ``budget="maskable"`` (``int(ratio x
    maskable)`` elements, the released code's rule, default) or ``"all"`` (the held share of all
    parameters equals ``ratio``). Structured strategies trace the model
    with torch.fx and need ``example_input`` unless the model has ``config.input_shape``.
    ``rng`` (a Generator, an int seed, or None for one seeded by ``round``) goes to the
    channel selector; the built-in strategies are deterministic and do not use it.
    """
    names = plan_names()
    if strategy not in names:
        raise UnknownNameError(f"unknown submodel strategy {strategy!r}; known: {', '.join(names)}"
                               f" (and plan_fedra for fedra)")
    ratio = check_ratio(ratio)
    if not isinstance(global_model, nn.Module):
        raise InvalidInputError(f"global_model must be a torch.nn.Module, got {type(global_model).__name__}")
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise InvalidInputError(f"round={round!r} is not accepted; expected an integer >= 0")
    generator = make_rng(rng, round)
    if strategy == "fiarse":
        unknown = set(options) - {"scope", "budget"}
        if unknown:
            raise InvalidInputError(f"fiarse: unknown option(s) {', '.join(sorted(unknown))}; accepted: scope, budget")
        return plan_fiarse(global_model, ratio, round=round, **options)
    if options:
        raise InvalidInputError(f"{strategy}: unknown option(s) {', '.join(sorted(options))}; none accepted")
    return plan_structured(strategy, global_model, ratio, round=round, example_input=example_input,
                           rng=generator)


def __getattr__(name: str) -> Any:
    if name in ("plan_fedra", "FedRAPlan"):
        from edge_sdk.submodel import fedra

        return getattr(fedra, name)
    if name in ("LoRALinear", "add_lora"):
        from edge_sdk.submodel import lora

        return getattr(lora, name)
    raise AttributeError(f"module 'edge_sdk.submodel' has no attribute {name!r}")
