"""The report checked against reality: a real local round at each profiled size.

For each size the report profiled, a HeteroFL plan at that ratio is made on the reference
model, its submodel trained with :func:`edge_sdk.training.train_local` for ``steps`` steps on
synthetic batches of the report's batch size, and the round's wall time compared with what
the report predicts: the cold step plus ``steps - 1`` warm steps of the mean latency (the
median where a report has no mean). The profile times the same submodel (the HeteroFL
extraction, :func:`edge_sdk.profiler.model_cost.sized_model`) at the same thread count.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from edge_sdk.errors import InvalidInputError
from edge_sdk.profiler.microbench import torch_threads
from edge_sdk.profiler.model_cost import STRATEGY
from edge_sdk.profiler.report import CapabilityReport, RoundCheck, SizeCost, Validation, size_label

DEFAULT_STEPS = 10
TOLERANCE = 0.15


def predicted_round_seconds(size: SizeCost, steps: int) -> float | None:
    """Seconds the report predicts for ``steps`` local training steps at ``size``."""
    lat = size.train_step_latency
    if lat is None:
        return None
    warm = lat.median_ms if lat.mean_ms is None else lat.mean_ms
    return (lat.cold_ms + (steps - 1) * warm) / 1e3


def validate_report(
    report: CapabilityReport,
    *,
    steps: int = DEFAULT_STEPS,
    tolerance: float = TOLERANCE,
    progress: Callable[[str], None] | None = None,
) -> Validation:
    """Train each profiled size for real and compare with the report's prediction."""
    from edge_sdk import submodel
    from edge_sdk.profiler.reporting import reference_model
    from edge_sdk.training import train_local

    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10_000:
        raise InvalidInputError(f"validation steps={steps!r} is not accepted; expected an integer from 1 to 10000")
    profile = report.model
    if profile is None:
        raise InvalidInputError("validation needs a model profile: drop --no-model")
    if report.device.estimated:
        raise InvalidInputError("validation runs on this device: it cannot check an estimated (--hw) report")
    model, shape = reference_model(profile.model, profile.input_shape)
    say = progress or (lambda _message: None)
    rounds = []
    # a process's first torch.optim optimizer imports dynamo (1.1 s): once per process, not per round
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with torch_threads(report.device.threads):
        for size in profile.sizes:
            predicted = predicted_round_seconds(size, steps)
            if predicted is None:
                continue
            say(f"validating: local round at size {size_label(size.ratio)}")
            plan = submodel.plan(STRATEGY, model, size.ratio)
            sub = plan.extract(model)
            data = _synthetic_batches(sub, profile.batch_size, shape, min(steps, 4))
            cpu, start = time.process_time(), time.perf_counter()
            train_local(sub, data, plan, steps=steps)
            measured = time.perf_counter() - start
            share = (time.process_time() - cpu) / max(measured * report.device.threads, 1e-9)
            rounds.append(RoundCheck(
                ratio=size.ratio, steps=steps, batch_size=profile.batch_size, predicted_s=round(predicted, 6),
                measured_s=round(measured, 6), error=round(measured / predicted - 1, 4),
                cpu_share=round(min(share, 4.0), 4),
            ))
    return Validation(
        strategy=STRATEGY,
        tolerance=tolerance,
        rounds=rounds,
        within_tolerance=bool(rounds) and all(abs(r.error) <= tolerance for r in rounds),
    )


def _synthetic_batches(model: torch.nn.Module, batch: int, shape: tuple[int, ...], count: int) -> list:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        classes = model.eval()(torch.zeros(1, *shape)).shape[1]
    model.train()
    return [
        (torch.randn(batch, *shape, generator=generator), torch.randint(0, classes, (batch,), generator=generator))
        for _ in range(count)
    ]
