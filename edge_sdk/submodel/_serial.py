"""Pickle-free binary container for plans, updates and payloads: JSON header + raw tensor blobs.

Layout (container 2, written since release 0.3)::

    MAGIC (8 bytes) | header length (uint32 LE) | UTF-8 JSON header | blobs | CRC-32 (uint32 LE)

The header holds ``"version"`` (the document's own schema version), ``"container": 2`` and
``"blobs"``: every blob as ``[name, dtype, shape, offset, nbytes, codec]``, offsets relative
to the first blob byte, contiguous and in order. The CRC-32 (``zlib.crc32``) covers every
byte before it. Container 1 (no ``"container"`` field, no CRC) is still read. Codecs:
``raw`` (the tensor's bytes, little endian) and ``bits`` (a bool tensor packed 8 per byte
with numpy.packbits, then zlib-compressed). Nothing is ever unpickled.

Why CRC-32: it detects every single-bit error (and every burst of up to 32 bits) in a
message of any size we send, which a cryptographic hash only does with high probability,
at several GB/s; neither stops a sender who means harm (he recomputes either), which is why
every field is also checked. Reading is bounded: see :mod:`edge_sdk._decode`.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import torch

from edge_sdk import _decode
from edge_sdk._decode import Budget, DecodeLimits
from edge_sdk.errors import ChecksumError, SchemaError, SchemaVersionError

__all__ = ["pack", "packed_size", "unpack", "unpack_versions", "read_header", "tensor_nbytes", "CONTAINER"]

CONTAINER = 2  # the container this release writes: a CRC-32 trailer (see the module doc)
_CRC = struct.Struct("<I")
_LEN = struct.Struct("<I")
CODECS = ("raw", "bits")

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
FLOAT_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16})


def tensor_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _raw(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _head(version: int, header: Mapping[str, Any], table: list[Any]) -> bytes:
    doc = {"version": version, "container": CONTAINER, "blobs": table, **header}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def pack(magic: bytes, version: int, header: Mapping[str, Any],
         blobs: Mapping[str, torch.Tensor], *, bits: frozenset[str] | set[str] = frozenset()) -> bytes:
    """Serialise ``header`` (JSON-able) and named tensors; names in ``bits`` are bool masks."""
    parts: list[bytes] = []
    table = []
    offset = 0
    for name, t in blobs.items():
        if t.dtype not in _NAMES:
            raise SchemaError(f"cannot serialise tensor {name!r} of dtype {t.dtype}; "
                              f"accepted: {', '.join(_DTYPES)}")
        if name in bits:
            data = zlib.compress(np.packbits(t.detach().cpu().reshape(-1).numpy()).tobytes(), 1)
            codec = "bits"
        else:
            data = _raw(t)
            codec = "raw"
        table.append([name, _NAMES[t.dtype], list(t.shape), offset, len(data), codec])
        parts.append(data)
        offset += len(data)
    head = _head(version, header, table)
    if len(head) > _decode.LIMITS.max_header_bytes:  # never write what no reader accepts
        raise SchemaError(f"header of {len(head)} bytes; readers accept at most {_decode.LIMITS.max_header_bytes}")
    parts[:0] = [magic, _LEN.pack(len(head)), head]
    crc = 0
    for p in parts:
        crc = zlib.crc32(p, crc)
    parts.append(_CRC.pack(crc))
    return b"".join(parts)


def packed_size(magic: bytes, version: int, header: Mapping[str, Any], blobs: Mapping[str, torch.Tensor]) -> int:
    """``len(pack(...))`` for raw blobs, without copying any tensor data."""
    table = []
    offset = 0
    for name, t in blobs.items():
        n = tensor_nbytes(t)
        table.append([name, _NAMES.get(t.dtype, "?"), list(t.shape), offset, n, "raw"])
        offset += n
    return len(magic) + _LEN.size + len(_head(version, header, table)) + offset + _CRC.size


def read_header(data: Any, magic: bytes, what: str,
                limits: DecodeLimits | None = None) -> tuple[dict[str, Any], memoryview, int]:
    """``(header, view of data, start of the blobs)``: magic, length and JSON checked, blobs
    and checksum not looked at (:func:`unpack_versions` does that)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SchemaError(f"{what}: expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    start = len(magic) + _LEN.size
    if len(view) < start or bytes(view[:len(magic)]) != magic:
        raise SchemaError(f"{what}: not an edge-sdk {what} (bad magic bytes)")
    (hlen,) = _LEN.unpack_from(view, len(magic))
    if hlen > len(view) - start:
        raise SchemaError(f"{what}: header length {hlen} runs past the end of the {len(view)} bytes")
    doc = _decode.load_json(view[start:start + hlen], what, limits)
    return doc, view, start + hlen


def unpack(data: bytes, magic: bytes, version: int, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Inverse of :func:`pack`; raises SchemaError on anything malformed."""
    return unpack_versions(data, magic, (version,), what)[1:]


def unpack_versions(data: Any, magic: bytes, versions: tuple[int, ...], what: str, *,
                    budget: Budget | None = None, limits: DecodeLimits | None = None,
                    views: Collection[str] = ()) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """:func:`unpack` for any of ``versions``: ``(version, header, blobs)``; SchemaVersionError
    names the version found and the ones this release reads.

    Blobs named in ``views`` (raw uint8 ones: a nested document, packed values) come back as
    memoryviews of ``data``, not copied. Every other blob is charged to ``budget`` (by
    default one for ``len(data)``) before it is allocated.
    """
    doc, view, base = read_header(data, magic, what, limits)
    if budget is None:
        budget = Budget.for_input(len(view), what, limits)
    container = doc.pop("container", 1)
    if isinstance(container, bool) or container not in (1, CONTAINER):
        raise SchemaVersionError(f"{what}: container {_decode.show(container)} is not readable; this release "
                                 f"reads containers 1 and {CONTAINER}")
    version = _decode.field(doc, "version", what)
    if isinstance(version, bool) or version not in versions:  # before the checksum: a newer writer may sum otherwise
        raise SchemaVersionError(f"{what}: format version {_decode.show(version)} is not readable; this release "
                                 f"reads {what} version{'s' if len(versions) > 1 else ''} "
                                 f"{', '.join(map(str, versions))}")
    end = len(view)
    if container == CONTAINER:
        end -= _CRC.size
        if end < base:
            raise SchemaError(f"{what}: {len(view)} bytes end before the checksum")
        (stored,) = _CRC.unpack_from(view, end)
        if zlib.crc32(view[:end]) != stored:
            raise ChecksumError(f"{what}: checksum mismatch: the bytes were altered or cut after they were "
                                f"written")
    table = _decode.check_list(_decode.field(doc, "blobs", what), f"{what}: blobs")
    out: dict[str, Any] = {}
    pos = 0
    for i, entry in enumerate(table):
        where = f"{what}: blob {i}"
        name, dtype_name, shape, off, nbytes, codec = _decode.check_list(entry, where, 6)
        name = _decode.check_str(name, f"{where} name")
        where = f"{what}: blob {name!r}"
        if name in out:
            raise SchemaError(f"{what}: blob name {name!r} is used twice")
        dtype = _DTYPES[_decode.check_choice(dtype_name, f"{where}: dtype", _DTYPES)]
        shape = _decode.check_shape(shape, f"{where} shape", limits)
        if _decode.check_int(off, f"{where} offset", 0) != pos:
            raise SchemaError(f"{where}: offset {off} is not {pos}, where the previous blob ends")
        nbytes = _decode.check_int(nbytes, f"{where} nbytes", 0)
        if base + pos + nbytes > end:
            raise SchemaError(f"{where}: {nbytes} bytes at offset {off} run past the end of the data")
        chunk = view[base + pos:base + pos + nbytes]
        pos += nbytes
        numel = _decode.numel(shape)
        if codec == "bits":
            if dtype != torch.bool:
                raise SchemaError(f"{where}: codec 'bits' holds bool tensors, not {dtype_name}")
            budget.take(numel + (numel + 7) // 8, f"bool blob {name!r} of shape {list(shape)}")
            packed = np.frombuffer(_decode.inflate(chunk, (numel + 7) // 8, where), dtype=np.uint8)
            out[name] = torch.from_numpy(np.unpackbits(packed, count=numel).view(np.bool_)).reshape(shape)
        elif codec == "raw":
            size = element_size(dtype)
            if nbytes != numel * size:
                raise SchemaError(f"{where}: holds {nbytes} bytes; shape {list(shape)} of {dtype_name} needs "
                                  f"{numel * size}")
            if name in views:
                if dtype != torch.uint8 or len(shape) != 1:
                    raise SchemaError(f"{where}: must be a 1-d uint8 blob, got {dtype_name} {list(shape)}")
                out[name] = chunk
            elif numel == 0:
                out[name] = torch.empty(shape, dtype=dtype)
            else:
                budget.take(nbytes, f"blob {name!r}")
                out[name] = torch.frombuffer(bytearray(chunk), dtype=dtype).reshape(shape)
        else:
            raise SchemaError(f"{where}: unknown codec {_decode.show(codec)}; known: {', '.join(CODECS)}")
    if base + pos != end:
        raise SchemaError(f"{what}: {end - base - pos} bytes after the last blob belong to no blob")
    del doc["blobs"]
    return version, doc, out
