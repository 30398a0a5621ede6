"""What crosses the wire, as bytes (no Flower import, no pickle).

A *payload* is what the server sends one node for one round: the node's submodel plan and
exactly the tensors of the global model that plan holds (``plan.collect(plan.extract(global))``:
for ``fiarse`` the held elements of each masked tensor, for the channel-level strategies the
kept slices), plus the model name and options so the node can build the architecture. The
node rebuilds its submodel with :func:`materialize` and trains it; its reply is an
:class:`edge_sdk.training.Update` (``Update.to_bytes``). Both use the SDK's pickle-free
container (JSON header + blobs, :mod:`edge_sdk.submodel._serial`) and both compress the
tensor values losslessly (byte planes + zlib, :mod:`edge_sdk.submodel._value_planes`).

Payload format version 2 (this release writes it; version 1, with every tensor raw, is
still read).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edge_sdk.flower._errors import PayloadError, PayloadVersionError
from edge_sdk.errors import SchemaError, SchemaVersionError
from edge_sdk.submodel import _serial
from edge_sdk.submodel._plan import SubmodelPlan
from edge_sdk.submodel._value_planes import ZLIB_LEVEL, pack_values, read_tensors

__all__ = [
    "Payload",
    "PayloadSizes",
    "encode_payload",
    "decode_payload",
    "payload_sizes",
    "payload_tensors",
    "materialize",
    "build_model",
    "held_param_count",
    "state_bytes",
    "PAYLOAD_VERSION",
    "ZLIB_LEVEL",
]

PAYLOAD_MAGIC = b"EDGEPAYL"
PAYLOAD_VERSION = 2
READABLE_VERSIONS = (1, 2)
FILLS = ("held", "state")
@dataclass
class Payload:
    """One node's share of the global model for one round (see the module docstring).

    ``plan`` is ``None`` for FedAvg (the node holds the whole model). ``fill`` says what
    ``tensors`` are: ``"held"`` (the plan's held parts, ``plan.collect`` layout) or
    ``"state"`` (whole global tensors by name: FedRA's frozen blocks and adapters).
    """

    strategy: str
    round: int
    model: str
    model_options: dict[str, Any]
    plan: SubmodelPlan | None
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    fill: str = "held"

    @property
    def tensor_bytes(self) -> int:
        """Bytes of tensor data, uncompressed (what scales with the kept fraction)."""
        return sum(_serial.tensor_nbytes(t) for t in self.tensors.values())


@dataclass
class PayloadSizes:
    """Where the bytes of an encoded payload go (see :func:`payload_sizes`)."""

    total: int  # the whole encoded payload
    plan: int  # the plan's own bytes (for fiarse: its element masks, bit-packed + zlib)
    values: int  # the tensor values as sent (compressed byte planes)
    raw_values: int  # the same values uncompressed
    header: int  # everything else: magic, JSON header (names, shapes, model options)
    version: int


# ---- payloads ---------------------------------------------------------------------------


def encode_payload(payload: Payload, *, level: int = ZLIB_LEVEL) -> bytes:
    """Serialise a payload (format version 2): JSON header, the plan's own bytes, and the
    tensor values as compressed byte planes (``level``: zlib level 1-9)."""
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
        raise PayloadError(f"encode_payload: level={level!r} is not accepted; expected a zlib level 1-9")
    blobs: dict[str, torch.Tensor] = {}
    if payload.plan is not None:
        blobs["plan"] = torch.frombuffer(bytearray(payload.plan.to_bytes()), dtype=torch.uint8)
    try:
        values, blobs["values"] = pack_values(payload.tensors, level)
    except SchemaError as exc:
        raise PayloadError(f"payload: {exc}") from exc
    header = {
        "strategy": payload.strategy,
        "round": int(payload.round),
        "model": payload.model,
        "model_options": dict(payload.model_options),
        "meta": dict(payload.meta),
        "fill": payload.fill,
        "values": values,
    }
    return _serial.pack(PAYLOAD_MAGIC, PAYLOAD_VERSION, header, blobs)


def _register_plan_kinds() -> None:
    """Import every plan class so ``SubmodelPlan.from_bytes`` knows its kind in a fresh
    process (FedRA's module is otherwise loaded lazily, on first use by the server)."""
    import importlib

    for module in ("edge_sdk.submodel.fiarse", "edge_sdk.submodel.structured", "edge_sdk.submodel.fedra"):
        try:
            importlib.import_module(module)
        except ImportError:  # a build without that strategy
            continue


def _unpack(data: bytes) -> tuple[int, dict[str, Any], dict[str, torch.Tensor]]:
    """``(version, header, blobs)`` of an encoded payload of any readable version."""
    try:
        return _serial.unpack_versions(data, PAYLOAD_MAGIC, READABLE_VERSIONS, "payload")
    except SchemaVersionError as exc:
        raise PayloadVersionError(f"{exc} (update edge-sdk on this node)") from None


def decode_payload(data: bytes) -> Payload:
    """Inverse of :func:`encode_payload` (also reads version 1); raises PayloadError on
    anything malformed and PayloadVersionError on an unknown format version."""
    _register_plan_kinds()
    try:
        version, header, blobs = _unpack(data)
        plan = None
        if "plan" in blobs:
            plan = SubmodelPlan.from_bytes(blobs.pop("plan").numpy().tobytes())
        tensors = read_tensors(version, header, blobs)
        fill = str(header.get("fill", "held"))
        if fill not in FILLS:
            raise PayloadError(f"payload: unknown fill {fill!r}; known: {', '.join(FILLS)}")
        return Payload(str(header["strategy"]), int(header["round"]), str(header["model"]),
                       dict(header.get("model_options") or {}), plan, tensors, dict(header.get("meta") or {}),
                       fill)
    except PayloadError:
        raise
    except SchemaError as exc:
        raise PayloadError(str(exc)) from exc
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise PayloadError(f"payload: malformed header ({exc!r})") from exc


def _header(data: bytes) -> dict[str, Any]:
    """The JSON header of an encoded payload, blobs untouched (the container's layout:
    magic | header length, uint32 LE | JSON header | blobs)."""
    start = len(PAYLOAD_MAGIC) + 4
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < start \
            or bytes(data[:len(PAYLOAD_MAGIC)]) != PAYLOAD_MAGIC:
        raise PayloadError("payload: not an edge-sdk payload (bad magic bytes)")
    (hlen,) = struct.unpack_from("<I", data, len(PAYLOAD_MAGIC))
    try:
        doc = json.loads(bytes(data[start:start + hlen]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"payload: header is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise PayloadError("payload: header is not a JSON object")
    return doc


def payload_sizes(data: bytes) -> PayloadSizes:
    """How the bytes of an encoded payload split into plan, values and header (only the
    JSON header is read; nothing is copied or decompressed)."""
    doc = _header(data)
    version = doc.get("version")
    if version not in READABLE_VERSIONS:
        raise PayloadVersionError(f"payload: format version {version!r} is not readable; this release reads "
                                  f"payload versions {', '.join(map(str, READABLE_VERSIONS))}")
    try:
        nbytes = {str(b[0]): int(b[4]) for b in doc["blobs"]}
        plan = nbytes.get("plan", 0)
        if version == 1:
            values = raw = sum(n for k, n in nbytes.items() if k.startswith("t:"))
        else:
            values = nbytes.get("values", 0)
            raw = sum(int(g["count"]) * torch.empty((), dtype=_serial._DTYPES[str(g["dtype"])]).element_size()
                      for g in doc["values"]["groups"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PayloadError(f"payload: malformed header ({exc!r})") from None
    return PayloadSizes(len(data), plan, values, raw, len(data) - plan - values, int(version))


def payload_tensors(plan: SubmodelPlan | None, global_model: nn.Module, fill: str = "held") -> dict[str, torch.Tensor]:
    """The tensors of ``global_model`` a node holding ``plan`` needs (copies).

    ``fill="held"``: what the plan holds, in ``plan.collect`` layout; ``"state"``: the whole
    state of ``plan.extract(global_model)`` by global name (for plans whose submodel keeps
    frozen tensors it does not upload, i.e. FedRA).
    """
    if plan is None:
        return {n: t.detach().clone() for n, t in global_model.state_dict().items()}
    sub = plan.extract(global_model)
    if fill == "state":
        return {n: t.detach().clone() for n, t in sub.state_dict().items()}
    return plan.collect(sub)  # type: ignore[attr-defined]


def build_model(name: str, options: dict[str, Any]) -> nn.Module:
    """The global architecture ``edge_sdk.models.create(name, **options)``."""
    from edge_sdk import models

    return models.create(name, **options)


def materialize(payload: Payload, skeleton: nn.Module | None = None) -> nn.Module:
    """The node's submodel, rebuilt from its payload alone.

    A global-shaped model is built (``skeleton`` or from the payload's model name), every
    tensor zeroed, the held values written at the positions the plan holds (the
    plan's own ``scatter_add`` gives the positions), and ``plan.extract`` applied: the result
    is exactly the server's ``plan.extract(global_model)``, while the node never received
    the tensors it does not hold.
    """
    model = skeleton if skeleton is not None else build_model(payload.model, payload.model_options)
    state = model.state_dict()
    plan = payload.plan
    if plan is None:
        _check_names(set(payload.tensors), set(state), "fedavg")
        with torch.no_grad():
            for name, value in payload.tensors.items():
                _check_shape(name, value, tuple(state[name].shape))
                state[name].copy_(value.to(state[name].dtype))
        return model
    if getattr(plan, "kind", "") == "fedra":
        _add_adapters(model, int(getattr(plan, "lora_rank")))
        state = model.state_dict()
    plan.check_model(model)
    with torch.no_grad():
        for target in state.values():
            target.zero_()
    if payload.fill == "state":
        with torch.no_grad():
            for name, value in payload.tensors.items():
                if name not in state:
                    raise PayloadError(f"{plan.strategy} payload: {name!r} is not a tensor of model {payload.model}")
                _check_shape(name, value, tuple(state[name].shape))
                state[name].copy_(value.to(state[name].dtype))
        return plan.extract(model)
    expected = plan.held_shapes()
    _check_names(set(payload.tensors), set(expected), plan.strategy)
    with torch.no_grad():
        for name, value in payload.tensors.items():
            _check_shape(name, value, tuple(expected[name]))
            target = state[name]
            dtype = target.dtype if target.is_floating_point() else torch.float64
            base = target.to(dtype)
            num = torch.zeros(target.shape, dtype=dtype)
            den = torch.zeros(target.shape, dtype=dtype)
            # the plan's own index map: adds (value - base) where held; base is all zeros
            plan.scatter_add(name, value, base=base, num=num, den=den, weight=1.0)
            merged = torch.where(den > 0, base + num / den.clamp_min(1.0), base)
            target.copy_(merged if target.is_floating_point() else merged.round().to(target.dtype))
    return plan.extract(model)


def _add_adapters(model: nn.Module, rank: int) -> None:
    """Give a freshly built model the LoRA adapters FedRA's global model carries."""
    from edge_sdk.submodel.lora import add_lora, lora_rank_of

    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise PayloadError("fedra payload: the model has no blocks stack")
    if lora_rank_of(blocks, rank) is None:
        add_lora(blocks, rank)


def _check_names(got: set[str], expected: set[str], strategy: str) -> None:
    if got != expected:
        missing = sorted(expected - got)[:3]
        extra = sorted(got - expected)[:3]
        raise PayloadError(f"{strategy} payload: tensors do not match its plan (missing {missing}, unexpected {extra})")


def _check_shape(name: str, value: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(value.shape) != shape:
        raise PayloadError(f"payload tensor {name!r} has shape {list(value.shape)}, its plan holds {list(shape)}")


def held_param_count(plan: SubmodelPlan | None, tensors: dict[str, torch.Tensor],
                     signature: dict[str, tuple[tuple[int, ...], bool]] | None = None) -> int:
    """Parameter elements among ``tensors`` (buffers not counted), named as in the global model."""
    sig = plan.signature if plan is not None else signature
    if sig is None:
        raise PayloadError("held_param_count: give a plan or the global model's signature")
    return sum(int(t.numel()) for n, t in tensors.items() if n in sig and sig[n][1])


def state_bytes(model: nn.Module) -> int:
    """Bytes of the whole state dict of ``model`` (parameters and buffers)."""
    return sum(_serial.tensor_nbytes(t) for t in model.state_dict().values())
