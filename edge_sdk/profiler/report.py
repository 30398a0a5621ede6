"""The capability report a device sends to the server: versioned JSON, no pickle.

``CapabilityReport.to_json()`` / ``from_json()`` round-trip exactly. Decoding is bounded
(size, nesting) and typed field by field (:mod:`edge_sdk.profiler._decode`); a document with
a ``schema_version`` this release does not know is refused with :class:`SchemaVersionError`.

Version 2 (this release) adds, all optional so that version 1 documents still read: per-rate
statistics with a contention verdict (``device.rates``), the state of the machine during the
run (``device.contention``), the free share beside the hardware score (``capacity``), the
run's budget and confidence (``run``), sanity ``warnings`` and ``validation`` against a real
local round. In version 1 ``capacity.score`` was a wall-clock rate; in version 2 it is the
rate per CPU-second the benchmark threads got (the hardware's, whatever else was running).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Mapping

from edge_sdk._decode import DecodeLimits, load_json
from edge_sdk.errors import SchemaError, SchemaVersionError
from edge_sdk.profiler._decode import build

SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (1, 2)
MAX_REPORT_BYTES = 4 * 2**20
MAX_REPORT_DEPTH = 8  # the schema nests 5 deep (report.model.sizes[i].train_step_latency)
_LIMITS = DecodeLimits(max_header_bytes=MAX_REPORT_BYTES, max_json_depth=MAX_REPORT_DEPTH)
VERDICTS = ("clear", "contended", "unstable")
CONFIDENCE = ("high", "medium", "low")

_POSITIVE = {"gt": 0}
_AT_LEAST_ONE = {"min": 1, "max": 1 << 20}
_SHARE = {"min": 0, "max": 4}
MAX_ERROR = 1e6  # CPU-seconds per wall-second per thread; > 1 only by clock skew


def size_label(ratio: float) -> str:
    """A submodel size as people write it: 1/4 rather than 0.25."""
    f = Fraction(ratio).limit_denominator(4096)
    return str(f) if abs(float(f) - ratio) < 1e-9 else f"{ratio:g}"


def _opt(rules: Mapping[str, Any] | None = None, default: Any = None) -> Any:
    """An optional field (new in version 2) with range rules for the decoder."""
    return field(default=default, metadata=dict(rules or {}))


@dataclass
class RateStats:
    """One measured rate, so the server can judge it: ``value`` is work per CPU-second of
    the benchmark threads (what the hardware does when it runs), ``wall_value`` work per
    wall-second (what it did with the load present), ``spread`` the relative interquartile
    range of the per-window CPU-second rates, ``cpu_share`` CPU-seconds per wall-second per
    benchmark thread (1 = the threads had their CPUs to themselves)."""

    value: float = field(metadata=_POSITIVE)
    wall_value: float = field(metadata=_POSITIVE)
    spread: float
    windows: int = field(metadata=_AT_LEAST_ONE)
    cpu_share: float = field(metadata=_SHARE)
    verdict: str = field(metadata={"choices": VERDICTS})


@dataclass
class Rates:
    """Statistics of every device rate (version 2): fp32 matmul at 1 and all threads,
    int8 matmul, copy bandwidth."""

    fp32_1t: RateStats
    fp32: RateStats
    memory_bandwidth: RateStats
    int8: RateStats | None = None


@dataclass
class Contention:
    """What else the machine was doing while it was measured.

    ``free_share``: wall rate / CPU-second rate of the all-threads fp32 benchmark (1 = all
    effective CPUs were ours); ``steal_fraction``: CPU time the hypervisor took (/proc/stat);
    ``run_queue``: runnable tasks besides ours (/proc/loadavg); ``psi_cpu_some_avg10``:
    /proc/pressure/cpu; ``freq_mhz``: mean current clock where cpufreq is readable."""

    verdict: str = field(metadata={"choices": VERDICTS})
    free_share: float = field(metadata=_SHARE)
    steal_fraction: float | None = _opt({"max": 1})
    run_queue: float | None = _opt({"max": 1 << 20})
    load_average: float | None = _opt({"max": 1 << 20})
    psi_cpu_some_avg10: float | None = _opt({"max": 100})
    freq_mhz: float | None = _opt()


@dataclass
class DeviceCapability:
    """What the device can do, measured (or estimated from a hardware profile)."""

    cpu_model: str
    arch: str
    logical_cpus: int = field(metadata=_AT_LEAST_ONE)
    effective_cpus: int = field(metadata=_AT_LEAST_ONE)
    isa_flags: list[str]
    memory_total_bytes: int
    memory_available_bytes: int
    memory_limit_bytes: int | None
    threads: int = field(metadata=_AT_LEAST_ONE)
    gflops_fp32_1t: float
    gflops_fp32: float
    int8_gops: float | None
    memory_bandwidth_gbs: float
    estimated: bool = False
    source: str = "measured"
    rates: Rates | None = _opt()
    contention: Contention | None = _opt()
    peak_gflops_fp32: float | None = _opt(_POSITIVE)
    kernel_efficiency: float | None = _opt({"gt": 0, "max": 1.5})


@dataclass
class LatencyStats:
    """Latency of repeated calls, in milliseconds; the cold first call is kept apart.
    ``cpu_share``: process CPU-seconds per wall-second per thread over the timed calls;
    ``mean_ms``: their mean, which a run of many calls takes on average: on a busy device a
    few calls stall (a preempted thread) and the median does not see them."""

    cold_ms: float
    median_ms: float
    p90_ms: float
    runs: int
    cpu_share: float | None = _opt(_SHARE)
    mean_ms: float | None = _opt({"min": 0})


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

    ratio: float = field(metadata={"gt": 0, "max": 1})
    kept_fraction: float = field(metadata={"max": 1.5})
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
    input_shape: list[int] = field(metadata={"items": _AT_LEAST_ONE})
    batch_size: int = field(metadata=_AT_LEAST_ONE)
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

    ``score`` is the device's fp32 matmul throughput in GFLOP/s per CPU-second of its
    effective threads: the hardware's rate, whatever else ran during the measurement (see
    ``edge_sdk.profiler.capacity``). ``free_share`` is the share of that the benchmark got in
    wall time (1 = idle device) and ``available_score`` = score x free_share, what the device
    delivered now. ``max_ratio`` is the largest profiled size whose train-step latency and
    peak memory fit the budgets (``None`` when nothing fits, the largest profiled size when
    no budget is given).
    """

    score: float
    budget_ms: float | None = _opt(_POSITIVE)
    budget_mb: float | None = _opt(_POSITIVE)
    max_ratio: float | None = _opt({"gt": 0, "max": 1})
    free_share: float | None = _opt(_SHARE)
    available_score: float | None = _opt()


@dataclass
class MeasurementRun:
    """How the measurement went: its time budget, what was cut short to keep it, and how
    sure the report is (``high``: clear device and nothing cut; ``medium``: contended or
    unstable but complete; ``low``: measurements cut short by the deadline)."""

    quick: bool
    seconds: float
    deadline_seconds: float | None = field(metadata=_POSITIVE)
    cut_short: list[str] = field(default_factory=list)
    confidence: str = field(default="high", metadata={"choices": CONFIDENCE})


@dataclass
class RoundCheck:
    """One real local round (``train_local`` on a HeteroFL plan) against the report's
    prediction for it: ``error`` = measured / predicted - 1. Compare ``cpu_share`` with the
    train step's: when they differ, the load changed between the profile and the round."""

    ratio: float = field(metadata={"gt": 0, "max": 1})
    steps: int = field(metadata=_AT_LEAST_ONE)
    batch_size: int = field(metadata=_AT_LEAST_ONE)
    predicted_s: float
    measured_s: float
    error: float = field(metadata={"min": -1, "max": MAX_ERROR})
    cpu_share: float | None = _opt(_SHARE)  # over the round, as LatencyStats.cpu_share


@dataclass
class Validation:
    """The report checked against reality: each profiled size trained for real."""

    strategy: str
    tolerance: float
    rounds: list[RoundCheck]
    within_tolerance: bool


@dataclass
class CapabilityReport:
    """A device's capability report: device, optional model profile, capacity, and how far
    to trust it (``run``, ``warnings``, ``validation``)."""

    device_id: str
    created_at: str
    device: DeviceCapability
    capacity: Capacity
    model: ModelProfile | None = None
    schema_version: int = SCHEMA_VERSION
    run: MeasurementRun | None = None
    warnings: list[str] = field(default_factory=list)
    validation: Validation | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "report") -> "CapabilityReport":
        """A report from a decoded JSON object; every field type- and range-checked."""
        if not isinstance(data, Mapping):
            raise SchemaError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_SCHEMA_VERSIONS:
            raise SchemaVersionError(
                f"{where}.schema_version: {version!r} is not supported "
                f"(this release reads {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))})"
            )
        return build(cls, data, where)

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "report") -> "CapabilityReport":
        """A report from JSON text: at most ``MAX_REPORT_BYTES`` (refused before parsing),
        nested at most ``MAX_REPORT_DEPTH`` deep, no duplicate keys."""
        if isinstance(text, str):
            text = text.encode("utf-8", "surrogatepass")
        if not isinstance(text, (bytes, bytearray)):
            raise SchemaError(f"{where}: expected JSON text, got {type(text).__name__}")
        return cls.from_dict(load_json(text, where, _LIMITS), where=where)
