"""Name -> export format, filled by :func:`register_format` beside each format's class."""

from __future__ import annotations

from typing import TypeVar

from edge_sdk.errors import InvalidInputError, UnknownNameError
from edge_sdk.export.formats._base import ExportFormat

__all__ = ["register_format", "format_names", "get_format", "formats_taking"]

_FORMATS: dict[str, ExportFormat] = {}
F = TypeVar("F", bound=type[ExportFormat])


def register_format(cls: F) -> F:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, ExportFormat)):
        raise InvalidInputError(f"register_format: expected an ExportFormat subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"register_format: {cls.__name__} has no name")
    missing = [a for a in ("weight_range", "act_range", "default_bits") if not hasattr(cls, a)]
    if missing:
        raise InvalidInputError(f"register_format: {cls.__name__} does not set {', '.join(missing)}")
    old = _FORMATS.get(name)
    if old is not None and type(old).__qualname__ != cls.__qualname__:
        raise InvalidInputError(f"register_format: {name!r} is already registered by {type(old).__name__}")
    _FORMATS[name] = cls()
    return cls


def format_names() -> tuple[str, ...]:
    """Every registered format, in registration order."""
    return tuple(_FORMATS)


def get_format(name: str) -> ExportFormat:
    """The registered format ``name``; UnknownNameError lists the valid ones."""
    fmt = _FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise UnknownNameError(f"unknown export format {name!r}; known: {', '.join(_FORMATS)}")
    return fmt


def formats_taking(kind: str, bits: int) -> list[str]:
    """The formats that can write ``kind`` bits of width ``bits`` (for error hints)."""
    out = []
    for name, fmt in _FORMATS.items():
        low, high = fmt.bit_range(kind)
        if isinstance(bits, int) and low <= bits <= high:
            out.append(name)
    return out
