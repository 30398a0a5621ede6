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

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edge_sdk import _decode
from edge_sdk._decode import Budget, DecodeLimits
from edge_sdk.errors import InvalidInputError, SchemaError, SchemaVersionError
from edge_sdk.flower._errors import PayloadError, PayloadVersionError
from edge_sdk.submodel import _serial
from edge_sdk.submodel._plan import SubmodelPlan
from edge_sdk.submodel._value_planes import ZLIB_LEVEL, check_group, check_slots, pack_values, read_tensors

__all__ = [
    "Payload",
    "PayloadSizes",
    "encode_payload",
    "decode_payload",
    "payload_sizes",
    "payload_tensors",
    "materialize",
    "build_model",
    "model_elements",
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


def _unpack(data: Any, budget: Budget, limits: DecodeLimits | None) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``(version, header, blobs)`` of an encoded payload of any readable version."""
    try:
        return _serial.unpack_versions(data, PAYLOAD_MAGIC, READABLE_VERSIONS, "payload", budget=budget,
                                       limits=limits, views=("plan", "values"))
    except SchemaVersionError as exc:
        raise PayloadVersionError(f"{exc} (update edge-sdk on this node)") from None


def _model_options(value: Any) -> dict[str, Any]:
    """``model_options``: names to JSON scalars (what ``edge_sdk.models.create`` takes); the
    size of the model they build is checked by :func:`build_model`, before it is built."""
    options = _decode.check_dict(value, "payload: model_options")
    for key, v in options.items():
        if v is not None and not isinstance(v, (str, bool, int, float)):
            raise PayloadError(f"payload: model_options {key!r} must be a string, number, bool or null, "
                               f"got {_decode.show(v)}")
        if isinstance(v, float) and not math.isfinite(v):
            raise PayloadError(f"payload: model_options {key!r} must be finite, got {v!r}")
    return options


def decode_payload(data: bytes, *, limits: DecodeLimits | None = None) -> Payload:
    """Inverse of :func:`encode_payload` (also reads version 1); raises PayloadError naming
    the field on anything malformed, altered (checksum) or over ``limits``, and
    PayloadVersionError on an unknown format version; nothing else."""
    size = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else 0
    budget = Budget.for_input(size, "payload", limits)
    try:
        version, header, blobs = _unpack(data, budget, limits)
        _decode.check_keys(header, ("version", "strategy", "round", "model") + (("values",) if version > 1 else ()),
                           ("model_options", "meta", "fill"), "payload")
        strategy = _decode.check_str(header["strategy"], "payload: strategy", 64)
        round_ = _decode.check_int(header["round"], "payload: round")
        model = _decode.check_str(header["model"], "payload: model", 256)
        options = _model_options(header.get("model_options", {}))
        meta = _decode.check_dict(header.get("meta", {}), "payload: meta")
        fill = _decode.check_choice(header.get("fill", "held"), "payload: fill", FILLS)
        plan = None
        if "plan" in blobs:
            plan = SubmodelPlan.from_bytes(blobs.pop("plan"), limits=limits, budget=budget)
        tensors = read_tensors(version, header, blobs, budget, "payload")
        check_slots(tensors, plan, "payload")
        return Payload(strategy, round_, model, options, plan, tensors, meta, fill)
    except PayloadError:
        raise
    except SchemaError as exc:
        raise PayloadError(str(exc)) from exc


def payload_sizes(data: bytes) -> PayloadSizes:
    """How the bytes of an encoded payload split into plan, values and header (only the
    JSON header is read; nothing is copied, decompressed or checksummed)."""
    try:
        doc, view, _ = _serial.read_header(data, PAYLOAD_MAGIC, "payload")
        version = doc.get("version")
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise PayloadVersionError(f"payload: format version {_decode.show(version)} is not readable; this "
                                      f"release reads payload versions {', '.join(map(str, READABLE_VERSIONS))}")
        nbytes: dict[str, int] = {}
        for i, entry in enumerate(_decode.check_list(_decode.field(doc, "blobs", "payload"), "payload: blobs")):
            entry = _decode.check_list(entry, f"payload: blob {i}", 6)
            nbytes[str(entry[0])] = _decode.check_int(entry[4], f"payload: blob {i} nbytes")
        plan = nbytes.get("plan", 0)
        if version == 1:
            values = raw = sum(n for k, n in nbytes.items() if k.startswith("t:"))
        else:
            values = nbytes.get("values", 0)
            groups = _decode.field(_decode.check_dict(_decode.field(doc, "values", "payload"), "payload: values"),
                                   "groups", "payload: values")
            raw = 0
            for g, group in enumerate(_decode.check_list(groups, "payload: values groups")):
                _, count, planes = check_group(g, group, f"values: value group {g}")
                raw += count * len(planes)
    except PayloadError:
        raise
    except SchemaError as exc:
        raise PayloadError(str(exc)) from None
    return PayloadSizes(len(view), plan, values, raw, len(view) - plan - values, int(version))


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


MAX_MODEL_DEPTH = 256  # modules are built one by one: a model this deep is refused before it is sized


def model_elements(name: str, options: dict[str, Any]) -> int:
    """State-dict elements of ``edge_sdk.models.create(name, **options)``, counted on torch's
    ``meta`` device: no tensor memory is allocated, whatever the width."""
    from edge_sdk import models

    try:
        cfg = models.resolve_config(name, **options)
    except (InvalidInputError, TypeError) as exc:
        raise PayloadError(f"payload: model {name!r} with model_options {_decode.show(options)}: {exc}") from None
    if cfg.depth > MAX_MODEL_DEPTH:
        raise PayloadError(f"payload: model_options depth={cfg.depth} is more than {MAX_MODEL_DEPTH}")
    try:
        with torch.device("meta"):
            meta = models.create(name, **options)
        return sum(t.numel() for t in meta.state_dict().values())
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:  # e.g. a dimension past int64
        raise PayloadError(f"payload: model {name!r} cannot be built with model_options "
                           f"{_decode.show(options)} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None


def build_model(name: str, options: dict[str, Any], *, max_elements: int | None = None) -> nn.Module:
    """The global architecture ``edge_sdk.models.create(name, **options)``, refused (PayloadError)
    before it is built when it would hold more than ``max_elements`` state-dict elements
    (default and ceiling: ``DecodeLimits.max_model_elements``, 2**28 = 1 GiB of float32)."""
    from edge_sdk import models

    cap = _decode.LIMITS.max_model_elements if max_elements is None else min(max_elements,
                                                                             _decode.LIMITS.max_model_elements)
    n = model_elements(name, options)
    if n > cap:
        raise PayloadError(f"payload: model {name!r} with model_options {_decode.show(options)} would hold {n} "
                           f"elements; at most {cap} are accepted")
    return models.create(name, **options)


def materialize(payload: Payload, skeleton: nn.Module | None = None) -> nn.Module:
    """The node's submodel, rebuilt from its payload alone.

    A global-shaped model is built (``skeleton`` or from the payload's model name), every
    tensor zeroed, the held values written at the positions the plan holds (the
    plan's own ``scatter_add`` gives the positions), and ``plan.extract`` applied: the result
    is exactly the server's ``plan.extract(global_model)``, while the node never received
    the tensors it does not hold.
    """
    if skeleton is None:  # a plan's model holds at most its signature's elements (FedRA: less its adapters)
        cap = None if payload.plan is None else sum(_decode.numel(s) for s, _ in payload.plan.signature.values())
        model = build_model(payload.model, payload.model_options, max_elements=cap)
    else:
        model = skeleton
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
