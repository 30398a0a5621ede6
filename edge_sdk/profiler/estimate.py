"""The capability report a device of a given hardware profile would send, estimated.

Device figures come from the profile's datasheet numbers. A model's parameters, FLOPs and
peak training memory do not depend on the CPU, so they are measured here exactly; latencies
are estimated as FLOPs / the profile's nominal (peak) fp32 rate: a lower bound, since real
kernels reach a fraction of peak. Every estimated report says so (``device.estimated``,
``device.source = "hw:<name>"``, latency ``runs = 0``). Mixing estimated and measured
reports in one fleet favours the estimated devices by their kernel efficiency (measured
sustained / peak, typically 0.3-0.7 on CPUs).
"""

from __future__ import annotations

import dataclasses

from edge_sdk.errors import InvalidInputError
from edge_sdk.profiler.report import DeviceCapability, LatencyStats, ModelProfile

MIB = 2**20


def estimated_device(profile: object) -> DeviceCapability:
    """A ``DeviceCapability`` from a hardware profile (``edge_sdk.hw_profiles.load``)."""
    name = getattr(profile, "name", "?")
    cpu = getattr(profile, "cpu", None)
    if getattr(profile, "kind", None) == "mcu":
        raise InvalidInputError(
            f"hardware profile {name!r} is a microcontroller: an export-only target that does not "
            "train; use it with `edge-sdk export --target`, not `edge-sdk profile --hw`"
        )
    if cpu is None:
        raise InvalidInputError(f"hardware profile {name!r} has no [cpu] section: it cannot take part in training")
    memory = int(cpu.memory_mb * MIB)
    return DeviceCapability(
        cpu_model=f"{getattr(cpu, 'model', '') or getattr(profile, 'description', '')} (hardware profile {name})".strip(),
        arch=cpu.arch,
        logical_cpus=int(cpu.cores),
        effective_cpus=int(cpu.cores),
        isa_flags=list(cpu.isa_features),
        memory_total_bytes=memory,
        memory_available_bytes=memory,
        memory_limit_bytes=None,
        threads=int(cpu.cores),
        gflops_fp32_1t=round(cpu.nominal_gflops_fp32 / cpu.cores, 3),
        gflops_fp32=round(float(cpu.nominal_gflops_fp32), 3),
        int8_gops=None if cpu.nominal_int8_gops is None else round(float(cpu.nominal_int8_gops), 3),
        memory_bandwidth_gbs=round(float(cpu.memory_bandwidth_gbs), 3),
        estimated=True,
        source=f"hw:{name}",
    )


def estimated_model_profile(measured: ModelProfile, device: DeviceCapability) -> ModelProfile:
    """``measured`` (FLOPs, parameters and memory taken here, latencies not) with latencies
    estimated for ``device`` as FLOPs / its fp32 rate."""
    rate = device.gflops_fp32 * 1e9
    sizes = []
    for size in measured.sizes:
        forward = _lower_bound(size.forward_flops, rate)
        train = _lower_bound(size.train_step_flops, rate)
        sizes.append(dataclasses.replace(size, forward_latency=forward, train_step_latency=train))
    return dataclasses.replace(measured, sizes=sizes)


def _lower_bound(flops: int, rate: float) -> LatencyStats:
    ms = float(f"{flops / rate * 1e3:.6g}")
    return LatencyStats(cold_ms=ms, median_ms=ms, p90_ms=ms, runs=0)
