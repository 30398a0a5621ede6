"""The ladder of submodel sizes tiers are given: fractions in (0, 1], largest first."""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Real
from typing import Iterable, Union

from edge_sdk.errors import InvalidInputError

#: Default ladder: the full model, then a quarter, a sixteenth and a sixty-fourth of it.
DEFAULT_LADDER: tuple[float, ...] = (1.0, 0.25, 0.0625, 0.015625)

LadderLike = Union[str, Iterable[Union[str, float, int, Fraction]]]

_TOL = 1e-9


def parse_ladder(ladder: LadderLike) -> tuple[float, ...]:
    """Validate a ladder and return it as floats, largest first, without duplicates.

    Accepts a sequence of numbers or strings (``"1/4"``, ``"0.25"``) or one comma-separated
    string (``"1,1/4,1/16"``). Every size must be a fraction in (0, 1]. Raises
    :class:`InvalidInputError` naming the bad entry otherwise.
    """
    if isinstance(ladder, str):
        items: list = [part for part in ladder.split(",")]
    else:
        try:
            items = list(ladder)
        except TypeError:
            raise InvalidInputError(
                f"ladder: expected a list of sizes such as 1,1/4,1/16, got {type(ladder).__name__}"
            ) from None
    if not items:
        raise InvalidInputError("ladder: empty; give at least one size in (0, 1], e.g. 1,1/4,1/16,1/64")
    sizes = []
    for item in items:
        value = _parse_size(item)
        if not (math.isfinite(value) and 0.0 < value <= 1.0 + _TOL):
            raise InvalidInputError(f"ladder: size {str(item).strip()!r} is not in (0, 1]")
        sizes.append(min(value, 1.0))
    unique: list[float] = []
    for value in sorted(sizes, reverse=True):
        if not unique or abs(unique[-1] - value) > _TOL * max(1.0, value):
            unique.append(value)
    return tuple(unique)


def snap_down(ratio: float, ladder: tuple[float, ...]) -> float | None:
    """The largest ladder size not above ``ratio`` (with a 1e-9 relative tolerance),
    or ``None`` when ``ratio`` is below the smallest size."""
    for size in ladder:
        if size <= ratio * (1.0 + _TOL):
            return size
    return None


def _parse_size(item: object) -> float:
    if isinstance(item, bool):
        raise InvalidInputError(f"ladder: size {item!r} is not a number")
    if isinstance(item, (Real, Fraction)):
        return float(item)
    if isinstance(item, str):
        text = item.strip()
        try:
            return float(Fraction(text))
        except (ValueError, ZeroDivisionError):
            raise InvalidInputError(
                f"ladder: size {text!r} is not a number or fraction such as 1/4 or 0.25"
            ) from None
    raise InvalidInputError(f"ladder: size {item!r} is not a number or fraction such as 1/4")
