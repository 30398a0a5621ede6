"""Lossless compression of tensor values for the wire (payloads and updates).

Tensors of one dtype are concatenated in order, split into their byte planes (byte k of
every element together, as blosc's *shuffle* filter does) and each plane is
zlib-compressed, or stored as is when a probe of it shows zlib gains less than 5% (float32
mantissa planes are near random; the exponent planes compress well). Decoding restores the
exact bytes: the round trip is bit-exact, NaN payloads included.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch

from edge_sdk.errors import SchemaError
from edge_sdk.submodel import _serial

__all__ = ["VALUES_CODEC", "ZLIB_LEVEL", "pack_values", "read_tensors", "unpack_values"]

VALUES_CODEC = "shuffle-zlib"
# zlib level 1: on resnet18 (full model and a FIARSE 1/16 share) levels 2/3/6 shrink the
# values by only 0.2/0.5/1.0 points more for 1.1-1.6/1.4-1.6/3.4-4.2x the encode time
# (bench/bench_flower.md, "zlib level"). Decoding costs the same at every level.
ZLIB_LEVEL = 1
_PROBE_BYTES = 1 << 14  # a plane larger than _PROBES x this is probed before it is compressed
_PROBES = 32  # windows spread over the plane (512 KiB probed: within 0.01 of the whole plane on resnet18)
_MIN_GAIN = 0.05  # a plane is stored as is unless zlib saves at least this share of it


def _compress_plane(plane: np.ndarray, level: int) -> tuple[bytes | np.ndarray, str]:
    """``(data, "zlib")`` or ``(plane, "raw")``: zlib only where it pays (see the module doc)."""
    n = int(plane.size)
    if n == 0:
        return plane, "raw"
    if n > _PROBES * _PROBE_BYTES:  # probe a few windows spread over the plane first
        starts = np.linspace(0, n - _PROBE_BYTES, _PROBES).astype(np.int64)
        probed = sum(len(zlib.compress(plane[a:a + _PROBE_BYTES], level)) for a in starts)
        if probed > (1.0 - _MIN_GAIN) * _PROBES * _PROBE_BYTES:
            return plane, "raw"
    data = zlib.compress(plane, level)
    if len(data) > (1.0 - _MIN_GAIN) * n:
        return plane, "raw"
    return data, "zlib"


def _flat_bytes(tensors: list[torch.Tensor]) -> tuple[np.ndarray, int]:
    """The tensors' little-endian bytes, concatenated, as ``(count, element_size)`` uint8."""
    flat = torch.cat([t.detach().cpu().contiguous().reshape(-1) for t in tensors])
    size = flat.element_size()
    return flat.view(torch.uint8).numpy().reshape(-1, size), size


def pack_values(tensors: dict[str, torch.Tensor], level: int) -> tuple[dict[str, Any], torch.Tensor]:
    """The values header entry and the one uint8 blob holding every group's byte planes."""
    names = _serial._NAMES
    groups: dict[torch.dtype, list[str]] = {}
    table = []
    for name, t in tensors.items():
        if t.dtype not in names:
            raise SchemaError(f"tensor {name!r} has dtype {t.dtype}; accepted: {', '.join(_serial._DTYPES)}")
        group = list(groups).index(t.dtype) if t.dtype in groups else len(groups)
        groups.setdefault(t.dtype, []).append(name)
        table.append([name, group, list(t.shape)])
    chunks: list[Any] = []
    meta = []
    for dtype, members in groups.items():
        rows, size = _flat_bytes([tensors[n] for n in members])
        planes = np.ascontiguousarray(rows.T)  # (element_size, count): byte k of every element
        layout = []
        for k in range(size):
            data, codec = _compress_plane(planes[k], level)
            chunks.append(data)
            layout.append([codec, len(data) if isinstance(data, bytes) else int(data.size)])
        meta.append({"dtype": names[dtype], "count": int(rows.shape[0]), "planes": layout})
    blob = b"".join(c if isinstance(c, bytes) else c.tobytes() for c in chunks)
    data = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.empty(0, dtype=torch.uint8)
    return {"codec": VALUES_CODEC, "groups": meta, "tensors": table}, data


def _inflate(chunk: Any, size: int, where: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(chunk, size)
    except zlib.error as exc:
        raise SchemaError(f"values: {where} is not a valid zlib stream ({exc})") from None
    if len(out) != size or not d.eof or d.unconsumed_tail or d.unused_data:
        raise SchemaError(f"values: {where} does not inflate to its {size} bytes")
    return out


def read_tensors(version: int, header: dict[str, Any], blobs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of an unpacked container: version 1 kept each raw as a ``t:NAME`` blob,
    later versions pack them with :func:`pack_values` (header ``values``, blob ``values``)."""
    if version == 1:
        return {k[2:]: v for k, v in blobs.items() if k.startswith("t:")}
    return unpack_values(header.get("values"), blobs.get("values"))


def unpack_values(values: Any, blob: torch.Tensor | None) -> dict[str, torch.Tensor]:
    if not isinstance(values, dict) or values.get("codec") != VALUES_CODEC:
        codec = values.get("codec") if isinstance(values, dict) else values
        raise SchemaError(f"values: unknown value codec {codec!r}; known: {VALUES_CODEC}")
    data = blob.numpy() if blob is not None else np.empty(0, dtype=np.uint8)
    pos = 0
    flats: list[torch.Tensor] = []
    for g, group in enumerate(values["groups"]):
        dtype = _serial._DTYPES[str(group["dtype"])]
        count = int(group["count"])
        size = torch.empty((), dtype=dtype).element_size()
        layout = list(group["planes"])
        if count < 0 or len(layout) != size:
            raise SchemaError(f"values: value group {g} ({group['dtype']}) lists {len(layout)} byte planes; "
                               f"its dtype has {size}")
        planes = np.empty((size, count), dtype=np.uint8)
        for k, (codec, nbytes) in enumerate(layout):
            nbytes = int(nbytes)
            where = f"byte plane {k} of value group {g}"
            if nbytes < 0 or pos + nbytes > data.size:
                raise SchemaError(f"values: {where} runs past the end of the values blob")
            chunk = data[pos:pos + nbytes]
            pos += nbytes
            if codec == "zlib":
                chunk = np.frombuffer(_inflate(chunk, count, where), dtype=np.uint8)
            elif codec != "raw":
                raise SchemaError(f"values: {where} has unknown codec {codec!r}; known: raw, zlib")
            elif chunk.size != count:
                raise SchemaError(f"values: {where} holds {chunk.size} bytes; expected {count}")
            planes[k] = chunk
        flat = torch.from_numpy(np.ascontiguousarray(planes.T)).reshape(-1)
        flats.append(flat.view(dtype) if count else torch.empty(0, dtype=dtype))
    if pos != data.size:
        raise SchemaError(f"values: the values blob holds {data.size - pos} bytes no byte plane lists")
    out: dict[str, torch.Tensor] = {}
    offsets = [0] * len(flats)
    for name, g, shape in values["tensors"]:
        g = int(g)
        n = int(np.prod(shape)) if shape else 1
        flat = flats[g]
        if offsets[g] + n > flat.numel():
            raise SchemaError(f"values: tensor {name!r} runs past the end of value group {g}")
        out[str(name)] = flat[offsets[g]:offsets[g] + n].reshape(shape)
        offsets[g] += n
    if any(o != f.numel() for o, f in zip(offsets, flats)):
        raise SchemaError("values: the value groups hold more values than its tensors")
    return out


