"""The model registry: :func:`register_model` beside each builder, and the lookups on it.

This module holds the mechanism only, no model, so that a new model is one new file (its
module, builder and ``@register_model``) plus its import in ``edge_sdk/models/__init__.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from torch import nn

from edge_sdk.errors import InvalidInputError, UnknownNameError
from edge_sdk.models._base import (
    ModelConfig,
    ModelSpec,
    Options,
    check_positive_float,
    check_positive_int,
)

if TYPE_CHECKING:
    from edge_sdk.models.analytic import Term

__all__ = [
    "ModelEntry",
    "register_model",
    "unregister_model",
    "entry",
    "names",
    "spec",
    "resolve_config",
    "create",
    "width_for_ratio",
    "create_at_ratio",
]

DEFAULT_NUM_CLASSES = 10

Builder = Callable[[ModelConfig], nn.Module]
Check = Callable[[str, Options], Options]
InputShape = Callable[[Options], tuple[int, ...]]
FlopFormula = Callable[[ModelConfig, int], "list[Term]"]


@dataclass(frozen=True)
class ModelEntry:
    """What :func:`register_model` recorded for one name."""

    spec: ModelSpec
    defaults: Mapping[str, Any]  # every model-specific option with its default
    check: Check  # validates and normalises the options, naming the bad one
    input_shape: InputShape  # one example's shape, from the checked options
    build: Builder
    flops: FlopFormula | None  # closed-form FLOPs per layer, for edge_sdk.models.analytic


_REGISTRY: dict[str, ModelEntry] = {}


def _accept(name: str, options: Options) -> Options:
    return dict(options)


def register_model(
    name: str,
    *,
    description: str,
    default_depth: int,
    defaults: Mapping[str, Any],
    input_shape: InputShape,
    check: Check | None = None,
    flops: FlopFormula | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``build(config) -> nn.Module`` as model ``name``.

    ``defaults`` lists every option the model takes besides width, depth and num_classes
    (``create`` refuses any other); ``check(name, options)`` returns them validated;
    ``input_shape(options)`` is the shape of one example; ``flops(config, batch_size)``, if
    given, returns the per-layer :class:`~edge_sdk.models.analytic.Term` s that
    ``analytic_flops`` sums. The defaults are checked here, so a bad one fails at import.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"register_model: name={name!r} is not accepted; expected a non-empty string")
    check_positive_int(name, "default_depth", default_depth)

    def decorator(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise InvalidInputError(
                f"register_model: model {name!r} is already registered; choose another name "
                "or unregister_model it first"
            )
        checker = check or _accept
        shape = tuple(input_shape(checker(name, dict(defaults))))
        model_spec = ModelSpec(name, shape, DEFAULT_NUM_CLASSES, description, default_depth)
        _REGISTRY[name] = ModelEntry(
            model_spec, MappingProxyType(dict(defaults)), checker, input_shape, build, flops
        )
        return build

    return decorator


def unregister_model(name: str) -> None:
    """Remove model ``name`` (for tests and for replacing a user model)."""
    entry(name)
    del _REGISTRY[name]


def names() -> list[str]:
    """Sorted names of the registered models."""
    return sorted(_REGISTRY)


def entry(name: Any) -> ModelEntry:
    """The registration of ``name``; :class:`UnknownNameError` listing the valid names if none."""
    found = _REGISTRY.get(name) if isinstance(name, str) else None
    if found is None:
        raise UnknownNameError(f"unknown model {name!r}; valid names: {', '.join(names())}")
    return found


def spec(name: str) -> ModelSpec:
    """Static description (default input shape, classes, depth) of model ``name``."""
    return entry(name).spec


def resolve_config(
    name: str,
    *,
    width: float = 1.0,
    depth: int | None = None,
    num_classes: int = DEFAULT_NUM_CLASSES,
    **kwargs: Any,
) -> ModelConfig:
    """Validate arguments and return the :class:`ModelConfig` ``create`` would build."""
    found = entry(name)
    width = check_positive_float(name, "width", width)
    depth = found.spec.default_depth if depth is None else depth
    depth = check_positive_int(name, "depth", depth)
    num_classes = check_positive_int(name, "num_classes", num_classes)
    unknown = sorted(set(kwargs) - set(found.defaults))
    if unknown:
        raise InvalidInputError(
            f"{name}: unknown argument {unknown[0]!r}; accepted: width, depth, num_classes, "
            + ", ".join(sorted(found.defaults))
        )
    options = found.check(name, {**found.defaults, **kwargs})
    return ModelConfig(name, width, depth, num_classes, tuple(found.input_shape(options)), options)


def create(
    name: str,
    *,
    width: float = 1.0,
    depth: int | None = None,
    num_classes: int = DEFAULT_NUM_CLASSES,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name``; the result carries its :class:`ModelConfig` as ``.config``."""
    cfg = resolve_config(name, width=width, depth=depth, num_classes=num_classes, **kwargs)
    # the builder gets its own options dict, so nothing it does reaches model.config
    model = entry(name).build(dataclasses.replace(cfg, options=dict(cfg.options)))
    model.config = cfg
    return model


def width_for_ratio(ratio: float) -> float:
    """Width multiplier for a size ``ratio`` (fraction of parameters): ``sqrt(ratio)``."""
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, (int, float))
        or not (0 < ratio <= 1)  # also rejects NaN
    ):
        raise InvalidInputError(f"ratio={ratio!r} is not accepted; expected 0 < ratio <= 1")
    return float(ratio) ** 0.5


def create_at_ratio(name: str, ratio: float, **kwargs: Any) -> nn.Module:
    """Build ``name`` at the width for size ``ratio`` (``width`` may not be given too)."""
    if "width" in kwargs:
        raise InvalidInputError(
            f"{name}: create_at_ratio takes ratio, not width; drop width={kwargs['width']!r}"
        )
    return create(name, width=width_for_ratio(ratio), **kwargs)
