"""The capability report a device sends to the server: versioned JSON, no pickle.

``CapabilityReport.to_json()`` / ``from_json()`` round-trip exactly. A document with a
``schema_version`` this release does not know is refused with :class:`SchemaVersionError`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from edge_sdk.errors import SchemaError, SchemaVersionError

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)


@dataclass
class DeviceCapability:
    """What the device can do, measured (or estimated from a hardware profile)."""

    cpu_model: str
    arch: str
    logical_cpus: int
    effective_cpus: int
    isa_flags: list[str]
    memory_total_bytes: int
    memory_available_bytes: int
    memory_limit_bytes: int | None
    threads: int
    gflops_fp32_1t: float
    gflops_fp32: float
    int8_gops: float | None
    memory_bandwidth_gbs: float
    estimated: bool = False
    source: str = "measured"


@dataclass
class LatencyStats:
    """Latency of repeated calls, in milliseconds; the cold first call is kept apart."""

    cold_ms: float
    median_ms: float
    p90_ms: float
    runs: int


@dataclass
class LayerCost:
    """One leaf module's share of the forward pass."""

    name: str
    kind: str
    params: int
    forward_flops: int


@dataclass
class SizeCost:
    """The cost of the model at one submodel size (``ratio``: fraction of parameters held)."""

    ratio: float
    kept_fraction: float
    width: float | None
    params: int
    param_bytes: int
    forward_flops: int
    train_step_flops: int
    peak_train_memory_bytes: int | None
    forward_latency: LatencyStats | None
    train_step_latency: LatencyStats | None


@dataclass
class ModelProfile:
    """A model's cost on this device at each profiled submodel size."""

    model: str
    input_shape: list[int]
    batch_size: int
    sizes: list[SizeCost]
    layers: list[LayerCost] = field(default_factory=list)

    def at(self, ratio: float) -> SizeCost:
        for size in self.sizes:
            if abs(size.ratio - ratio) < 1e-9:
                return size
        raise KeyError(ratio)


@dataclass
class Capacity:
    """What the device can take on.

    ``score`` is the device's sustained fp32 training throughput in GFLOP/s at its effective
    thread count (see ``edge_sdk.profiler.capacity``); ``max_ratio`` the largest profiled size
    whose train-step latency and peak memory fit the budgets (``None`` when nothing fits,
    the largest profiled size when no budget is given).
    """

    score: float
    budget_ms: float | None = None
    budget_mb: float | None = None
    max_ratio: float | None = None


@dataclass
class CapabilityReport:
    """A device's capability report: device, optional model profile, capacity."""

    device_id: str
    created_at: str
    device: DeviceCapability
    capacity: Capacity
    model: ModelProfile | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "report") -> "CapabilityReport":
        if not isinstance(data, Mapping):
            raise SchemaError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise SchemaVersionError(
                f"{where}: schema_version {version!r} is not supported "
                f"(this release reads {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))})"
            )
        try:
            model = data.get("model")
            return cls(
                schema_version=version,
                device_id=str(data["device_id"]),
                created_at=str(data["created_at"]),
                device=_build(DeviceCapability, data["device"], f"{where}.device"),
                capacity=_build(Capacity, data["capacity"], f"{where}.capacity"),
                model=None if model is None else _model_from_dict(model, f"{where}.model"),
            )
        except KeyError as exc:
            raise SchemaError(f"{where}: missing field {exc.args[0]!r}") from None

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "report") -> "CapabilityReport":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, where=where)


def _model_from_dict(data: Mapping[str, Any], where: str) -> ModelProfile:
    if not isinstance(data, Mapping):
        raise SchemaError(f"{where}: expected an object")
    sizes = []
    if not isinstance(data["sizes"], list):
        raise SchemaError(f"{where}.sizes: expected a list")
    for i, raw in enumerate(data["sizes"]):
        if not isinstance(raw, Mapping):
            raise SchemaError(f"{where}.sizes[{i}]: expected an object, got {type(raw).__name__}")
        raw = dict(raw)
        for key in ("forward_latency", "train_step_latency"):
            if raw.get(key) is not None:
                raw[key] = _build(LatencyStats, raw[key], f"{where}.sizes[{i}].{key}")
        sizes.append(_build(SizeCost, raw, f"{where}.sizes[{i}]"))
    layers = [_build(LayerCost, raw, f"{where}.layers[{i}]") for i, raw in enumerate(data.get("layers", []))]
    shape = data["input_shape"]
    if not isinstance(shape, list) or not all(_is_int(v) for v in shape):
        raise SchemaError(f"{where}.input_shape: expected a list of integers")
    if not isinstance(data["model"], str) or not _is_int(data["batch_size"]):
        raise SchemaError(f"{where}: model must be a string and batch_size an integer")
    return ModelProfile(model=data["model"], input_shape=list(shape), batch_size=data["batch_size"], sizes=sizes, layers=layers)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise SchemaError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    }
    missing = sorted(required - set(data))
    if missing:
        raise SchemaError(f"{where}: missing field {missing[0]!r}")
    unknown = sorted(set(data) - names)
    if unknown:
        raise SchemaError(f"{where}: unknown field {unknown[0]!r}")
    for f in dataclasses.fields(cls):
        if f.name in data and not isinstance(data[f.name], Mapping | LatencyStats):
            _check_type(data[f.name], str(f.type), f"{where}.{f.name}")
    return cls(**{k: v for k, v in data.items()})


# JSON type checks for the annotations used in the report's dataclasses.
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and value == value


_TYPE_CHECKS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_is_int, "an integer"),
    "float": (_is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "list[str]": (lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), "a list of strings"),
}


def _check_type(value: Any, annotation: str, where: str) -> None:
    options = [part.strip() for part in annotation.split("|")]
    if value is None and "None" in options:
        return
    checks = [_TYPE_CHECKS[o] for o in options if o in _TYPE_CHECKS]
    if checks and not any(check(value) for check, _ in checks):
        raise SchemaError(f"{where}: expected {' or '.join(d for _, d in checks)}, got {value!r}")
