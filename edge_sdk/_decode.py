"""Bounded decoding: the checks every decoder of untrusted bytes shares.

A plan, update or payload comes from a node we do not trust, and a hardware profile from a
file anyone can write. Their decoders must refuse, with a typed error naming the field,
anything that would make them allocate more than a small multiple of their input or raise
an untyped exception. This module holds the pieces: the limits (:class:`DecodeLimits`), a
memory :class:`Budget` charged *before* each allocation, a size- and depth-checked JSON
reader, a zlib inflater with an exact output bound, and typed field checks (a bool is never
an int; numbers are finite and in range).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edge_sdk.errors import LimitExceededError, SchemaError

__all__ = [
    "DecodeLimits",
    "LIMITS",
    "Budget",
    "MAX_INT",
    "load_json",
    "inflate",
    "field",
    "check_keys",
    "check_int",
    "check_float",
    "check_number",
    "check_str",
    "check_list",
    "check_dict",
    "check_bool",
    "check_choice",
    "check_shape",
    "numel",
    "show",
]

MAX_INT = 2**53  # the largest integer every JSON reader holds exactly
_MAX_INT_DIGITS = 20  # longer JSON integers are refused before int() parses them
_MAX_DIM = 2**40  # one tensor dimension; products are checked against the budget as well


@dataclass(frozen=True)
class DecodeLimits:
    """What a decoder accepts; raise a field only for a model that needs it.

    A decoder may allocate ``base_bytes + bytes_per_input_byte x len(input)`` bytes of
    decoded data (tensors, masks, index arrays): with the JSON header (at most
    ``max_header_bytes``) this keeps a decode within 64 MiB + 4x its input, measured by
    bench/bench_fuzz.py. A FIARSE mask costs one byte per element of the model's maskable
    tensors, so the default reads plans of models up to about 30M maskable parameters
    whatever their compressed size, and larger ones when their bytes are larger.
    ``max_model_elements`` bounds a plan's signature and the model a payload's
    ``model_options`` would build (2**28 elements = 1 GiB of float32).
    """

    max_header_bytes: int = 1 << 20
    max_json_depth: int = 32
    base_bytes: int = 32 << 20
    bytes_per_input_byte: int = 2
    max_model_elements: int = 1 << 28
    max_dims: int = 8
    max_example_elements: int = 1 << 24


LIMITS = DecodeLimits()


class Budget:
    """Bytes a decode may still allocate; :meth:`take` is called before each allocation."""

    def __init__(self, total: int, what: str) -> None:
        self.total = int(total)
        self.left = int(total)
        self.what = what

    @classmethod
    def for_input(cls, size: int, what: str, limits: DecodeLimits | None = None) -> Budget:
        lim = limits or LIMITS
        return cls(lim.base_bytes + lim.bytes_per_input_byte * int(size), what)

    def take(self, nbytes: int, where: str) -> None:
        if nbytes > self.left:
            raise LimitExceededError(
                f"{self.what}: {where} would decode to {nbytes} bytes, more than the {self.left} bytes "
                f"this input may still decode to (limit: {self.total} bytes for this input; "
                f"see edge_sdk._decode.DecodeLimits)")
        self.left -= nbytes


def show(value: Any) -> str:
    """A short repr of ``value`` for an error message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # e.g. an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SchemaError(f"duplicate key {show(key)}")
        out[key] = value
    return out


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise SchemaError(f"integer of {len(text)} digits; at most {_MAX_INT_DIGITS} are accepted")
    return int(text)


def _depth_exceeds(doc: Any, limit: int) -> bool:
    """True when ``doc`` nests lists/objects deeper than ``limit`` (iterative walk)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def load_json(raw: bytes | memoryview, what: str, limits: DecodeLimits | None = None) -> dict[str, Any]:
    """A JSON object from UTF-8 ``raw``: at most ``max_header_bytes``, nested at most
    ``max_json_depth`` deep, integers of at most 20 digits, no duplicate keys.
    NaN and Infinity parse as floats; the field checks decide where they are allowed."""
    lim = limits or LIMITS
    if len(raw) > lim.max_header_bytes:
        raise LimitExceededError(f"{what}: header of {len(raw)} bytes; at most {lim.max_header_bytes} are accepted")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{what}: header is not UTF-8 (byte {exc.start})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_unique_object, parse_int=_parse_int)
    except SchemaError as exc:
        raise SchemaError(f"{what}: header: {exc}") from None
    except RecursionError:
        raise LimitExceededError(f"{what}: header nests deeper than {lim.max_json_depth} levels") from None
    except ValueError as exc:  # json.JSONDecodeError, or int() of a malformed number
        raise SchemaError(f"{what}: header is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"{what}: header is a JSON {type(doc).__name__}, expected an object")
    if _depth_exceeds(doc, lim.max_json_depth):
        raise LimitExceededError(f"{what}: header nests deeper than {lim.max_json_depth} levels")
    return doc


def inflate(chunk: Any, size: int, where: str) -> bytes:
    """Exactly ``size`` bytes from the zlib stream ``chunk``; never more are produced, and a
    stream that is shorter, longer or followed by other bytes is refused."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(chunk, size) if size else d.decompress(chunk, 1)
    except zlib.error as exc:
        raise SchemaError(f"{where} is not a valid zlib stream ({exc})") from None
    if len(out) != size or not d.eof or d.unconsumed_tail or d.unused_data:
        raise SchemaError(f"{where} does not inflate to its {size} bytes")
    return out


# ---- field checks -----------------------------------------------------------------------


def field(doc: dict[str, Any], key: str, where: str) -> Any:
    """``doc[key]``, or SchemaError naming the missing field."""
    if key not in doc:
        raise SchemaError(f"{where}: field {key!r} is missing")
    return doc[key]


def check_keys(doc: dict[str, Any], required: Iterable[str], optional: Iterable[str], where: str) -> None:
    """Every required key present and no key outside required + optional."""
    req, opt = tuple(required), tuple(optional)
    for key in req:
        field(doc, key, where)
    unknown = [k for k in doc if k not in req and k not in opt]
    if unknown:
        raise SchemaError(f"{where}: unknown field {show(unknown[0])}; accepted: {', '.join(req + opt)}")


def check_int(value: Any, where: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SchemaError(f"{where} must be an integer in [{lo}, {hi}], got {show(value)}")
    return value


def check_float(value: Any, where: str, lo: float, hi: float, *, lo_open: bool = False,
                allow_inf: bool = False) -> float:
    """A JSON number (int or float, not bool) in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``);
    finite unless ``allow_inf`` (then +inf is accepted too). NaN never is."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok:
        try:
            x = float(value)
        except OverflowError:
            ok = False
        else:
            if math.isinf(x) and x > 0 and allow_inf:
                return x
            ok = math.isfinite(x) and (lo < x if lo_open else lo <= x) and x <= hi
    if not ok:
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]" + (" or +inf" if allow_inf else "")
        raise SchemaError(f"{where} must be a finite number in {span}, got {show(value)}")
    return x


def check_number(value: Any, where: str) -> float:
    """Any JSON number (not bool) as a float, NaN and infinities included: for values that
    are data (metrics), not structure."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{where} must be a number, got {show(value)}")
    return float(value)


def check_str(value: Any, where: str, max_len: int = 1024) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise SchemaError(f"{where} must be a non-empty string of at most {max_len} characters, got {show(value)}")
    return value


def check_list(value: Any, where: str, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        what = "a list" if length is None else f"a list of {length} items"
        raise SchemaError(f"{where} must be {what}, got {show(value)}")
    return value


def check_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(f"{where} must be a JSON object, got {show(value)}")
    return value


def check_choice(value: Any, where: str, choices: Iterable[str]) -> str:
    """One of ``choices`` (strings); anything else, hashable or not, is refused by name."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise SchemaError(f"{where} {show(value)} is not accepted; accepted: {', '.join(options)}")
    return value


def check_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SchemaError(f"{where} must be true or false, got {show(value)}")
    return value


def check_shape(value: Any, where: str, limits: DecodeLimits | None = None) -> tuple[int, ...]:
    """A tensor shape: at most ``max_dims`` integers, each in [0, 2**40]."""
    lim = limits or LIMITS
    dims = check_list(value, where)
    if len(dims) > lim.max_dims:
        raise SchemaError(f"{where} has {len(dims)} dimensions; at most {lim.max_dims} are accepted")
    if all(type(d) is int and 0 <= d <= _MAX_DIM for d in dims):  # the common case, without messages
        return tuple(dims)
    return tuple(check_int(d, f"{where}[{i}]", 0, _MAX_DIM) for i, d in enumerate(dims))


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
