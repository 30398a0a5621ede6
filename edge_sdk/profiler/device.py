"""``profile_device``: what this device can do, measured, and how busy it was meanwhile."""

from __future__ import annotations

from typing import Callable

from edge_sdk.errors import InvalidInputError
from edge_sdk.profiler import contention, microbench
from edge_sdk.profiler.budget import Budget
from edge_sdk.profiler.report import DeviceCapability, Rates
from edge_sdk.profiler.estimate import local_peak_gflops
from edge_sdk.profiler.system import clock_mhz, cpu_flags, read_system_info

# Seconds each microbenchmark runs (fp32 at 1 thread, int8, bandwidth) ...
FULL_SECONDS = 1.0
QUICK_SECONDS = 0.3
# ... and the fp32 matmul at all threads, which is the capacity score: longer, so that its
# windows see more of whatever else runs.
FULL_SCORE_SECONDS = 2.0
QUICK_SCORE_SECONDS = 0.8
MAX_THREADS_PER_CPU = 4


def check_threads(threads: int | None, effective_cpus: int) -> int:
    """``threads`` (default: effective CPUs), refused outside 1..effective CPUs x 4."""
    if threads is None:
        return effective_cpus
    limit = effective_cpus * MAX_THREADS_PER_CPU
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
        raise InvalidInputError(
            f"threads={threads!r} is not accepted; expected an integer from 1 to {limit} "
            f"({MAX_THREADS_PER_CPU} x the {effective_cpus} effective CPUs)"
        )
    return threads


def profile_device(
    *,
    quick: bool = False,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    budget: Budget | None = None,
    keep_seconds: float = 0.0,
) -> DeviceCapability:
    """Measure this device: effective CPUs and memory (affinity, cgroup aware), CPU model and
    int8-relevant ISA flags; fp32 GFLOP/s at 1 thread and at ``threads`` (default: all
    effective CPUs), int8 GOP/s (onnxruntime integer matmul), copy bandwidth. Every rate is
    per CPU-second with its wall figure, spread and contention verdict (``rates``);
    ``contention`` describes the machine meanwhile. Under ``budget`` the benchmarks shrink
    to leave ``keep_seconds`` for later steps."""
    info = read_system_info()
    threads = check_threads(threads, info.effective_cpus)
    cpus = min(threads, info.effective_cpus)
    budget = budget or Budget()
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    score_seconds = QUICK_SCORE_SECONDS if quick else FULL_SCORE_SECONDS
    say = progress or (lambda _message: None)
    later = keep_seconds + 2 * seconds  # int8 and bandwidth still to come
    # the score comes first and gets its time whatever is left for the rest; the other
    # rates and then the model profile are what a tight deadline shortens

    def allow(wanted: float, what: str, keep: float) -> float:
        return microbench.budget_seconds(budget, wanted, keep=keep, what=what)

    say(f"measuring fp32 matmul, {threads} threads")
    queue: list[int] = []

    def probe() -> None:
        running = contention.procs_running()
        if running is not None:
            queue.append(max(0, running - 1 - threads))

    ticks = contention.cpu_ticks()
    fp32 = microbench.matmul_gflops(
        threads, seconds=allow(score_seconds, "fp32 matmul (score)", 0.0), cpus=cpus, on_tick=probe
    )
    steal = contention.steal_fraction(ticks, contention.cpu_ticks())
    fp32_1t = fp32
    if threads > 1:
        say("measuring fp32 matmul, 1 thread")
        fp32_1t = microbench.matmul_gflops(1, seconds=allow(seconds, "fp32 matmul (1 thread)", later))
    say("measuring int8 matmul (onnxruntime)")
    int8 = microbench.int8_matmul_gops(threads, info.arch, seconds=allow(seconds, "int8 matmul", later - seconds), cpus=cpus)
    say("measuring memory bandwidth")
    bandwidth = microbench.memory_bandwidth_gbs(
        info.memory_available_bytes, seconds=allow(seconds, "memory bandwidth", keep_seconds)
    )
    run_queue = round(sum(queue) / len(queue), 2) if queue else None
    peak = local_peak_gflops(cpus, cpu_flags(), info.cpu_model, clock_mhz())
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
        gflops_fp32_1t=fp32_1t.value,
        gflops_fp32=fp32.value,
        int8_gops=int8.value,
        memory_bandwidth_gbs=bandwidth.value,
        rates=Rates(fp32_1t=fp32_1t, fp32=fp32, memory_bandwidth=bandwidth, int8=int8),
        contention=contention.assess(fp32, steal, run_queue),
        peak_gflops_fp32=peak,
        kernel_efficiency=None if peak is None else round(min(1.5, fp32.value / peak), 4),
    )
