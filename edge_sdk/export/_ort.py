"""onnxruntime sessions, batched runs and latency at a fixed thread count."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import onnxruntime as ort

__all__ = ["make_session", "run", "latency_ms", "paired_latency_ms"]


def make_session(model: str | bytes | os.PathLike[str], threads: int = 1) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads, one inter-op thread, full optimisation."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
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
    return {session.get_inputs()[0].name: np.concatenate([sample] * reps, axis=0)[:n]}


def paired_latency_ms(
    sessions: list[ort.InferenceSession],
    sample: np.ndarray,
    *,
    batch: int | None = None,
    min_rounds: int = 30,
    min_seconds: float = 0.5,
    warmup: int = 10,
) -> list[float]:
    """Median wall time (ms) of one call per session, measured in alternating rounds.

    Alternating the sessions call by call makes a ratio between them robust to load from
    other processes (both see the same machine state). The input is ``sample`` repeated to
    the graph's fixed batch, or to ``batch`` for a dynamic-batch graph (default 1).
    """
    feeds = [_feed(s, sample, batch) for s in sessions]
    for s, f in zip(sessions, feeds):
        for _ in range(warmup):
            s.run(None, f)
    times: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or time.perf_counter() - start < min_seconds:
        for i, (s, f) in enumerate(zip(sessions, feeds)):
            t0 = time.perf_counter()
            s.run(None, f)
            times[i].append(time.perf_counter() - t0)
        rounds += 1
        if rounds >= 20_000:
            break
    return [statistics.median(t) * 1e3 for t in times]


def latency_ms(session: ort.InferenceSession, sample: np.ndarray, **kwargs) -> float:
    """Median wall time (ms) of one call of one session (see :func:`paired_latency_ms`)."""
    return paired_latency_ms([session], sample, **kwargs)[0]
