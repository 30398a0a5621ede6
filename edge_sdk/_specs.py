"""``NAME[:PARAM]`` specs of registered objects (merge rules, attacks), parsed one way."""

from __future__ import annotations

from edge_sdk.errors import InvalidInputError

__all__ = ["split_spec"]


def split_spec(spec: object, what: str, names: tuple[str, ...]) -> tuple[str, float | None]:
    """``"trimmed-mean:0.2"`` -> ("trimmed-mean", 0.2); ``"median"`` -> ("median", None).
    ``what`` names the kind in errors ("merge rule"); ``names`` are the valid names."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(f"{what} {spec!r} is not accepted; expected NAME[:PARAM] with NAME one of "
                                f"{', '.join(names)}")
    name, _, raw = spec.strip().partition(":")
    if not raw:
        return name, None
    try:
        return name, float(raw)
    except ValueError:
        raise InvalidInputError(f"{what} {spec!r}: {raw!r} is not a number") from None
