"""Name -> strategy class registry (a decorator beside each class, as timm registers models)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from edge_sdk.errors import InvalidInputError, MissingDependencyError, UnknownNameError

if TYPE_CHECKING:
    from edge_sdk.strategies.base import Strategy

__all__ = ["register_strategy", "strategy_class", "strategy_names", "create_strategy", "compatible_models"]

_STRATEGIES: dict[str, type[Strategy]] = {}
S = TypeVar("S", bound="type[Strategy]")


def register_strategy(cls: S) -> S:
    """Class decorator: make ``cls`` reachable by its ``name`` everywhere (Python API,
    ``edge-sdk simulate``, the Flower ServerApp). Its options get their CLI / run-config keys."""
    from dataclasses import replace

    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"register_strategy: {cls.__name__} has no name")
    if name in _STRATEGIES and _STRATEGIES[name] is not cls:
        raise InvalidInputError(f"register_strategy: a strategy named {name!r} is already registered "
                                f"({_STRATEGIES[name].__name__})")
    cls.options = tuple(o if o.key else replace(o, key=f"{name}-{o.name.replace('_', '-')}")
                        for o in cls.options)
    _STRATEGIES[name] = cls
    return cls


def strategy_names(*, available_only: bool = False) -> tuple[str, ...]:
    """Registered strategy names (with ``available_only``, those whose extras are installed)."""
    return tuple(n for n, c in _STRATEGIES.items() if not available_only or c.available())


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name``; UnknownNameError lists the valid names."""
    cls = _STRATEGIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UnknownNameError(f"unknown strategy {name!r}; known: {', '.join(_STRATEGIES)}")
    return cls


def create_strategy(name: str, **kwargs: Any) -> Strategy:
    """``strategy_class(name)(**kwargs)``, refused with MissingDependencyError when an extra
    it needs is not installed."""
    cls = strategy_class(name)
    if not cls.available():
        raise MissingDependencyError(f"strategy {name!r} is not available in this build: {cls.missing()}")
    return cls(**kwargs)


def compatible_models(name: str) -> list[str]:
    """Reference models strategy ``name`` can train (built small to check)."""
    from edge_sdk import models
    from edge_sdk.errors import EdgeSDKError

    cls = strategy_class(name)
    out = []
    for model_name in models.names():
        try:
            model = models.create(model_name, width=0.25, depth=2)
        except EdgeSDKError:  # a model that cannot be built this small is skipped
            continue
        if cls.model_problem(model) is None:
            out.append(model_name)
    return out
