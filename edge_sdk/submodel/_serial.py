"""Pickle-free binary container for plans and updates: JSON header + raw tensor blobs.

Layout: ``MAGIC`` (8 bytes) | header length (uint32 LE) | UTF-8 JSON header | blobs.
The header lists every blob as ``[name, dtype, shape, offset, nbytes, codec]``; offsets are
relative to the first blob byte. Codecs: ``raw`` (the tensor's bytes, little endian) and
``bits`` (a bool tensor packed 8 per byte with numpy.packbits, then zlib-compressed).
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from edge_sdk.errors import SchemaError, SchemaVersionError

__all__ = ["pack", "packed_size", "unpack", "tensor_nbytes"]

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


def tensor_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _raw(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


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
    doc = {"version": version, "blobs": table, **header}
    head = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    return magic + struct.pack("<I", len(head)) + head + b"".join(parts)


def packed_size(magic: bytes, version: int, header: Mapping[str, Any], blobs: Mapping[str, torch.Tensor]) -> int:
    """``len(pack(...))`` for raw blobs, without copying any tensor data."""
    table = []
    offset = 0
    for name, t in blobs.items():
        n = tensor_nbytes(t)
        table.append([name, _NAMES.get(t.dtype, "?"), list(t.shape), offset, n, "raw"])
        offset += n
    doc = {"version": version, "blobs": table, **header}
    return len(magic) + 4 + len(json.dumps(doc, separators=(",", ":")).encode("utf-8")) + offset


def unpack(data: bytes, magic: bytes, version: int, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Inverse of :func:`pack`; raises SchemaError on anything malformed."""
    return unpack_versions(data, magic, (version,), what)[1:]


def unpack_versions(data: bytes, magic: bytes, versions: tuple[int, ...],
                    what: str) -> tuple[int, dict[str, Any], dict[str, torch.Tensor]]:
    """:func:`unpack` for any of ``versions``: ``(version, header, blobs)``; SchemaVersionError
    names the version found and the ones this release reads."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SchemaError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(magic) + 4 or not data.startswith(magic):
        raise SchemaError(f"{what}: not an edge-sdk {what} (bad magic bytes)")
    (hlen,) = struct.unpack_from("<I", data, len(magic))
    start = len(magic) + 4
    try:
        doc = json.loads(data[start:start + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{what}: header is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or "version" not in doc or "blobs" not in doc:
        raise SchemaError(f"{what}: header lacks 'version' or 'blobs'")
    version = doc["version"]
    if version not in versions:
        raise SchemaVersionError(f"{what}: format version {version!r} is not readable; this release reads "
                                 f"{what} version{'s' if len(versions) > 1 else ''} {', '.join(map(str, versions))}")
    base = start + hlen
    out: dict[str, torch.Tensor] = {}
    try:
        for name, dtype_name, shape, off, nbytes, codec in doc["blobs"]:
            dtype = _DTYPES[dtype_name]
            chunk = data[base + off: base + off + nbytes]
            if len(chunk) != nbytes:
                raise SchemaError(f"{what}: blob {name!r} is truncated")
            numel = int(np.prod(shape)) if shape else 1
            if codec == "bits":
                bitsarr = np.unpackbits(np.frombuffer(zlib.decompress(chunk), dtype=np.uint8))[:numel]
                t = torch.from_numpy(bitsarr.astype(bool)).reshape(shape)
            elif codec == "raw":
                if numel == 0:
                    t = torch.empty(shape, dtype=dtype)
                else:
                    t = torch.frombuffer(bytearray(chunk), dtype=dtype).reshape(shape)
            else:
                raise SchemaError(f"{what}: blob {name!r} has unknown codec {codec!r}")
            out[name] = t
    except (KeyError, ValueError, TypeError, RuntimeError, zlib.error) as exc:
        raise SchemaError(f"{what}: malformed blob table ({exc})") from exc
    del doc["blobs"]
    return version, doc, out
