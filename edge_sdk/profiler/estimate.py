"""The capability report a device of a given hardware profile would send, estimated.

Device figures come from the profile's datasheet numbers. A model's parameters, FLOPs and
peak training memory do not depend on the CPU, so they are measured here exactly. Latencies
are predicted as FLOPs / (the profile's peak fp32 rate x the kernel efficiency this model
reaches at this size on the machine making the estimate: its measured training FLOP/s over
this machine's own peak). Dividing by the peak alone would give a lower bound that real
kernels never reach; with the measured efficiency the estimate is a prediction, though one
carried across CPU classes (an A76's kernels may reach a different share of its peak than
this machine's do). Every estimated report says so (``device.estimated``,
``device.source = "hw:<name>"``, latency ``runs = 0``, ``device.kernel_efficiency``).
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


def local_peak_gflops(cores: int, flags: set[str], cpu_model: str, clock_mhz: float | None) -> float | None:
    """This machine's peak fp32 GFLOP/s: cores x clock x FLOP per cycle of its widest FMA
    (None when the clock or the ISA is unknown)."""
    if not clock_mhz:
        return None
    if "avx512f" in flags:
        # Zen 4 runs AVX-512 on two 256-bit FMA pipes; Zen 5 (which added VP2INTERSECT) and
        # Intel server cores have two 512-bit ones
        zen4 = "AMD" in cpu_model.upper() and "avx512_vp2intersect" not in flags
        per_cycle = 32 if zen4 else 64
    elif {"avx2", "fma"} <= flags:
        per_cycle = 32
    elif "asimd" in flags:
        per_cycle = 16  # two 128-bit FMA pipes (Cortex-A76 and later big cores)
    elif "neon" in flags:
        per_cycle = 8
    else:
        return None
    return round(cores * clock_mhz / 1e3 * per_cycle, 3)


def kernel_efficiencies(measured: ModelProfile, local_peak_gflops: float) -> dict[float, float]:
    """Per size: measured training-step FLOP/s here over this machine's peak."""
    out = {}
    for size in measured.sizes:
        lat = size.train_step_latency
        if lat is not None and lat.median_ms > 0:
            out[size.ratio] = size.train_step_flops / (lat.median_ms / 1e3) / (local_peak_gflops * 1e9)
    return out


def with_efficiency(device: DeviceCapability, local: tuple[float, float]) -> DeviceCapability:
    """An estimated ``device`` whose rates are its peak x the fp32 matmul efficiency measured
    here (``local``: this machine's 1-thread GFLOP/s and its per-core peak)."""
    efficiency = min(1.0, local[0] / local[1])
    return dataclasses.replace(
        device,
        gflops_fp32=round(device.gflops_fp32 * efficiency, 3),
        gflops_fp32_1t=round(device.gflops_fp32_1t * efficiency, 3),
        peak_gflops_fp32=device.gflops_fp32,
        kernel_efficiency=round(efficiency, 4),
    )


def estimated_model_profile(
    measured: ModelProfile, device: DeviceCapability, efficiency: dict[float, float] | None = None
) -> ModelProfile:
    """``measured`` (FLOPs, parameters and memory taken here) with latencies predicted for
    ``device`` as FLOPs / (its peak fp32 rate x ``efficiency[ratio]``; 1 where not given,
    which makes the latency a lower bound)."""
    sizes = []
    for size in measured.sizes:
        rate = device.gflops_fp32 * 1e9 * (efficiency or {}).get(size.ratio, 1.0)
        forward = _predicted(size.forward_flops, rate)
        train = _predicted(size.train_step_flops, rate)
        sizes.append(dataclasses.replace(size, forward_latency=forward, train_step_latency=train))
    return dataclasses.replace(measured, sizes=sizes)


def _predicted(flops: int, rate: float) -> LatencyStats:
    ms = float(f"{flops / rate * 1e3:.6g}")
    return LatencyStats(cold_ms=ms, median_ms=ms, p90_ms=ms, runs=0)
