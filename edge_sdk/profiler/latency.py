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
from torch.optim.sgd import sgd

from edge_sdk.errors import ProfilingError
from edge_sdk.profiler.budget import Budget
from edge_sdk.profiler.forecast import Forecast
from edge_sdk.profiler.report import LatencyStats

MIN_LATENCY_SECONDS = 0.3  # with less left, a latency is not worth starting
QUICK_RUNS, QUICK_SECONDS = 20, 0.5
FULL_RUNS, FULL_SECONDS = 200, 4.0


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
        mean_ms=round(float(np.mean(values)), 4),
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
    # at most this many timed calls, and about this many seconds for the forward and the
    # step together (at least 3 calls each while the deadline allows): fast calls get many
    # runs, so that the mean sees the occasional stall of a busy device
    runs, seconds = (QUICK_RUNS, QUICK_SECONDS) if quick else (FULL_RUNS, FULL_SECONDS)
    allowed = min(seconds, share, budget.remaining())
    if allowed < MIN_LATENCY_SECONDS:
        budget.cut(f"latency at size {label}")
        return None, None
    probe = time.perf_counter()
    work = copy.deepcopy(model).train()
    step = TrainStep(work, example_input, optimizer=not quick)
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


class TrainStep:
    """One SGD(momentum) training step of ``model`` on the batch ``example_input``: the
    per-step work of :func:`edge_sdk.training.train_local` (zero_grad, forward, cross-entropy,
    backward, SGD step, loss and accuracy read back).

    ``optimizer=True`` steps a ``torch.optim.SGD``, as ``train_local`` does. Creating the
    first one in a process imports dynamo (torch wraps ``add_param_group`` in
    ``torch._disable_dynamo``): 1.1 s of CPU on the 2-core test VM, which a quick profile
    cannot spare. ``optimizer=False`` calls ``torch.optim.sgd.sgd``, the function
    ``SGD.step`` runs, with the same arguments: the same arithmetic and memory, without
    ``SGD.step``'s own Python (about 0.1 ms a step on the test VM: 10 % of a 1 ms cnn1d step,
    nothing for larger ones). ``momentum_buffers``: the optimizer state.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, *, optimizer: bool = False,
                 lr: float = 1e-3, momentum: float = 0.9) -> None:
        out = model(example_input[:2] if example_input.shape[0] > 1 else example_input)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ProfilingError("a training step needs a model that returns (batch, classes) logits")
        self.model, self.example_input, self.lr, self.momentum = model, example_input, lr, momentum
        self.target = torch.randint(0, logits.shape[1], (example_input.shape[0],), generator=torch.Generator().manual_seed(0))
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.momentum_buffers: list[torch.Tensor | None] = [None] * len(self.params)
        self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=momentum) if optimizer else None
        model.zero_grad(set_to_none=True)

    def __call__(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            for param in self.params:
                param.grad = None
        out = self.model(self.example_input)
        loss = nn.functional.cross_entropy(out, self.target)
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
        else:
            self._sgd()
        float(loss.detach())
        int((out.detach().argmax(1) == self.target).sum())

    def _sgd(self) -> None:
        held = [i for i, param in enumerate(self.params) if param.grad is not None]
        buffers = [self.momentum_buffers[i] for i in held]
        with torch.no_grad():
            sgd([self.params[i] for i in held], [self.params[i].grad for i in held], buffers,  # type: ignore[misc]
                weight_decay=0.0, momentum=self.momentum, lr=self.lr, dampening=0.0, nesterov=False, maximize=False)
        for i, buffer in zip(held, buffers):
            self.momentum_buffers[i] = buffer
