"""Capacity: the largest submodel size that fits a device's budgets, and its capacity score.

The capacity score is the device's fp32 matmul throughput in GFLOP/s per CPU-second of its
effective threads (``DeviceCapability.gflops_fp32``): what the hardware does, not what was
left of it while other work ran, so a device does not change tier because it was busy when
it was profiled. The share that was free (``free_share``) and the rate the device
delivered then (``available_score``) are reported beside it. Training FLOPs of a size scale
about linearly with the size, so a device with a quarter of the score trains size 1/4 in the
time the strongest trains size 1: the score is what the server clusters on (in log scale)
and what it equalises round times with. It does not depend on the model, so reports made
with different models stay comparable.
"""

from __future__ import annotations

from edge_sdk.errors import InvalidInputError
from edge_sdk.profiler.report import Capacity, DeviceCapability, ModelProfile

MIB = 2**20


def capacity_score(device: DeviceCapability) -> float:
    """The capacity score of a device: fp32 GFLOP/s per CPU-second at its effective threads."""
    return float(device.gflops_fp32)


def compute_capacity(
    device: DeviceCapability,
    model: ModelProfile | None,
    *,
    budget_ms: float | None = None,
    budget_mb: float | None = None,
) -> Capacity:
    """Capacity of ``device`` for ``model``: the largest profiled size whose median training
    step latency is within ``budget_ms`` and whose peak training memory is within
    ``budget_mb`` and within the memory available now. ``max_ratio`` is None when no profiled
    size fits (or there is no model profile)."""
    for label, value in (("budget_ms", budget_ms), ("budget_mb", budget_mb)):
        if value is not None and not value > 0:
            raise InvalidInputError(f"{label} must be a positive number, got {value!r}")
    max_ratio = None
    if model is not None:
        memory_limit = device.memory_available_bytes
        if budget_mb is not None:
            memory_limit = min(memory_limit, int(budget_mb * MIB))
        for size in sorted(model.sizes, key=lambda s: s.ratio, reverse=True):
            latency = size.train_step_latency.median_ms if size.train_step_latency else None
            if budget_ms is not None and (latency is None or latency > budget_ms):
                continue
            if size.peak_train_memory_bytes is not None and size.peak_train_memory_bytes > memory_limit:
                continue
            max_ratio = size.ratio
            break
    free = device.contention.free_share if device.contention is not None else None
    score = capacity_score(device)
    return Capacity(
        score=score,
        budget_ms=budget_ms,
        budget_mb=budget_mb,
        max_ratio=max_ratio,
        free_share=free,
        available_score=None if free is None else round(score * free, 3),
    )
