"""Data types and argument checks shared by the reference models."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edge_sdk.errors import InvalidInputError

__all__ = [
    "ModelSpec",
    "ModelConfig",
    "scaled",
    "check_positive_int",
    "check_positive_float",
    "check_choice",
    "check_bool",
    "check_patches",
    "image_input_shape",
    "Options",
]

Options = dict[str, Any]


@dataclass(frozen=True)
class ModelSpec:
    """Static description of a reference model at its defaults."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    description: str
    default_depth: int


@dataclass(frozen=True)
class ModelConfig:
    """How one model instance was built; ``create(**asdict-ish)`` rebuilds it.

    ``options`` holds every model-specific keyword with its resolved value, so
    ``create(cfg.name, width=w, depth=cfg.depth, num_classes=cfg.num_classes, **cfg.options)``
    gives the same architecture at another width.
    """

    name: str
    width: float
    depth: int
    num_classes: int
    input_shape: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


def scaled(base: int, width: float) -> int:
    """Channel count ``round(base * width)``, at least 1."""
    return max(1, int(round(base * width)))


def check_positive_int(model: str, arg: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(
            f"{model}: {arg}={value!r} is not accepted; expected an integer >= {minimum}"
        )
    return int(value)


def check_positive_float(model: str, arg: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidInputError(
            f"{model}: {arg}={value!r} is not accepted; expected a finite number > 0"
        )
    return float(value)


def check_choice(model: str, arg: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidInputError(
            f"{model}: {arg}={value!r} is not accepted; expected one of {', '.join(choices)}"
        )
    return value


def check_bool(model: str, arg: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{model}: {arg}={value!r} is not accepted; expected True or False")
    return value


def check_patches(model: str, o: Options) -> tuple[int, int, int]:
    """``(img_size, patch_size, in_channels)`` of a patch-embedding model, whose patches
    must tile the image."""
    img = check_positive_int(model, "img_size", o["img_size"])
    patch = check_positive_int(model, "patch_size", o["patch_size"])
    if img % patch:
        raise InvalidInputError(
            f"{model}: patch_size={patch} does not divide img_size={img}; expected a divisor"
        )
    return img, patch, check_positive_int(model, "in_channels", o["in_channels"])


def image_input_shape(o: Options) -> tuple[int, ...]:
    """``(in_channels, img_size, img_size)``: the input of every square-image model."""
    return (o["in_channels"], o["img_size"], o["img_size"])
