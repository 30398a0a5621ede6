"""Sanity checks on a finished report: numbers that cannot all be right together.

Each finding is one line the CLI prints under the table and the report carries in
``warnings``; none of them stops the report (the server decides what to trust).
"""

from __future__ import annotations

from edge_sdk.profiler.report import CapabilityReport, LatencyStats, RateStats, size_label

MONOTONIC_SLACK = 1.10  # a smaller size may be this much slower before it is flagged
COLD_FACTOR = 20.0  # a cold call this many times the warm median is flagged
SCALING_SLACK = 1.10  # all-threads / 1-thread rate above threads x this is flagged


def sanity_warnings(report: CapabilityReport) -> list[str]:
    """One-line warnings: contention, unstable rates, latencies not monotonic in size, cold
    calls absurdly slower than warm ones, thread scaling above the thread count, and
    measurements cut short by the deadline."""
    out: list[str] = []
    device = report.device
    c = device.contention
    if c is not None and c.verdict == "contended":
        steal = f", {c.steal_fraction:.0%} steal" if c.steal_fraction else ""
        out.append(
            f"device busy during the measurement: {c.free_share:.0%} of {min(device.threads, device.effective_cpus)} "
            f"CPUs free{steal}; score {report.capacity.score:,.1f} GFLOP/s is per CPU-second, "
            f"{report.capacity.available_score or 0:,.1f} was available"
        )
    if device.rates is not None:
        for name, rate in _rates(device.rates):
            if rate.verdict == "unstable":
                out.append(f"{name} varied by {rate.spread:.0%} (interquartile) per CPU-second: the figure is unsure")
    one = device.gflops_fp32_1t
    if not device.estimated and one > 0 and device.gflops_fp32 > one * device.threads * SCALING_SLACK:
        out.append(
            f"fp32 scaling {device.gflops_fp32 / one:.1f}x from 1 to {device.threads} threads is above the thread count"
        )
    if report.model is not None:
        for kind in ("forward_latency", "train_step_latency"):
            out.extend(_latency_checks(report, kind))
    if report.run is not None and report.run.cut_short:
        out.append(f"cut short to meet the {report.run.deadline_seconds:g} s deadline: {', '.join(report.run.cut_short)}")
    return out


def _rates(rates: object) -> list[tuple[str, RateStats]]:
    names = {"fp32_1t": "fp32 matmul (1 thread)", "fp32": "fp32 matmul", "int8": "int8 matmul",
             "memory_bandwidth": "memory bandwidth"}
    return [(label, getattr(rates, key)) for key, label in names.items() if getattr(rates, key, None) is not None]


def _latency_checks(report: CapabilityReport, kind: str) -> list[str]:
    assert report.model is not None
    label = "forward" if kind == "forward_latency" else "train step"
    out = []
    measured: list[tuple[float, LatencyStats]] = [
        (s.ratio, getattr(s, kind)) for s in sorted(report.model.sizes, key=lambda s: s.ratio, reverse=True)
        if getattr(s, kind) is not None and getattr(s, kind).runs > 0
    ]
    for (big, big_lat), (small, small_lat) in zip(measured, measured[1:]):
        if small_lat.median_ms > big_lat.median_ms * MONOTONIC_SLACK:
            out.append(
                f"{label} latency not monotonic in size: {small_lat.median_ms:,.1f} ms at size {size_label(small)} "
                f"> {big_lat.median_ms:,.1f} ms at size {size_label(big)}"
            )
    for ratio, lat in measured:
        if lat.median_ms > 0 and lat.cold_ms > lat.median_ms * COLD_FACTOR:
            out.append(
                f"{label} cold call at size {size_label(ratio)} took {lat.cold_ms / lat.median_ms:,.0f}x "
                f"the warm median ({lat.cold_ms:,.1f} vs {lat.median_ms:,.1f} ms)"
            )
    return out

