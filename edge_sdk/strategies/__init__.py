"""Federated methods, one registered class each, driven alike by simulation and Flower.

``create_strategy(name, seed=..., **options)`` builds one; ``strategy_names()`` lists them;
``strategy_class(name).options`` lists its options (each also a CLI flag of ``edge-sdk
simulate`` and a Flower run-config key). A new method is one new module with a
``@register_strategy`` class, plus its import line below.
"""

from __future__ import annotations

from edge_sdk.strategies._registry import (
    compatible_models,
    create_strategy,
    register_strategy,
    strategy_class,
    strategy_names,
)
from edge_sdk.strategies.base import Strategy, kept_fraction
from edge_sdk.strategies.options import Option

# registration: one import per strategy module
from edge_sdk.strategies import fiarse as _fiarse  # noqa: E402,F401
from edge_sdk.strategies import fiarse_structured as _fiarse_structured  # noqa: E402,F401
from edge_sdk.strategies import heterofl as _heterofl  # noqa: E402,F401
from edge_sdk.strategies import fedrolex as _fedrolex  # noqa: E402,F401
from edge_sdk.strategies import fedra as _fedra  # noqa: E402,F401
from edge_sdk.strategies import fedtsa as _fedtsa  # noqa: E402,F401
from edge_sdk.strategies import fedavg as _fedavg  # noqa: E402,F401
from edge_sdk.strategies import feddropout as _feddropout  # noqa: E402,F401

__all__ = [
    "Strategy",
    "Option",
    "create_strategy",
    "register_strategy",
    "strategy_class",
    "strategy_names",
    "kept_fraction",
    "compatible_models",
]
