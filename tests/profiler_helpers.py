"""Shared test data for the profiler tests: a plausible measured device."""

from __future__ import annotations

from edge_sdk.profiler import DeviceCapability


def make_device(**overrides) -> DeviceCapability:
    values = dict(
        cpu_model="test cpu", arch="x86_64", logical_cpus=4, effective_cpus=2, isa_flags=["avx2"],
        memory_total_bytes=8 * 2**30, memory_available_bytes=4 * 2**30, memory_limit_bytes=None, threads=2,
        gflops_fp32_1t=10.0, gflops_fp32=20.0, int8_gops=40.0, memory_bandwidth_gbs=5.0,
    )
    values.update(overrides)
    return DeviceCapability(**values)
