"""Latency of a model's forward pass and training step on this device, within a deadline.

Cold first call apart, a warm-up, then median and p90 of timed calls. On a busy device one
call can take seconds and cannot be stopped once started, so work that the forecast (what
smaller sizes took, and a probe forward) says would overrun the deadline is not started.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import ProfilingError
from edge_sdk.profiler.budget import Budget
from edge_sdk.profiler.forecast import Forecast
from edge_sdk.profiler.report import LatencyStats

MIN_LATENCY_SECONDS = 0.3  # with less left, a latency is not worth starting


def measure_latency(
    call: Callable[[], object],
    *,
    runs: int,
    max_seconds: float,
    min_runs: int = 3,
    threads: int = 1,
    hard_seconds: float = math.inf,
) -> LatencyStats:
    """Cold first call apart, one warm-up, then up to ``runs`` timed calls within
    ``max_seconds`` (at least ``min_runs``, unless ``hard_seconds`` from the start have
    passed: then the calls made so far are all there is, the warm-up counting as a run if it
    must). ``cpu_share``: process CPU-seconds per wall-second per thread over the timed
    calls (1 = the threads had their CPUs)."""
    begin = time.perf_counter()
    hard_stop = begin + hard_seconds
    call()
    cold = time.perf_counter() - begin
    cpu0, wall0 = time.process_time(), time.perf_counter()
    times: list[float] = []
    share = None
    if wall0 < hard_stop:
        call()  # warm-up
        warm = time.perf_counter() - wall0
        deadline = time.perf_counter() + max_seconds
        while len(times) < runs and (len(times) < min_runs or time.perf_counter() < deadline) \
                and time.perf_counter() < hard_stop:
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        times = times or [warm]  # out of time after the warm-up: it is the one warm observation
        share = (time.process_time() - cpu0) / max((time.perf_counter() - wall0) * max(1, threads), 1e-9)
    times = times or [cold]
    values = np.array(times) * 1e3
    return LatencyStats(
        cold_ms=round(cold * 1e3, 4),
        median_ms=round(float(np.median(values)), 4),
        p90_ms=round(float(np.percentile(values, 90)), 4),
        runs=len(times),
        cpu_share=None if share is None else round(min(max(share, 0.0), 4.0), 4),
    )


def latencies(
    model: nn.Module,
    example_input: torch.Tensor,
    quick: bool,
    budget: Budget,
    threads: int,
    label: str,
    share: float,
    forecast: Forecast,
    flops: tuple[int, int],
) -> tuple[LatencyStats | None, LatencyStats | None]:
    """Forward and training-step latency within ``share`` seconds of ``budget``: fewer runs
    when that is less than wanted, none when the deadline has passed or the forecast says
    the cold call, warm-up and one timed call would not fit."""
    runs, seconds = (3, 1.0) if quick else (10, 6.0)
    allowed = min(seconds, share, budget.remaining())
    if allowed < MIN_LATENCY_SECONDS:
        budget.cut(f"latency at size {label}")
        return None, None
    probe = time.perf_counter()
    work = copy.deepcopy(model).train()
    step = train_step(work, torch.optim.SGD(work.parameters(), lr=1e-3, momentum=0.9), example_input)
    probe = time.perf_counter() - probe  # one forward on two samples: a floor for any call now
    # cold call, warm-up and one timed call of each, at the larger of what smaller sizes
    # took per FLOP and the probe (a training step is about three forwards)
    needed = 3 * max(forecast.predict("train", flops[1]), 3 * probe) + 3 * max(forecast.predict("forward", flops[0]), probe)
    if needed > budget.remaining():
        budget.cut(f"latency at size {label}")
        return None, None
    min_runs = 3
    if allowed < seconds:
        budget.cut(f"latency at size {label}")
        min_runs = 1
    infer = copy.deepcopy(model).eval()

    def forward() -> None:
        with torch.inference_mode():
            infer(example_input)

    # the soft limit (allowed) shortens the timed runs; the hard one (this size's share of
    # what is left before the deadline) stops even the minimum runs
    hard = max(allowed, min(share, budget.remaining()))
    start = time.perf_counter()
    train = measure_latency(step, runs=runs, max_seconds=allowed * 3 / 4, min_runs=min_runs,
                            threads=threads, hard_seconds=hard * 3 / 4)
    forecast.learn("train", time.perf_counter() - start, flops[1], calls=train.runs + 2)
    start = time.perf_counter()
    fwd = measure_latency(forward, runs=runs, max_seconds=allowed / 4, min_runs=min_runs,
                              threads=threads, hard_seconds=max(0.0, min(hard / 4, budget.remaining())))
    forecast.learn("forward", time.perf_counter() - start, flops[0], calls=fwd.runs + 2)
    if train.runs < min_runs or fwd.runs < min_runs:
        budget.cut(f"latency at size {label}")
    # a cold call alone is no steady-state latency (on a busy device it can be 20x the warm one)
    return (fwd if fwd.cpu_share is not None else None), (train if train.cpu_share is not None else None)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, example_input: torch.Tensor) -> Callable[[], None]:
    out = model(example_input[:2] if example_input.shape[0] > 1 else example_input)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ProfilingError("a training step needs a model that returns (batch, classes) logits")
    target = torch.randint(0, logits.shape[1], (example_input.shape[0],), generator=torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)

    def step() -> None:  # the per-step work of edge_sdk.training.train_local, metrics included
        optimizer.zero_grad(set_to_none=True)
        out = model(example_input)
        loss = nn.functional.cross_entropy(out, target)
        loss.backward()
        optimizer.step()
        float(loss.detach())
        int((out.detach().argmax(1) == target).sum())

    return step
