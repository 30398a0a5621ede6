"""onnxruntime sessions, batched runs, latency at a fixed thread count, shapes and per-node profiles."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edge_sdk.errors import InvalidInputError

__all__ = ["make_session", "run", "latency_ms", "paired_latency_ms", "call_floor_ms", "tensor_shapes",
           "profile_nodes", "LATENCY_METHODS"]

# How a timed call is made. "iobinding": input and output OrtValues allocated once and bound
# (``run_with_iobinding``), so a call costs the graph plus onnxruntime's fixed per-run work;
# "run": ``session.run`` with a numpy feed, which adds the Python binding's conversion of the
# input and of a fresh output array (about 2.5 us more per call on this machine).
LATENCY_METHODS = ("iobinding", "run")


def make_session(model: str | bytes | os.PathLike[str] | onnx.ModelProto, threads: int = 1, *,
                 optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                 profile_prefix: str | None = None) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads, one inter-op thread, full optimisation."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = optimization
    opts.log_severity_level = 3
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def _batch_dim(session: ort.InferenceSession) -> int | None:
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def run(session: ort.InferenceSession, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Outputs for all samples; a graph exported with a fixed batch is called at that batch."""
    name = session.get_inputs()[0].name
    fixed = _batch_dim(session)
    step = fixed or batch
    outs = []
    for start in range(0, x.shape[0], step):
        chunk = x[start : start + step]
        n = chunk.shape[0]
        if fixed and n < fixed:  # pad the last chunk to the fixed batch
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - n, axis=0)], axis=0)
        outs.append(np.asarray(session.run(None, {name: chunk})[0])[:n])
    return np.concatenate(outs, axis=0).astype(np.float32)


def _feed(session: ort.InferenceSession, sample: np.ndarray, batch: int | None) -> dict[str, np.ndarray]:
    n = _batch_dim(session) or batch or 1
    reps = -(-n // sample.shape[0])
    return {session.get_inputs()[0].name: np.ascontiguousarray(np.concatenate([sample] * reps, axis=0)[:n])}


def _caller(session: ort.InferenceSession, feed: dict[str, np.ndarray], method: str) -> Callable[[], object]:
    """A no-argument function making one call of ``session`` on ``feed`` by ``method``."""
    if method == "run":
        return lambda: session.run(None, feed)
    binding = session.io_binding()
    keep = []  # the bound OrtValues must outlive the binding
    for name, value in feed.items():
        ov = ort.OrtValue.ortvalue_from_numpy(value)
        keep.append(ov)
        binding.bind_ortvalue_input(name, ov)
    outputs = session.run(None, feed)  # shapes and types of the outputs, then buffers for them
    for meta, value in zip(session.get_outputs(), outputs):
        ov = ort.OrtValue.ortvalue_from_numpy(np.empty_like(np.asarray(value)))
        keep.append(ov)
        binding.bind_ortvalue_output(meta.name, ov)

    def call() -> None:
        session.run_with_iobinding(binding)

    call.keep = keep  # type: ignore[attr-defined]
    return call


def paired_latency_ms(
    sessions: list[ort.InferenceSession],
    sample: np.ndarray,
    *,
    batch: int | None = None,
    min_rounds: int = 30,
    min_seconds: float = 0.5,
    warmup: int = 10,
    method: str = "iobinding",
) -> list[float]:
    """Median wall time (ms) of one call per session, measured in alternating rounds.

    Alternating the sessions call by call makes a ratio between them robust to load from
    other processes (both see the same machine state). Every session is called the same
    way (``method``, see :data:`LATENCY_METHODS`). The input is ``sample`` repeated to the
    graph's fixed batch, or to ``batch`` for a dynamic-batch graph (default 1).
    """
    if method not in LATENCY_METHODS:
        raise InvalidInputError(f"latency method={method!r} is not accepted; expected one of {', '.join(LATENCY_METHODS)}")
    calls = [_caller(s, _feed(s, sample, batch), method) for s in sessions]
    for call in calls:
        for _ in range(warmup):
            call()
    times: list[list[float]] = [[] for _ in sessions]
    clock = time.perf_counter
    start = clock()
    rounds = 0
    while rounds < min_rounds or clock() - start < min_seconds:
        for i, call in enumerate(calls):
            t0 = clock()
            call()
            times[i].append(clock() - t0)
        rounds += 1
        if rounds >= 50_000:
            break
    return [statistics.median(t) * 1e3 for t in times]


def latency_ms(session: ort.InferenceSession, sample: np.ndarray, **kwargs) -> float:
    """Median wall time (ms) of one call of one session (see :func:`paired_latency_ms`)."""
    return paired_latency_ms([session], sample, **kwargs)[0]


def _identity_model(shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "floor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def call_floor_ms(sessions: list[ort.InferenceSession], sample: np.ndarray, *, threads: int = 1,
                  batch: int | None = None, method: str = "iobinding", min_seconds: float = 0.5) -> list[float]:
    """Latencies of ``sessions`` and, last, of a one-node (Identity) graph on the same input.

    The one-node graph is the fixed cost of a call made by ``method`` (binding, executor
    set-up, the Python call), which no graph can go below; all are timed in the same
    alternating rounds.
    """
    n = _batch_dim(sessions[0]) or batch or 1
    shape = [n, *sample.shape[1:]]
    floor = make_session(_identity_model(shape), threads)
    return paired_latency_ms([*sessions, floor], sample, batch=n, method=method, min_seconds=min_seconds)


def tensor_shapes(model: onnx.ModelProto, sample: np.ndarray) -> dict[str, list[int]]:
    """Shape of every tensor of ``model`` on ``sample``, found by running it once unoptimised.

    ONNX shape inference knows no com.microsoft op (QLinearAdd, QGemm ...), so the shapes of
    a quantized graph are taken from onnxruntime itself.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=out))
                known.add(out)
    session = make_session(probe, 1, optimization=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: sample})
    shapes = {name: list(np.shape(v)) for name, v in zip(names, values)}
    shapes[session.get_inputs()[0].name] = list(sample.shape)
    return shapes


def profile_nodes(model: str | bytes | onnx.ModelProto, sample: np.ndarray, *, threads: int = 1,
                  runs: int = 2000, skip: int = 200) -> list[dict]:
    """Per-node kernel time from onnxruntime's profiler, ``mean_us`` over ``runs`` calls after ``skip``.

    The nodes are those onnxruntime executes after its graph optimisations (fused, layout
    changed), in execution order. ``mean_us`` leaves out the slowest tenth of the calls (a
    preempted call would dominate a plain mean). The profiler has microsecond resolution and
    adds its own cost to every node, so the numbers locate the time; they are not latencies.
    """
    with tempfile.TemporaryDirectory(prefix="edge_sdk_prof_") as tmp:
        session = make_session(model, threads, profile_prefix=os.path.join(tmp, "p"))
        feed = _feed(session, sample, None)
        for _ in range(runs):
            session.run(None, feed)
        path = session.end_profiling()
        with open(path, encoding="utf-8") as fh:
            events = json.load(fh)
    per: dict[str, dict] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            entry = per.setdefault(name, {"node": name, "op_type": e.get("args", {}).get("op_name", ""), "t": []})
            entry["t"].append(e["dur"])
    out = []
    for entry in per.values():
        t = np.sort(np.asarray(entry.pop("t")[skip:], dtype=np.float64))
        entry["mean_us"] = float(np.mean(t[: max(1, int(0.9 * t.size))])) if t.size else 0.0
        out.append(entry)
    return out
