"""Property-based fuzzing of every decoder of untrusted bytes (issue 11).

Each input must end as an exact round trip or a typed error of the decoder's family, within
64 MiB + 4x its size (tests/fuzz_cases.py judges); every single flipped bit of a plan,
update or payload is refused. bench/bench_fuzz.py runs the same cases at larger counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_cases as fc  # noqa: E402

from edge_sdk.errors import ChecksumError, LimitExceededError, SchemaError  # noqa: E402
from edge_sdk.flower._errors import PayloadError  # noqa: E402
from edge_sdk.flower.codec import materialize  # noqa: E402
from edge_sdk.submodel import SubmodelPlan  # noqa: E402

CASES = fc.make_cases()
CHECKSUMMED = [n for n, c in CASES.items() if c.checksummed]
FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _judge(case: fc.Case, data: bytes, allowed: tuple[str, ...] = ("roundtrip", "decoded", "typed")) -> fc.Outcome:
    out = fc.run(case, data)
    assert out.kind in allowed, f"{case.name}: {out.kind} {out.detail}"
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_valid_messages_round_trip_exactly(name):
    case = CASES[name]
    _judge(case, case.data, ("roundtrip",) if case.checksummed else ("decoded",))


@pytest.mark.parametrize("name", list(CASES))
@FUZZ
@given(data=st.binary(max_size=3000), with_magic=st.booleans())
def test_random_bytes_are_refused_typed(name, data, with_magic):
    case = CASES[name]
    _judge(case, (case.data[:8] if with_magic else b"") + data, ("typed", "decoded"))


@pytest.mark.parametrize("name", list(CASES))
def test_every_truncation_is_refused(name):
    case = CASES[name]
    step = 1 if case.checksummed else 7  # TOML parses slowly; every 7th length
    for n in range(0, len(case.data), step):
        _judge(case, case.data[:n], ("typed",) if case.checksummed else ("typed", "decoded"))


@pytest.mark.parametrize("name", ["plan-fiarse", "plan-structured", "update-fedavg", "update-fiarse"])
def test_every_single_bit_flip_is_refused(name):
    case = CASES[name]
    for flipped in fc.bit_flips(case.data):
        _judge(case, flipped, ("typed",))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plan-fedra", "payload-heterofl", "payload-fedavg"])
def test_every_single_bit_flip_is_refused_larger_messages(name):
    case = CASES[name]
    for flipped in fc.bit_flips(case.data):
        _judge(case, flipped, ("typed",))


@pytest.mark.parametrize("name", CHECKSUMMED)
@FUZZ
@given(position=st.integers(0, 10**9), bit=st.integers(0, 7))
def test_a_random_bit_flip_is_refused(name, position, bit):
    case = CASES[name]
    b = bytearray(case.data)
    b[position % len(b)] ^= 1 << bit
    out = _judge(case, bytes(b), ("typed",))
    assert out.detail


@pytest.mark.parametrize("name", CHECKSUMMED)
@FUZZ
@given(data=st.data())
def test_hostile_header_fields_are_refused_or_read_consistently(name, data):
    """One field replaced by a wrong type, huge / negative / NaN number, deep nesting, huge
    shape..., re-packed with a valid checksum so that the field checks, not the CRC, answer."""
    case = CASES[name]
    header, prefix, blobs = fc.split(case.data)
    path = data.draw(st.sampled_from(fc.header_paths(header)), label="path")
    value = data.draw(st.sampled_from(fc.HOSTILE_VALUES) | st.integers() | st.floats() | st.text(max_size=8),
                      label="value")
    _judge(case, fc.repack(prefix, fc.replaced(header, path, value), blobs))


@pytest.mark.parametrize("name", CHECKSUMMED)
@FUZZ
@given(data=st.data())
def test_damaged_blobs_with_a_valid_checksum_are_refused_or_read(name, data):
    case = CASES[name]
    header, prefix, blobs = fc.split(case.data)
    if not blobs:
        return
    b = bytearray(blobs)
    for _ in range(data.draw(st.integers(1, 4))):
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, 8))
    _judge(case, fc.repack(prefix, header, bytes(b[:len(b) - cut] if cut else b)))


@FUZZ
@given(data=st.data())
def test_hostile_profile_values_are_refused_typed(data):
    case = CASES["hw-profile"]
    rng_seed = data.draw(st.integers(0, 2**32 - 1))
    import numpy as np

    (text,) = fc.hostile_profiles(np.random.default_rng(rng_seed), case, 1)
    _judge(case, text, ("typed", "decoded"))


@pytest.mark.parametrize("label", [b[0] for b in fc.bombs(CASES)])
def test_memory_bombs_are_refused_within_the_bar(label):
    (name, case, data), = [b for b in fc.bombs(CASES) if b[0] == label]
    out = _judge(case, data, ("typed", "decoded"))
    assert out.peak <= fc.bar(len(data))
    if "bomb" in label or "2**40" in label or "example" in label:
        assert out.kind == "typed" and ("would decode" in out.detail or "expected" in out.detail
                                        or "elements" in out.detail)


def _plan_header(name: str, mutate) -> bytes:
    header, prefix, blobs = fc.split(CASES[name].data)
    mutate(header)
    return fc.repack(prefix, header, blobs)


def _dup_index(h):
    key = next(k for row in h["index_map"].values() for k in row if k)
    blob = next(b for b in h["blobs"] if b[0] == key)
    blob[0] = "keep:0"


ISSUE_CASES = {  # the inputs issue 11 found accepted silently, each with the field it must name
    "ratio NaN": ("plan-fiarse", lambda h: h.update(ratio=float("nan")), "ratio"),
    "kept_fraction inf": ("plan-fiarse", lambda h: h.update(kept_fraction=float("inf")), "kept_fraction"),
    "negative round": ("plan-structured", lambda h: h.update(round=-1), "round"),
    "duplicate blob name": ("plan-fiarse", lambda h: h["blobs"].append(list(h["blobs"][0])), "used twice"),
    "negative blob offset": ("plan-fiarse", lambda h: h["blobs"][0].__setitem__(3, -1), "offset"),
    "repeated channel index": ("plan-structured", _dup_index, "blob"),
    "negative block count": ("plan-fedra", lambda h: h.update(num_blocks=-3), "num_blocks"),
    "bool as an int": ("plan-fedra", lambda h: h.update(lora_rank=True), "lora_rank"),
    "bool as is_parameter": ("plan-fiarse", lambda h: h["signature"][0].__setitem__(2, 1), "is_parameter"),
    "unsorted kept blocks": ("plan-fedra", lambda h: h.update(kept_blocks=[1, 0]), "kept_blocks"),
    "num_samples 1e400": ("update-fedavg", lambda h: h.update(num_samples=1e400), "num_samples"),
    "count 2**40": ("update-fedavg", lambda h: h["values"]["groups"][0].update(count=2**40), "value group 0"),
    "int8 values of a parameter": ("update-fiarse", None, "float dtype"),
    "unknown container": ("plan-fiarse", lambda h: h.update(container=3), "container"),
}


def _int8_parameter() -> bytes:
    from edge_sdk.training import Update

    u = CASES["update-fiarse"].decode(CASES["update-fiarse"].data)
    name = next(n for n, (_, p) in u.plan.signature.items() if p)
    u.tensors[name] = u.tensors[name].to(torch.int8)
    return Update(u.strategy, u.plan, u.tensors, u.num_samples, u.metrics).to_bytes()


@pytest.mark.parametrize("label", list(ISSUE_CASES))
def test_issue_11_inputs_are_refused_naming_the_field(label):
    name, mutate, field = ISSUE_CASES[label]
    data = _int8_parameter() if mutate is None else _plan_header(name, mutate)
    out = _judge(CASES[name], data, ("typed",))
    assert field in out.detail, out.detail


def test_flips_are_reported_as_checksum_errors_and_old_containers_still_read():
    case = CASES["plan-fiarse"]
    b = bytearray(case.data)
    b[-10] ^= 4  # a blob byte
    with pytest.raises(ChecksumError):
        SubmodelPlan.from_bytes(bytes(b))
    header, prefix, blobs = fc.split(case.data)
    del header["container"]  # container 1: what release 0.2 wrote, no checksum
    head = json.dumps(header, separators=(",", ":")).encode()
    old = prefix + len(head).to_bytes(4, "little") + head + blobs
    assert SubmodelPlan.from_bytes(old).to_bytes() == case.data
    with pytest.raises(SchemaError, match="belong to no blob"):
        SubmodelPlan.from_bytes(old + b"\0")


def test_model_options_are_bounded_before_the_model_is_built():
    payload = CASES["payload-heterofl"]
    header, prefix, blobs = fc.split(payload.data)
    header["model_options"]["width"] = 3000
    p = payload.decode(fc.repack(prefix, header, blobs))
    with pytest.raises(PayloadError, match="elements; at most"):
        materialize(p)
    header["model_options"] = {"width": 1e300}
    with pytest.raises(PayloadError, match="cannot be built|elements"):
        materialize(payload.decode(fc.repack(prefix, header, blobs)))
    header["model_options"] = {"depth": 10**6}
    with pytest.raises(PayloadError, match="depth"):
        materialize(payload.decode(fc.repack(prefix, header, blobs)))
    header["model_options"] = {"width": [1]}
    with pytest.raises(PayloadError, match="model_options 'width'"):
        payload.decode(fc.repack(prefix, header, blobs))


def test_limit_error_is_a_schema_error():
    assert issubclass(LimitExceededError, SchemaError) and issubclass(ChecksumError, SchemaError)


def test_a_fedra_plan_reads_back_in_a_fresh_process(tmp_path):
    path = tmp_path / "fedra.plan"
    path.write_bytes(CASES["plan-fedra"].data)
    code = textwrap.dedent(f"""
        from edge_sdk.submodel._plan import SubmodelPlan
        p = SubmodelPlan.from_bytes(open({str(path)!r}, "rb").read())
        print(p.kind, p.kept_blocks)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("fedra ")
