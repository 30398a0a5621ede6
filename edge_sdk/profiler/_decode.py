"""Typed decoding of a report's JSON into its dataclasses, driven by their annotations.

A report arrives from another node or a file, so every field is checked against its
annotation (``bool`` is not a number, numbers are finite and within the field's range,
nested objects are the right dataclass) and only :class:`SchemaError` escapes, naming the
field. The leaf checks are the SDK's shared ones (:mod:`edge_sdk._decode`); ranges come
from the dataclass field's ``metadata``: ``min`` / ``max`` (inclusive), ``gt`` (exclusive
lower bound), ``choices``, ``items`` (rules for a list's items). Every number is otherwise
in [0, :data:`MAX_NUMBER`].
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from edge_sdk._decode import (
    MAX_INT,
    check_bool,
    check_choice,
    check_dict,
    check_float,
    check_int,
    check_keys,
    check_list,
    check_str,
)
from edge_sdk.errors import LimitExceededError, SchemaError

MAX_NUMBER = 1e18  # no field of a report is legitimately larger (bytes, FLOPs, ms)
MAX_TEXT = 4096  # characters in one string field
MAX_ITEMS = 100_000  # items in one list field


def build(cls: type, data: Any, where: str) -> Any:
    """An instance of dataclass ``cls`` from the JSON object ``data``; SchemaError otherwise."""
    doc = check_dict(data, where)
    fields = dataclasses.fields(cls)
    required = [f.name for f in fields if _required(f)]
    check_keys(doc, required, [f.name for f in fields if not _required(f)], where)
    hints = typing.get_type_hints(cls)
    values = {f.name: decode(doc[f.name], hints[f.name], f"{where}.{f.name}", f.metadata) for f in fields if f.name in doc}
    return cls(**values)


def decode(value: Any, annotation: Any, where: str, rules: Mapping[str, Any] | None = None) -> Any:
    """``value`` checked against ``annotation`` (str, int, float, bool, list[X], X | None, a
    dataclass) and the range ``rules``."""
    rules = rules or {}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(annotation):
            return None
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        items = check_list(value, where)
        if len(items) > MAX_ITEMS:
            raise LimitExceededError(f"{where}: {len(items)} items; at most {MAX_ITEMS} are accepted")
        return [decode(v, item, f"{where}[{i}]", rules.get("items")) for i, v in enumerate(items)]
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, where)
    if annotation is str:
        if "choices" in rules:
            return check_choice(value, where, rules["choices"])
        return check_str(value, where, MAX_TEXT)
    if annotation is bool:
        return check_bool(value, where)
    if annotation is int:
        return check_int(value, where, int(rules.get("min", 0)), int(min(rules.get("max", MAX_INT), MAX_INT)))
    if annotation is float:
        low = rules.get("gt", rules.get("min", 0))
        return check_float(value, where, low, rules.get("max", MAX_NUMBER), lo_open="gt" in rules)
    raise SchemaError(f"{where}: unsupported annotation {annotation!r}")  # pragma: no cover


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
