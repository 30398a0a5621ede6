"""The payload codec (format version 2): byte-shuffled, zlib-compressed tensor values that
round-trip bit for bit; version 1 payloads still read; malformed or unknown ones refused."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from edge_sdk import models, submodel
from edge_sdk.flower._errors import PayloadError, PayloadVersionError
from edge_sdk.flower.codec import (
    PAYLOAD_VERSION,
    Payload,
    decode_payload,
    encode_payload,
    materialize,
    payload_sizes,
    payload_tensors,
    state_bytes,
)
from edge_sdk.errors import SchemaVersionError
from edge_sdk.submodel import _serial


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bytes (so NaN payloads and -0.0 compare exactly)."""
    return t.contiguous().reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)


def _assert_bit_exact(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for name, t in want.items():
        g = got[name]
        assert g.dtype == t.dtype and tuple(g.shape) == tuple(t.shape), name
        assert torch.equal(_bits(g), _bits(t)), name


def _random_tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "big": torch.randn(600_000, generator=gen) * 0.05,  # > the probe threshold: planes probed first
        "w": torch.randn(64, 3, 3, 3, generator=gen),
        "empty": torch.empty(0, 5),
        "scalar": torch.tensor(3.5),
        "tiny": torch.randn(3, generator=gen) * 1e-38,  # subnormals
        "f64": torch.randn(17, dtype=torch.float64, generator=gen),
        "f16": torch.randn(33, generator=gen).half(),
        "bf16": torch.randn(33, generator=gen).bfloat16(),
        "steps": torch.tensor(12345678901, dtype=torch.int64),
        "i8": torch.randint(-128, 127, (40,), dtype=torch.int8, generator=gen),
        "u8": torch.randint(0, 255, (40,), dtype=torch.uint8, generator=gen),
        "mask": torch.rand(50, generator=gen) > 0.5,
        "w2": torch.randn(5, 7, generator=gen),  # a second float32 tensor after other dtypes
    }


def test_random_tensors_of_every_dtype_round_trip_bit_exact():
    tensors = _random_tensors()
    data = encode_payload(Payload("fedavg", 3, "cnn1d", {"width": 2}, None, tensors, {"k": 1}))
    got = decode_payload(data)
    _assert_bit_exact(got.tensors, tensors)
    assert (got.strategy, got.round, got.model_options, got.meta) == ("fedavg", 3, {"width": 2}, {"k": 1})
    sizes = payload_sizes(data)
    assert sizes.version == PAYLOAD_VERSION == 2
    assert sizes.raw_values == sum(t.numel() * t.element_size() for t in tensors.values())
    assert sizes.values < sizes.raw_values  # the exponent planes compress
    assert sizes.total == sizes.header + sizes.plan + sizes.values and sizes.plan == 0
    header, _ = _serial.unpack(data, b"EDGEPAYL", 2, "payload")
    fp32 = header["values"]["groups"][0]
    assert fp32["dtype"] == "float32" and fp32["count"] == 600_000 + 64 * 27 + 1 + 3 + 35
    # Gaussian weights: the three low byte planes are near random and sent as is; the sign and
    # exponent plane is compressed
    assert [c for c, _ in fp32["planes"]] == ["raw", "raw", "raw", "zlib"]


def test_nan_inf_and_signed_zero_round_trip_bit_exact():
    t = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1.0])
    t = torch.cat([t, torch.tensor([0x7FC00001], dtype=torch.int32).view(torch.float32)])  # a NaN with payload bits
    got = decode_payload(encode_payload(Payload("fedavg", 0, "cnn1d", {}, None, {"t": t}))).tensors
    _assert_bit_exact(got, {"t": t})


def test_all_empty_and_no_tensors_round_trip():
    for tensors in ({}, {"a": torch.empty(0), "b": torch.empty(2, 0, dtype=torch.int64)}):
        got = decode_payload(encode_payload(Payload("fedavg", 0, "cnn1d", {}, None, tensors))).tensors
        _assert_bit_exact(got, tensors)


@pytest.mark.parametrize("strategy", ["fiarse", "heterofl", None])
def test_real_model_payloads_round_trip_and_shrink(strategy):
    torch.manual_seed(1)
    g = models.create("resnet8")
    g.train()
    with torch.no_grad():
        g(torch.randn(8, *g.config.input_shape))  # non-trivial BatchNorm statistics
    g.eval()
    plan = submodel.plan(strategy, g, 0.25) if strategy else None
    tensors = payload_tensors(plan, g)
    data = encode_payload(Payload(strategy or "fedavg", 1, "resnet8", {}, plan, tensors))
    got = decode_payload(data)
    _assert_bit_exact(got.tensors, tensors)
    sizes = payload_sizes(data)
    assert sizes.values < 0.9 * sizes.raw_values  # measured ~0.75-0.85 on fp32 weights
    sub, ref = materialize(got).eval(), (plan.extract(g) if plan else g).eval()
    x = torch.randn(2, *g.config.input_shape)
    with torch.no_grad():
        assert torch.equal(sub(x), ref(x))
    if strategy == "fiarse":
        assert sizes.plan > 0 and len(data) < 1.10 * plan.kept_fraction * state_bytes(g)


def test_higher_zlib_level_is_also_lossless():
    tensors = _random_tensors()
    got = decode_payload(encode_payload(Payload("fedavg", 0, "cnn1d", {}, None, tensors), level=9)).tensors
    _assert_bit_exact(got, tensors)
    with pytest.raises(PayloadError, match="level=0"):
        encode_payload(Payload("fedavg", 0, "cnn1d", {}, None, tensors), level=0)


def _v1(tensors, plan=None) -> bytes:
    """A payload as release 1 wrote it: raw tensors under 't:<name>'."""
    blobs = {} if plan is None else {"plan": torch.frombuffer(bytearray(plan.to_bytes()), dtype=torch.uint8)}
    blobs.update({f"t:{n}": t for n, t in tensors.items()})
    header = {"strategy": "heterofl", "round": 4, "model": "cnn1d", "model_options": {}, "meta": {}, "fill": "held"}
    return _serial.pack(b"EDGEPAYL", 1, header, blobs)


def test_version_1_payloads_still_decode():
    g = models.create("cnn1d")
    plan = submodel.plan("heterofl", g, 0.5)
    tensors = payload_tensors(plan, g)
    data = _v1(tensors, plan)
    got = decode_payload(data)
    _assert_bit_exact(got.tensors, tensors)
    assert got.round == 4 and got.plan.to_bytes() == plan.to_bytes()
    sizes = payload_sizes(data)
    assert sizes.version == 1 and sizes.values == sizes.raw_values == sum(t.nbytes for t in tensors.values())


def test_unknown_version_is_refused_clearly():
    data = encode_payload(Payload("fedavg", 0, "cnn1d", {}, None, {"a": torch.ones(3)}))
    (hlen,) = struct.unpack_from("<I", data, 8)
    doc = json.loads(data[12:12 + hlen])
    doc["version"] = 3
    head = json.dumps(doc, separators=(",", ":")).encode()
    newer = data[:8] + struct.pack("<I", len(head)) + head + data[12 + hlen:]
    with pytest.raises(PayloadVersionError,
                       match=r"version 3 is not readable; this release reads payload versions 1, 2") as err:
        decode_payload(newer)
    assert isinstance(err.value, SchemaVersionError) and isinstance(err.value, PayloadError)
    with pytest.raises(PayloadVersionError, match="version 3"):
        payload_sizes(newer)
    with pytest.raises(PayloadError, match="bad magic"):
        payload_sizes(b"NOTEDGE!" + data[8:])


def _with_values(data: bytes, mutate) -> bytes:
    """``data`` with its JSON header or values blob changed by ``mutate(header, blobs)``."""
    header, blobs = _serial.unpack(data, b"EDGEPAYL", 2, "payload")
    mutate(header, blobs)
    return _serial.pack(b"EDGEPAYL", 2, header, blobs)


@pytest.mark.parametrize("how, match", [
    ("corrupt", "byte plane 0 of value group 0 is not a valid zlib stream"),
    ("truncate", "runs past the end of the values blob|does not inflate"),
    ("extra", "holds 3 bytes no byte plane lists"),
    ("count", "does not inflate"),
    ("codec", "unknown value codec 'lz4'"),
    ("plane-codec", "unknown codec 'lz4'; known: raw, zlib"),
    ("shape", "runs past the end of value group 0"),
])
def test_malformed_values_are_refused(how, match):
    data = encode_payload(Payload("fedavg", 0, "cnn1d", {}, None, {"a": torch.zeros(1000), "b": torch.ones(10)}))

    def mutate(header, blobs):
        values = header["values"]
        assert [c for c, _ in values["groups"][0]["planes"]] == ["zlib"] * 4  # zeros and ones compress
        blob = blobs["values"]
        if how == "corrupt":
            blobs["values"] = blob.flip(0).contiguous()
        elif how == "truncate":
            blobs["values"] = blob[:-5].clone()
        elif how == "extra":
            blobs["values"] = torch.cat([blob, torch.zeros(3, dtype=torch.uint8)])
        elif how == "count":
            values["groups"][0]["count"] += 1
        elif how == "codec":
            values["codec"] = "lz4"
        elif how == "plane-codec":
            values["groups"][0]["planes"][0][0] = "lz4"
        else:
            values["tensors"][1][2] = [11]

    with pytest.raises(PayloadError, match=match):
        decode_payload(_with_values(data, mutate))
    with pytest.raises(PayloadError):
        decode_payload(data[:-7])
