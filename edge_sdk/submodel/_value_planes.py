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

from edge_sdk import _decode
from edge_sdk._decode import Budget
from edge_sdk.errors import SchemaError
from edge_sdk.submodel import _serial

__all__ = ["VALUES_CODEC", "ZLIB_LEVEL", "pack_values", "read_tensors", "unpack_values", "check_slots", "check_group"]

VALUES_CODEC = "shuffle-zlib"
# zlib level 1: on resnet18 (full model and a FIARSE 1/16 share) levels 2/3/6 shrink the
# values by only 0.2/0.5/1.0 points more for 1.1-1.6/1.4-1.6/3.4-4.2x the encode time
# (bench/bench_flower.md, "zlib level"). Decoding costs the same at every level.
ZLIB_LEVEL = 1
_PROBE_BYTES = 1 << 14  # a plane larger than _PROBES x this is probed before it is compressed
_PROBES = 32  # windows spread over the plane (512 KiB probed: within 0.01 of the whole plane on resnet18)
_MIN_GAIN = 0.05  # a plane is stored as is unless zlib saves at least this share of it
_ZLIB_MAX_RATIO = 1032  # deflate's largest expansion: one 258-byte match per ~2 bits
PLANE_CODECS = ("raw", "zlib")


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


def read_tensors(version: int, header: dict[str, Any], blobs: dict[str, Any], budget: Budget,
                 what: str) -> dict[str, torch.Tensor]:
    """The tensors of an unpacked container: version 1 kept each raw as a ``t:NAME`` blob,
    later versions pack them with :func:`pack_values` (header ``values``, blob ``values``,
    which ``unpack_versions`` should hand over as a view: ``views=("values",)``)."""
    if version == 1:
        other = [k for k in blobs if not k.startswith("t:")]
        if other:
            raise SchemaError(f"{what}: unknown blob {other[0]!r}; version 1 holds t:NAME blobs and plan")
        return {k[2:]: v for k, v in blobs.items()}
    unknown = [k for k in blobs if k != "values"]
    if unknown:
        raise SchemaError(f"{what}: unknown blob {unknown[0]!r}; accepted: plan, values")
    return unpack_values(_decode.field(header, "values", what), blobs.get("values"), budget, what)


def check_slots(tensors: dict[str, torch.Tensor], plan: Any, what: str) -> None:
    """With a plan, every tensor names an entry of its signature and a parameter's values
    are of a float dtype (the slot of a parameter holds floats)."""
    if plan is None:
        return
    for name, t in tensors.items():
        entry = plan.signature.get(name)
        if entry is None:
            raise SchemaError(f"{what}: tensor {name!r} is not in its plan's signature")
        if entry[1] and t.dtype not in _serial.FLOAT_DTYPES:
            raise SchemaError(f"{what}: tensor {name!r} is a parameter; its values must be of a float dtype, "
                              f"got {t.dtype}")


def check_group(g: int, group: Any, where: str) -> tuple[torch.dtype, int, list[tuple[str, int]]]:
    """``(dtype, count, [(codec, nbytes)] per byte plane)`` of one value group, checked."""
    group = _decode.check_dict(group, where)
    _decode.check_keys(group, ("dtype", "count", "planes"), (), where)
    dtype = _serial._DTYPES[_decode.check_choice(group["dtype"], f"{where}: dtype", _serial._DTYPES)]
    count = _decode.check_int(group["count"], f"{where} count")
    size = _serial.element_size(dtype)
    layout = _decode.check_list(group["planes"], f"{where} planes", size)
    planes = []
    for k, plane in enumerate(layout):
        codec, nbytes = _decode.check_list(plane, f"{where} plane {k}", 2)
        if not isinstance(codec, str) or codec not in PLANE_CODECS:
            raise SchemaError(f"{where}: byte plane {k} has unknown codec {_decode.show(codec)}; "
                              f"known: {', '.join(PLANE_CODECS)}")
        planes.append((codec, _decode.check_int(nbytes, f"{where} plane {k} nbytes")))
    return dtype, count, planes


def unpack_values(values: Any, blob: Any, budget: Budget | None = None, what: str = "values") -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_values`; ``blob`` is the values blob (bytes, a memoryview or a
    uint8 tensor). Each group's output is charged to ``budget`` before it is allocated and
    every zlib plane inflates to exactly its declared size."""
    if not isinstance(values, dict) or values.get("codec") != VALUES_CODEC:
        codec = values.get("codec") if isinstance(values, dict) else values
        raise SchemaError(f"values: unknown value codec {_decode.show(codec)}; known: {VALUES_CODEC}")
    _decode.check_keys(values, ("codec", "groups", "tensors"), (), f"{what}: values")
    if blob is None:
        data = np.empty(0, dtype=np.uint8)
    elif isinstance(blob, torch.Tensor):
        data = blob.reshape(-1).numpy()
    else:
        data = np.frombuffer(blob, dtype=np.uint8)
    budget = budget or Budget.for_input(data.size, what)
    groups = _decode.check_list(values["groups"], f"{what}: values groups")
    pos = 0
    flats: list[torch.Tensor] = []
    for g, group in enumerate(groups):
        where = f"values: value group {g}"
        dtype, count, layout = check_group(g, group, where)
        size = len(layout)
        if pos + sum(n for _, n in layout) > data.size:
            raise SchemaError(f"values: a byte plane of value group {g} runs past the end of the values blob")
        for k, (codec, nbytes) in enumerate(layout):
            if codec == "raw" and nbytes != count:
                raise SchemaError(f"values: byte plane {k} of value group {g} holds {nbytes} bytes; expected {count}")
            if codec == "zlib" and count > _ZLIB_MAX_RATIO * nbytes + 64:
                raise SchemaError(f"values: byte plane {k} of value group {g} cannot inflate {nbytes} bytes to "
                                  f"{count} (zlib expands at most {_ZLIB_MAX_RATIO}x)")
        budget.take(count * size, f"value group {g} ({count} x {size} bytes)")
        rows = np.empty((count, size), dtype=np.uint8)  # the group's bytes, element by element
        for k, (codec, nbytes) in enumerate(layout):
            chunk = data[pos:pos + nbytes]
            pos += nbytes
            if codec == "zlib":
                chunk = np.frombuffer(_decode.inflate(chunk, count, f"values: byte plane {k} of value group {g}"),
                                      dtype=np.uint8)
            rows[:, k] = chunk
        flat = torch.from_numpy(rows).reshape(-1)
        flats.append(flat.view(dtype) if count else torch.empty(0, dtype=dtype))
    if pos != data.size:
        raise SchemaError(f"values: the values blob holds {data.size - pos} bytes no byte plane lists")
    out: dict[str, torch.Tensor] = {}
    offsets = [0] * len(flats)
    for i, entry in enumerate(_decode.check_list(values["tensors"], f"{what}: values tensors")):
        name, g, shape = _decode.check_list(entry, f"{what}: values tensor {i}", 3)
        name = _decode.check_str(name, f"{what}: values tensor {i} name")
        if name in out:
            raise SchemaError(f"values: tensor name {name!r} is used twice")
        g = _decode.check_int(g, f"values: tensor {name!r} group", 0, max(len(flats) - 1, 0))
        shape = _decode.check_shape(shape, f"values: tensor {name!r} shape")
        n = _decode.numel(shape)
        if g >= len(flats) or offsets[g] + n > flats[g].numel():
            raise SchemaError(f"values: tensor {name!r} runs past the end of value group {g}")
        out[name] = flats[g][offsets[g]:offsets[g] + n].reshape(shape)
        offsets[g] += n
    if any(o != f.numel() for o, f in zip(offsets, flats)):
        raise SchemaError("values: the value groups hold more values than its tensors")
    return out
