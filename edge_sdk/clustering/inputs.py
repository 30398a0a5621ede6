"""Turn what the caller gives (reports, scores, a mapping) into validated per-client values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

import numpy as np

from edge_sdk.errors import ClusteringError


@dataclass
class Fleet:
    """The clients to cluster: ids, capacity scores and, when given, their reports."""

    client_ids: list[str]
    scores: np.ndarray
    reports: list[Any] | None = None  # edge_sdk.profiler.report.CapabilityReport


def is_report(item: Any) -> bool:
    """Duck-typed test for a CapabilityReport (keeps the profiler import out of this module)."""
    return hasattr(item, "capacity") and hasattr(item, "device_id")


def fleet_from(reports_or_scores: Any) -> Fleet:
    """Validate the input of ``cluster_capabilities``.

    Raises :class:`ClusteringError` for an empty fleet, a report without a usable capacity
    score, a non-positive or non-finite score (naming the client), duplicate ids, or a mix of
    reports and raw scores.
    """
    if isinstance(reports_or_scores, Mapping):
        ids = [str(key) for key in reports_or_scores]
        values = list(reports_or_scores.values())
    elif isinstance(reports_or_scores, np.ndarray):
        values = reports_or_scores.reshape(-1) if reports_or_scores.ndim == 1 else None
        if values is None:
            raise ClusteringError(f"expected a 1-D array of scores, got shape {reports_or_scores.shape}")
        ids = None
    elif isinstance(reports_or_scores, (str, bytes)) or not _iterable(reports_or_scores):
        raise ClusteringError(
            "expected a list of capability reports, a list of scores or a mapping client id -> score, "
            f"got {type(reports_or_scores).__name__}"
        )
    else:
        values = list(reports_or_scores)
        ids = None
    if len(values) == 0:
        raise ClusteringError("no clients to cluster: give at least one capability report or score")

    reports = None
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuf":
            raise ClusteringError(f"scores must be numbers, got an array of {values.dtype}")
        scores = values.astype(float)
    else:
        kinds = {is_report(v) for v in values}
        if len(kinds) > 1:
            raise ClusteringError("got a mix of capability reports and raw scores: give one kind")
        if True in kinds:
            reports = values
            if ids is None:
                ids = [str(r.device_id) for r in reports]
            scores = np.asarray(
                [_report_score(r, cid) for r, cid in zip(reports, ids)], dtype=float
            )
        else:
            if ids is None:
                ids = [str(i) for i in range(len(values))]
            for cid, v in zip(ids, values):
                if isinstance(v, bool) or not isinstance(v, (Real, np.number)):
                    raise ClusteringError(
                        f"client {cid!r}: score {v!r} is not a number; give a positive finite number"
                    )
            scores = np.asarray(values, dtype=float)
    if ids is None:
        ids = [str(i) for i in range(scores.size)]
    bad = np.flatnonzero(~(np.isfinite(scores) & (scores > 0)))
    if bad.size:
        what = "capacity score" if reports is not None else "score"
        raise ClusteringError(
            f"client {ids[bad[0]]!r}: {what} {float(scores[bad[0]])!r} is not a positive finite number"
        )
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ClusteringError(f"client id {dup!r} appears more than once; ids must be unique")
    return Fleet(client_ids=ids, scores=scores, reports=reports)


def _report_score(report: Any, client_id: str) -> float:
    raw = getattr(getattr(report, "capacity", None), "score", None)
    if raw is None:
        raise ClusteringError(
            f"client {client_id!r}: report has no capacity score (capacity.score); "
            "profile the device again with `edge-sdk profile`"
        )
    return _positive(raw, client_id, "capacity score")


def _positive(value: Any, client_id: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (Real, np.number)):
        raise ClusteringError(f"client {client_id!r}: {what} {value!r} is not a number; give a positive finite number")
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise ClusteringError(f"client {client_id!r}: {what} {number!r} is not a positive finite number")
    return number


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Multi-feature mode


def memory_bytes(report: Any) -> float | None:
    """Memory the client can use: available memory, capped by a cgroup limit when there is one."""
    device = getattr(report, "device", None)
    if device is None:
        return None
    values = [getattr(device, "memory_available_bytes", None), getattr(device, "memory_limit_bytes", None)]
    values = [float(v) for v in values if isinstance(v, (Real, np.number)) and not isinstance(v, bool) and v > 0]
    if not values:
        total = getattr(device, "memory_total_bytes", None)
        return float(total) if isinstance(total, (Real, np.number)) and total > 0 else None
    return min(values)


def multi_features(fleet: Fleet) -> tuple[np.ndarray, list[str], list[str]]:
    """Log features per client for the multi-feature mode: ``(X, names, warnings)``.

    Features: ``log_gflops`` (``device.gflops_fp32``), ``log_memory`` (:func:`memory_bytes`)
    and ``log_train_latency`` (the median train-step latency at the largest submodel size that
    every report profiled, on the same model). GFLOP/s and memory are required for every client
    (a missing or non-positive one is a :class:`ClusteringError` naming the client); latency is
    dropped for the whole fleet, with a warning, when any report lacks it.
    """
    if fleet.reports is None:
        raise ClusteringError("features='multi' needs capability reports (raw scores carry no memory or latency)")
    warnings: list[str] = []
    clients = [_Entry(cid, r) for cid, r in zip(fleet.client_ids, fleet.reports)]
    gflops = [
        _positive(getattr(getattr(c.report, "device", None), "gflops_fp32", None), c.client_id, "device.gflops_fp32")
        for c in clients
    ]
    memory = []
    for c in clients:
        value = memory_bytes(c.report)
        if value is None:
            raise ClusteringError(f"client {c.client_id!r}: report has no device memory (device.memory_available_bytes)")
        memory.append(value)
    columns = [np.log(gflops), np.log(memory)]
    names = ["log_gflops", "log_memory"]
    latency, why = _latencies(clients)
    if latency is None:
        warnings.append(f"train-step latency left out of the features: {why}")
    else:
        columns.append(np.log(latency))
        names.append("log_train_latency")
    return np.stack(columns, axis=1), names, warnings


@dataclass
class _Entry:
    client_id: str
    report: Any


def _latencies(clients: list[_Entry]) -> tuple[np.ndarray | None, str]:
    models = [getattr(c.report, "model", None) for c in clients]
    for c, model in zip(clients, models):
        contention = getattr(getattr(c.report, "device", None), "contention", None)
        if getattr(contention, "verdict", None) == "contended":  # its latencies are wall times under load
            return None, f"client {c.client_id!r} was profiled on a busy device (its latencies are wall times under load)"
        if model is None:
            return None, f"client {c.client_id!r} has no model profile"
    names = {getattr(m, "model", None) for m in models}
    if len(names) > 1:
        return None, f"reports profile different models ({', '.join(sorted(map(str, names)))})"
    common = None
    for model in models:
        ratios = {round(float(s.ratio), 9) for s in model.sizes if s.train_step_latency is not None}
        common = ratios if common is None else common & ratios
    if not common:
        return None, "no submodel size has a train-step latency in every report"
    ratio = max(common)
    values = []
    for c, model in zip(clients, models):
        size = next(s for s in model.sizes if round(float(s.ratio), 9) == ratio)
        ms = size.train_step_latency.median_ms
        if not isinstance(ms, (Real, np.number)) or not math.isfinite(ms) or ms <= 0:
            return None, f"client {c.client_id!r} has train-step latency {ms!r} at size {ratio:g}"
        values.append(float(ms))
    return np.asarray(values), ""
