"""Device microbenchmarks: fp32 matmul GFLOP/s, int8 GOP/s, memory bandwidth.

Each benchmark runs its kernel in ``threads`` Python threads, each kernel single-threaded
(torch and onnxruntime release the GIL), and times every call twice: wall time and the
calling thread's CPU time (``time.thread_time``). Work per CPU-second is the hardware's
rate and does not drop when other processes take CPU time; work per wall-second is what
the benchmark got; their ratio is the share of the CPUs that was free. Running the threads
ourselves, rather than torch's intra-op pool, also avoids the pool's barrier waits, which
on a busy device turn one late thread into a stall of every thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from edge_sdk.errors import ProfilingError
from edge_sdk.profiler import contention
from edge_sdk.profiler.budget import Budget
from edge_sdk.profiler.report import RateStats

log = logging.getLogger(__name__)

Kernel = Callable[[], object]
MIN_WINDOWS = 3  # per thread, while the budget lasts (2 once it is spent)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch ops on ``threads`` intra-op threads, restoring the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class _Windows:
    """Per-call (wall seconds, CPU seconds) of one benchmark thread."""

    wall: list[float]
    cpu: list[float]
    span: float = 0.0  # wall seconds from the common start to this thread's last call end


def measure_rate(
    kernels: Sequence[Kernel],
    work: float,
    *,
    seconds: float,
    cpus: int | None = None,
    on_tick: Callable[[], None] | None = None,
) -> RateStats:
    """Run ``kernels[i]`` in thread i (one warm-up call, then timed calls) for ``seconds``,
    at least :data:`MIN_WINDOWS` calls each; ``work`` is the work of one call.

    ``cpus``: CPUs the threads could use at most (default: one each), the base of the CPU
    share. ``on_tick`` is called from the waiting thread every 50 ms (contention probes).
    """
    n = len(kernels)
    cpus = max(1, min(cpus or n, n))
    min_windows = MIN_WINDOWS if seconds > 0 else 2  # out of time: two windows still give a spread
    results = [_Windows([], []) for _ in range(n)]
    errors: list[BaseException] = []
    stop = threading.Event()
    ready = threading.Barrier(n + 1)

    def worker(i: int) -> None:
        try:
            torch.set_num_threads(1)
            kernels[i]()
        except BaseException as exc:  # reported in the calling thread
            errors.append(exc)
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        if errors:
            return
        start = time.perf_counter()
        out = results[i]
        while len(out.wall) < min_windows or not stop.is_set():
            w0, c0 = time.perf_counter(), time.thread_time()
            kernels[i]()
            out.cpu.append(time.thread_time() - c0)
            out.wall.append(time.perf_counter() - w0)
        out.span = time.perf_counter() - start

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    with torch_threads(1):
        for t in threads:
            t.start()
        ready.wait()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and not errors:
            if on_tick:
                on_tick()
            time.sleep(min(0.05, max(0.0, end - time.perf_counter())))
        stop.set()
        for t in threads:
            t.join()
    if errors:
        raise ProfilingError(f"benchmark kernel failed: {errors[0]}") from errors[0]
    return summarise(results, work, cpus)


def summarise(results: Sequence[_Windows], work: float, cpus: int) -> RateStats:
    """Per thread, the median work per CPU-second (summed: the hardware rate) and work per
    wall-second over its span (summed: what the benchmark got); the spread is the relative
    interquartile range of all windows' CPU-second rates, normalised per thread."""
    cpu_rates = [work / np.maximum(np.asarray(r.cpu), 1e-9) for r in results]
    value = float(sum(np.median(rates) for rates in cpu_rates))
    wall_value = float(sum(len(r.wall) * work / max(r.span, 1e-9) for r in results))
    pooled = np.concatenate([rates / np.median(rates) for rates in cpu_rates])
    q25, q75 = np.percentile(pooled, [25, 75])
    span = max(r.span for r in results)
    share = sum(sum(r.cpu) for r in results) / max(span * cpus, 1e-9)
    share = min(share, 1.0) if share < 1.05 else share  # clock granularity, not extra CPU
    spread = float(q75 - q25)
    return RateStats(
        value=round(value, 3),
        wall_value=round(min(wall_value, value), 3),
        spread=round(spread, 4),
        windows=int(sum(len(r.wall) for r in results)),
        cpu_share=round(share, 4),
        verdict=contention.rate_verdict(share, spread),
    )


@functools.lru_cache(maxsize=1)
def matmul_size() -> int:
    """Largest n in {128, 256, 512, 1024} whose fp32 n^3 matmul takes <= ~25 ms of CPU time
    on one thread (CPU time, so the choice does not depend on other load). Each size's time
    x 8 forecasts the next size's, which is not run (that one would cost 8x)."""
    n = 128
    with torch_threads(1):
        while n < 1024:
            a = torch.randn(n, n)
            torch.mm(a, a)
            start = time.thread_time()
            torch.mm(a, a)
            if (time.thread_time() - start) * 8 > 0.025:
                break
            n *= 2
    return n


def matmul_gflops(threads: int, *, seconds: float = 1.0, cpus: int | None = None,
                  on_tick: Callable[[], None] | None = None) -> RateStats:
    """fp32 GFLOP/s of torch.mm, one single-threaded matmul per thread."""
    n = matmul_size()

    def kernel() -> Kernel:
        a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        return lambda: torch.mm(a, b, out=out)

    stats = measure_rate([kernel() for _ in range(threads)], 2.0 * n**3, seconds=seconds, cpus=cpus, on_tick=on_tick)
    return _scaled(stats, 1e-9)


def int8_matmul_gops(threads: int, arch: str, *, seconds: float = 1.0, cpus: int | None = None) -> RateStats:
    """int8 GOP/s of onnxruntime's integer matmul (``MatMulInteger``), one single-threaded
    session per thread.

    Activations are uint8 on x86 (the u8s8 kernels use VNNI/AVX2) and int8 on Arm (s8s8 dot
    product kernels), weights int8, int32 accumulation: the kernel a QOperator int8 model uses.
    """
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - both are core dependencies
        raise ProfilingError(f"int8 benchmark needs onnx and onnxruntime: {exc}") from exc
    n = 512
    act_type = TensorProto.UINT8 if arch in ("x86_64", "AMD64", "i686", "x86") else TensorProto.INT8
    act_dtype = np.uint8 if act_type == TensorProto.UINT8 else np.int8
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-128, 127, size=(n, n), dtype=np.int8), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "int8_matmul",
        [helper.make_tensor_value_info("A", act_type, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    blob = model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    info = np.iinfo(act_dtype)
    feed = {"A": rng.integers(info.min, info.max, size=(n, n), dtype=act_dtype)}

    def kernel() -> Kernel:
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, feed)

    stats = measure_rate([kernel() for _ in range(threads)], 2.0 * n**3, seconds=seconds, cpus=cpus)
    return _scaled(stats, 1e-9)


def memory_bandwidth_gbs(available_bytes: int, *, seconds: float = 1.0) -> RateStats:
    """Copy bandwidth in GB/s (bytes read + bytes written per second), one thread, on a
    buffer far larger than the last-level cache (64 MiB, less on small devices)."""
    size = int(min(64 * 2**20, max(4 * 2**20, available_bytes // 16)))
    src = np.ones(size // 8, dtype=np.float64)
    dst = np.empty_like(src)
    stats = measure_rate([lambda: np.copyto(dst, src)], 2.0 * src.nbytes, seconds=seconds)
    return _scaled(stats, 1e-9)


def _scaled(stats: RateStats, factor: float) -> RateStats:
    stats.value = round(stats.value * factor, 3)
    stats.wall_value = round(stats.wall_value * factor, 3)
    return stats


def budget_seconds(budget: Budget, wanted: float, *, keep: float, what: str) -> float:
    """Seconds a benchmark may run under ``budget``; notes a cut when it gets less."""
    allowed = budget.allow(wanted, keep=keep)
    if allowed < wanted * 0.999:
        budget.cut(what)
    return allowed
