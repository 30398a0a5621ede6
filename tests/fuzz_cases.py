"""Decoder fuzzing cases shared by tests/test_fuzz_decoders.py and bench/bench_fuzz.py.

Every decoder of untrusted bytes (plan ``from_bytes`` of the three plan kinds,
``Update.from_bytes``, ``decode_payload``, ``hw_profiles.load`` of a file) gets small valid
messages, ways to damage them (truncation, bit flips, header fields replaced by hostile
values and re-packed with a valid checksum, memory bombs) and one judge, :func:`run`:
the outcome is ``"roundtrip"`` (decoded, and re-encoding gives the input back), ``"decoded"``
(a damaged input that still decodes, re-encoding it is stable), ``"typed"`` (an
``EdgeSDKError`` of the decoder's family) or ``"failure"`` (anything else, including a peak
over the memory bar of 64 MiB + 4x the input).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk import hw_profiles, models, submodel
from edge_sdk.errors import EdgeSDKError, HardwareProfileError, SchemaError
from edge_sdk.flower._errors import PayloadError
from edge_sdk.flower.codec import Payload, decode_payload, encode_payload, payload_tensors
from edge_sdk.submodel import SubmodelPlan, plan_fedra
from edge_sdk.training import Update

MIB = 1 << 20


def bar(size: int) -> int:
    """The memory bar of a decode: 64 MiB plus 4x its input."""
    return 64 * MIB + 4 * size


@dataclass
class Case:
    name: str
    data: bytes
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]
    error: type[EdgeSDKError]
    checksummed: bool = True


def _profile_path() -> str:
    path = os.path.join(tempfile.gettempdir(), f"edge-sdk-fuzz-{os.getpid()}.toml")
    return path


def decode_profile(data: bytes) -> Any:
    path = _profile_path()
    with open(path, "wb") as fh:
        fh.write(data)
    return hw_profiles.load(path)


def _encode_profile(profile: Any) -> bytes:  # profiles are only read: "round trip" = same fields
    return json.dumps(profile.to_dict(), sort_keys=True, default=str).encode()


def _tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def make_cases() -> dict[str, Case]:
    """Small valid messages of every decoder (a few hundred bytes to a few KiB each)."""
    m = _tiny_mlp()
    x = torch.randn(2, 4)
    fiarse = submodel.plan("fiarse", m, 0.5)
    structured = submodel.plan("fedrolex", m, 0.5, round=3, example_input=x)
    vit = models.create("vit_tiny", width=0.05, depth=2, img_size=8, patch_size=4, num_classes=3)
    (fedra,) = plan_fedra(vit, [0.5], rng=0, lora_rank=1)
    held = {n: t.detach().clone() for n, t in fiarse.extract(m).model.state_dict().items()}
    fiarse_update = Update("fiarse", fiarse, {n: (t.reshape(-1)[fiarse.masks[n].reshape(-1)] if n in fiarse.masks
                                                  else t) for n, t in held.items()}, 7, {"train_loss": 0.25})
    fedavg_update = Update("fedavg", None, {n: t.detach().clone() for n, t in m.state_dict().items()}, 3, {})
    cnn = models.create("cnn1d", width=0.25, depth=1)
    hplan = submodel.plan("heterofl", cnn, 0.5)
    payload = Payload("heterofl", 2, "cnn1d", {"width": 0.25, "depth": 1}, hplan, payload_tensors(hplan, cnn))
    fedavg_payload = Payload("fedavg", 0, "cnn1d", {"width": 0.25, "depth": 1}, None, payload_tensors(None, cnn))
    profile = resources.files("edge_sdk.hw_profiles").joinpath("data", "raspberry-pi-4.toml").read_bytes()
    plan_io = dict(decode=SubmodelPlan.from_bytes, encode=lambda p: p.to_bytes(), error=SchemaError)
    update_io = dict(decode=Update.from_bytes, encode=lambda u: u.to_bytes(), error=SchemaError)
    payload_io = dict(decode=decode_payload, encode=encode_payload, error=PayloadError)
    return {
        "plan-fiarse": Case("plan-fiarse", fiarse.to_bytes(), **plan_io),
        "plan-structured": Case("plan-structured", structured.to_bytes(), **plan_io),
        "plan-fedra": Case("plan-fedra", fedra.to_bytes(), **plan_io),
        "update-fiarse": Case("update-fiarse", fiarse_update.to_bytes(), **update_io),
        "update-fedavg": Case("update-fedavg", fedavg_update.to_bytes(), **update_io),
        "payload-heterofl": Case("payload-heterofl", encode_payload(payload), **payload_io),
        "payload-fedavg": Case("payload-fedavg", encode_payload(fedavg_payload), **payload_io),
        "hw-profile": Case("hw-profile", profile, decode_profile, _encode_profile, HardwareProfileError, False),
    }


# ---- the judge ----------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # roundtrip | decoded | typed | failure
    peak: int  # bytes: tracemalloc peak + bytes of the result's tensors
    detail: str = ""


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors a decoded object holds (torch allocations tracemalloc cannot see;
    counted on top of the traced peak, which over-counts numpy-backed ones: conservative)."""
    tensors: list[torch.Tensor] = []
    for value in (getattr(obj, "tensors", None), getattr(getattr(obj, "plan", None), "masks", None),
                  getattr(obj, "masks", None)):
        if isinstance(value, dict):
            tensors += [t for t in value.values() if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def run(case: Case, data: bytes) -> Outcome:
    """Decode ``data`` with ``case``'s decoder and judge it (see the module docstring)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result: Any = None
    try:
        result = case.decode(data)
    except case.error as exc:
        kind, detail = "typed", f"{type(exc).__name__}: {exc}"
    except BaseException as exc:  # noqa: BLE001 - anything else is what we look for
        kind, detail = "failure", f"untyped {type(exc).__name__}: {str(exc)[:300]}"
    else:
        kind, detail = "decoded", ""
    peak = tracemalloc.get_traced_memory()[1] - base + _tensor_bytes(result)
    if started:
        tracemalloc.stop()
    if kind == "decoded":
        try:
            again = case.encode(result)
            if again == data:
                kind = "roundtrip"
            elif case.checksummed and case.encode(case.decode(again)) != again:
                kind, detail = "failure", "re-encoding a decoded input is not stable"
        except EdgeSDKError as exc:  # accepted, but over a writer's limit (e.g. the header size)
            detail = f"re-encoding refused: {exc}"
        except BaseException as exc:  # noqa: BLE001
            kind, detail = "failure", f"re-encoding raised {type(exc).__name__}: {exc}"
    if peak > bar(len(data)):
        kind, detail = "failure", f"peak {peak} bytes over the bar {bar(len(data))} ({detail})"
    return Outcome(kind, peak, detail)


# ---- damage -------------------------------------------------------------------------------


def split(data: bytes) -> tuple[dict[str, Any], bytes, bytes]:
    """``(header, prefix = magic, blobs)`` of a container-2 message."""
    (hlen,) = struct.unpack_from("<I", data, 8)
    return json.loads(data[12:12 + hlen]), data[:8], data[12 + hlen:-4]


def repack(prefix: bytes, header: Any, blobs: bytes, raw: dict[str, str] | None = None) -> bytes:
    """A container-2 message with a valid checksum, whatever ``header`` holds; the JSON text
    of each string value ``k`` in ``raw`` is replaced by ``raw[k]`` (nesting json cannot write)."""
    text = json.dumps(header, separators=(",", ":"))
    for key, value in (raw or {}).items():
        text = text.replace(json.dumps(key), value)
    head = text.encode()
    body = prefix + struct.pack("<I", len(head)) + head + blobs
    return body + struct.pack("<I", zlib.crc32(body))


def header_paths(header: Any) -> list[tuple[Any, ...]]:
    """Every path (keys / indices) into a JSON header, the root excluded."""
    out: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), header)]
    while stack:
        path, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            out.append(path + (key,))
            stack.append((path + (key,), child))
    return sorted(out, key=repr)


def replaced(header: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = json.loads(json.dumps(header))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**40, 2**53 + 1, 2**63, 10**30, -(2**40), 0.5, -0.0, 1e300, 1e400,
    float("nan"), float("inf"), -float("inf"), "", "x", "fiarse", "float32", "bits", "zlib", "\u0000",
    [], {}, [0], [-1], [2**40, 2**40], [2**31] * 8, [1] * 9, ["a", "b"], {"a": 1}, nested(40), nested(400),
]


def bit_flips(data: bytes) -> list[bytes]:
    """Every single-bit flip of ``data``."""
    out = []
    for i in range(len(data) * 8):
        b = bytearray(data)
        b[i // 8] ^= 1 << (i % 8)
        out.append(bytes(b))
    return out


def bombs(cases: dict[str, Case]) -> list[tuple[str, Case, bytes]]:
    """Inputs built to make a decoder allocate far more than their size."""
    out: list[tuple[str, Case, bytes]] = []
    zeros = zlib.compress(bytes(1 << 24), 9)  # 16 MiB of zeros in ~16 KiB
    # a FIARSE mask whose bits inflate to 2**27 bytes, then 2**30 bools
    plan = cases["plan-fiarse"]
    h, prefix, blobs = split(plan.data)
    h["signature"].append(["big", [1 << 15, 1 << 15], True])
    h["thresholds"]["big"] = 0.0
    h["blobs"].append(["mask:big", "bool", [1 << 15, 1 << 15], len(blobs), len(zeros), "bits"])
    out.append(("zlib-bombed mask", plan, repack(prefix, h, blobs + zeros)))
    # values: one group declaring 2**40 elements, and one whose zlib planes inflate 1000x
    for name in ("update-fedavg", "payload-fedavg"):
        case = cases[name]
        h, prefix, blobs = split(case.data)
        out.append((f"{name}: count 2**40", case, repack(prefix, replaced(h, ("values", "groups", 0, "count"), 2**40),
                                                         blobs)))
        h2 = json.loads(json.dumps(h))  # fedavg messages hold one blob, the values
        h2["values"]["groups"] = [{"dtype": "float32", "count": 1 << 24, "planes": [["zlib", len(zeros)]] * 4}]
        h2["values"]["tensors"] = [["t", 0, [1 << 24]]]
        h2["blobs"] = [["values", "uint8", [4 * len(zeros)], 0, 4 * len(zeros), "raw"]]
        out.append((f"{name}: zlib-bombed values", case, repack(prefix, h2, zeros * 4)))
    # a structured plan asking for a 2**40-element example input
    s = cases["plan-structured"]
    h, prefix, blobs = split(s.data)
    h["example_shape"] = [1 << 20, 1 << 20]
    out.append(("structured: huge example_shape", s, repack(prefix, h, blobs)))
    # headers: deep nesting, a 2 MiB header, huge numbers
    u = cases["update-fedavg"]
    h, prefix, blobs = split(u.data)
    out.append(("update: num_samples 1e400", u, repack(prefix, replaced(h, ("num_samples",), 1e400), blobs)))
    out.append(("update: 100k-deep metrics", u, repack(prefix, replaced(h, ("metrics",), "@deep@"), blobs,
                                                                  {"@deep@": "[" * 100_000 + "]" * 100_000})))
    out.append(("update: 2 MiB header", u, repack(prefix, replaced(h, ("metrics",), {"m": "x" * (2 * MIB)}), blobs)))
    out.append(("update: 1 MiB of small metrics", u, repack(prefix, replaced(
        h, ("metrics",), {f"{i:x}": 0 for i in range(100_000)}), blobs)))
    # zeros where a message should be
    for name in ("plan-fiarse", "update-fedavg", "payload-fedavg", "hw-profile"):
        out.append((f"{name}: 4 MiB of zeros", cases[name], bytes(4 * MIB)))
        out.append((f"{name}: magic + 4 MiB of zeros", cases[name], cases[name].data[:8] + bytes(4 * MIB)))
    prof = cases["hw-profile"]
    out.append(("hw-profile: 100k-deep array", prof, b"a = " + b"[" * 100_000 + b"]" * 100_000))
    out.append(("hw-profile: 5000-digit integer", prof, b"cores = 1" + b"0" * 5000))
    return out


def random_messages(rng: np.random.Generator, case: Case, n: int) -> list[bytes]:
    """``n`` damaged copies of ``case.data``: truncations, flips, splices, random bytes."""
    data = case.data
    out = []
    for _ in range(n):
        how = rng.integers(5)
        if how == 0:
            out.append(data[: rng.integers(len(data))])
        elif how == 1:
            b = bytearray(data)
            for i in rng.integers(0, len(b), rng.integers(1, 4)):
                b[i] ^= int(rng.integers(1, 256))
            out.append(bytes(b))
        elif how == 2:
            out.append(rng.bytes(int(rng.integers(0, 2048))))
        elif how == 3:
            out.append(data[:8] + rng.bytes(int(rng.integers(0, 2048))))
        else:
            i = int(rng.integers(len(data)))
            out.append(data[:i] + rng.bytes(int(rng.integers(0, 64))) + data[i:])
    return out


TOML_HOSTILE = ["true", "-1", "0", "1" + "0" * 30, "1e400", "nan", "inf", '""', "[]", "{}", "[[[[1]]]]",
                "1979-05-27T07:32:00Z", '"' + "x" * 5000 + '"', "[" * 50 + "]" * 50]


def hostile_profiles(rng: np.random.Generator, case: Case, n: int) -> list[bytes]:
    """``n`` copies of a profile with one value replaced by a hostile TOML value."""
    lines = case.data.decode().splitlines()
    values = [i for i, line in enumerate(lines) if " = " in line and not line.lstrip().startswith("#")]
    out = []
    for _ in range(n):
        i = values[int(rng.integers(len(values)))]
        new = list(lines)
        new[i] = new[i].split(" = ", 1)[0] + " = " + TOML_HOSTILE[int(rng.integers(len(TOML_HOSTILE)))]
        out.append("\n".join(new).encode())
    return out


def hostile_headers(rng: np.random.Generator, case: Case, n: int) -> list[bytes]:
    """``n`` messages with one header field replaced by a hostile value, checksum valid."""
    header, prefix, blobs = split(case.data)
    paths = header_paths(header)
    out = []
    for _ in range(n):
        path = paths[int(rng.integers(len(paths)))]
        value = HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]
        out.append(repack(prefix, replaced(header, path, value), blobs))
    return out
