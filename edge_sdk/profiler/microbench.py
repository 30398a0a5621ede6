"""Device microbenchmarks: sustained fp32 matmul GFLOP/s, int8 GOP/s, memory bandwidth.

Each benchmark repeats a kernel in short windows for a fixed time and reports the upper
quartile of the window rates (see :func:`sustained_rate`). Problem sizes adapt to the
device so that a slow board does not spend minutes on one call.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Iterator

import numpy as np
import torch

from edge_sdk.errors import ProfilingError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run torch ops on ``threads`` intra-op threads, restoring the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def sustained_rate(work: float, call: Callable[[], object], *, seconds: float, min_windows: int = 5) -> float:
    """Upper quartile of ``work / time`` over repeated calls of ``call`` lasting ``seconds`` in
    all (at least ``min_windows`` calls; the first call is a warm-up and not counted).

    Other load on the machine can only slow a window down, so the upper quartile tracks what
    the device sustains better than the median, without being one lucky window (the max).
    """
    call()
    rates: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(rates) < min_windows or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        rates.append(work / max(elapsed, 1e-9))
        if len(rates) > 10_000:
            break
    return float(np.percentile(rates, 75))


def _matmul_size(threads: int) -> int:
    """Largest n in {128, ..., 1024} whose fp32 n^3 matmul takes <= ~25 ms here."""
    n = 128
    with torch_threads(threads):
        while n < 1024:
            a = torch.randn(n * 2, n * 2)
            start = time.perf_counter()
            torch.mm(a, a)
            if time.perf_counter() - start > 0.025:
                break
            n *= 2
    return n


def matmul_gflops(threads: int, *, seconds: float = 1.0) -> float:
    """Sustained fp32 GFLOP/s of torch.mm on ``threads`` threads."""
    n = _matmul_size(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = torch.empty(n, n)
    with torch_threads(threads):
        rate = sustained_rate(2.0 * n**3, lambda: torch.mm(a, b, out=out), seconds=seconds)
    return rate / 1e9


def int8_matmul_gops(threads: int, arch: str, *, seconds: float = 1.0) -> float:
    """Sustained int8 GOP/s of onnxruntime's integer matmul (``MatMulInteger``).

    Activations are uint8 on x86 (the u8s8 kernels use VNNI/AVX2) and int8 on Arm (s8s8 dot
    product kernels), weights int8, int32 accumulation: the kernel a QOperator int8 model uses.
    """
    try:
        import onnx
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
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    info = np.iinfo(act_dtype)
    feed = {"A": rng.integers(info.min, info.max, size=(n, n), dtype=act_dtype)}
    rate = sustained_rate(2.0 * n**3, lambda: session.run(None, feed), seconds=seconds)
    return rate / 1e9


def memory_bandwidth_gbs(available_bytes: int, *, seconds: float = 1.0) -> float:
    """Copy bandwidth in GB/s (bytes read + bytes written per second), one thread, on a
    buffer far larger than the last-level cache (64 MiB, less on small devices)."""
    size = int(min(64 * 2**20, max(4 * 2**20, available_bytes // 16)))
    src = np.ones(size // 8, dtype=np.float64)
    dst = np.empty_like(src)
    rate = sustained_rate(2.0 * src.nbytes, lambda: np.copyto(dst, src), seconds=seconds)
    return rate / 1e9
