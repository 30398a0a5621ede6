"""``profile_device``: what this device can do, measured."""

from __future__ import annotations

from typing import Callable

from edge_sdk.profiler import microbench
from edge_sdk.profiler.report import DeviceCapability
from edge_sdk.profiler.system import read_system_info

# Seconds each microbenchmark runs (fp32 at 1 thread, int8, bandwidth) ...
FULL_SECONDS = 1.0
QUICK_SECONDS = 0.3
# ... and the fp32 matmul at all threads, which is the capacity score: longer, so that a
# short burst of other load touches a smaller share of its windows.
FULL_SCORE_SECONDS = 2.0
QUICK_SCORE_SECONDS = 0.8


def profile_device(
    *, quick: bool = False, threads: int | None = None, progress: Callable[[str], None] | None = None
) -> DeviceCapability:
    """Measure this device: effective CPUs and memory (affinity, cgroup aware), CPU model and
    int8-relevant ISA flags, sustained fp32 GFLOP/s at 1 thread and at ``threads`` (default:
    all effective CPUs), int8 GOP/s through onnxruntime's integer matmul, copy bandwidth."""
    info = read_system_info()
    threads = threads or info.effective_cpus
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    say = progress or (lambda _message: None)
    score_seconds = QUICK_SCORE_SECONDS if quick else FULL_SCORE_SECONDS
    say("measuring fp32 matmul, 1 thread")
    gflops_1t = microbench.matmul_gflops(1, seconds=score_seconds if threads == 1 else seconds)
    gflops = gflops_1t
    if threads > 1:
        say(f"measuring fp32 matmul, {threads} threads")
        gflops = microbench.matmul_gflops(threads, seconds=score_seconds)
    say("measuring int8 matmul (onnxruntime)")
    int8 = microbench.int8_matmul_gops(threads, info.arch, seconds=seconds)
    say("measuring memory bandwidth")
    bandwidth = microbench.memory_bandwidth_gbs(info.memory_available_bytes, seconds=seconds)
    return DeviceCapability(
        cpu_model=info.cpu_model,
        arch=info.arch,
        logical_cpus=info.logical_cpus,
        effective_cpus=info.effective_cpus,
        isa_flags=info.isa_flags,
        memory_total_bytes=info.memory_total_bytes,
        memory_available_bytes=info.memory_available_bytes,
        memory_limit_bytes=info.memory_limit_bytes,
        threads=threads,
        gflops_fp32_1t=round(gflops_1t, 3),
        gflops_fp32=round(gflops, 3),
        int8_gops=round(int8, 3),
        memory_bandwidth_gbs=round(bandwidth, 3),
    )
