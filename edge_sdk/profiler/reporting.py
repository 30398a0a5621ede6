"""``build_report``: device + model profile + capacity -> ``CapabilityReport``."""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import uuid
from pathlib import Path
from typing import Callable, Sequence

import torch

from edge_sdk.errors import InvalidInputError
from edge_sdk.profiler.budget import Budget
from edge_sdk.profiler.capacity import compute_capacity
from edge_sdk.profiler.device import check_threads, profile_device
from edge_sdk.profiler.estimate import (
    estimated_device,
    estimated_model_profile,
    kernel_efficiencies,
    local_peak_gflops,
    with_efficiency,
)
from edge_sdk.profiler.microbench import matmul_gflops
from edge_sdk.profiler.model_cost import DEFAULT_RATIOS, profile_model
from edge_sdk.profiler.report import CapabilityReport, MeasurementRun
from edge_sdk.profiler.sanity import sanity_warnings
from edge_sdk.profiler.system import clock_mhz, cpu_flags, effective_cpu_count, read_system_info

DEFAULT_MODEL = "resnet18"
DEFAULT_BATCH = 32
QUICK_BATCH = 8
MAX_BATCH = 4096
QUICK_DEADLINE = 11.0  # seconds for the whole `--quick` command, start-up to exit
FULL_DEADLINE = 120.0
MODEL_SHARE = 0.6  # share of the deadline kept for the model profile after the device's


def device_id(*, estimated: bool = False) -> str:
    """An anonymous, stable id for this device: a salted hash of the OS machine id (nothing
    about the device can be read back from it). Random for estimated reports, and where the
    OS has no machine id."""
    if not estimated:
        for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            try:
                machine = Path(path).read_text().strip()
            except OSError:
                continue
            if machine:
                return hashlib.sha256(f"edge-sdk:{machine}".encode()).hexdigest()[:16]
    return uuid.uuid4().hex[:16]


def reference_model(name: str, input_shape: Sequence[int] | None) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """A reference model by name, adapted to a per-sample ``input_shape`` when one is given."""
    from edge_sdk import models

    spec = models.spec(name)  # UnknownNameError lists the valid names
    if input_shape is None or tuple(input_shape) == tuple(spec.input_shape):
        return models.create(name), tuple(spec.input_shape)
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != len(spec.input_shape):
        raise InvalidInputError(
            f"--input-shape {','.join(map(str, shape))} has {len(shape)} dimensions; model {name} takes "
            f"{len(spec.input_shape)} (e.g. {','.join(map(str, spec.input_shape))})"
        )
    options: dict[str, int] = {"in_channels": shape[0]}
    if len(shape) == 3:
        if shape[1] != shape[2]:
            raise InvalidInputError(f"--input-shape: model {name} takes square images, got {shape[1]}x{shape[2]}")
        options["img_size"] = shape[1]
    else:
        options["length"] = shape[1]
    model = models.create(name, **options)
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, *shape))
    except RuntimeError as exc:
        raise InvalidInputError(f"--input-shape {','.join(map(str, shape))} does not fit model {name}: {exc}") from None
    return model, shape


def build_report(
    *,
    model: str | None = DEFAULT_MODEL,
    input_shape: Sequence[int] | None = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    batch_size: int | None = None,
    budget_ms: float | None = None,
    budget_mb: float | None = None,
    threads: int | None = None,
    quick: bool = False,
    hw: str | None = None,
    progress: Callable[[str], None] | None = None,
    deadline: float | None = None,
    started: float | None = None,
) -> CapabilityReport:
    """Profile this device (or estimate a device of hardware profile ``hw``) and the reference
    model ``model`` (None: device only) and return the capability report.

    ``deadline``: seconds the whole profile may take, counted from ``started`` (a
    ``time.monotonic()`` value, default now; the CLI passes its process start, and then a
    share of the start-up already spent is kept for printing and exit, see
    :meth:`Budget.for_command`); default :data:`QUICK_DEADLINE` with ``quick``, else
    :data:`FULL_DEADLINE`. On a busy device the measurements shrink to meet it, and the
    report says what was cut (``run``)."""
    batch = batch_size or (QUICK_BATCH if quick else DEFAULT_BATCH)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise InvalidInputError(f"batch size {batch!r} is not accepted; expected an integer from 1 to {MAX_BATCH}")
    check_threads(threads, effective_cpu_count())
    for label, value in (("budget_ms", budget_ms), ("budget_mb", budget_mb), ("deadline", deadline)):
        if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
            raise InvalidInputError(f"{label} must be a positive finite number, got {value!r}")
    if deadline is None:
        deadline = QUICK_DEADLINE if quick else FULL_DEADLINE
    budget = Budget(deadline) if started is None else Budget.for_command(deadline, started)
    net = shape = None
    if model is not None:
        net, shape = reference_model(model, input_shape)
    efficiency = None
    if hw is not None:
        from edge_sdk import hw_profiles

        device = estimated_device(hw_profiles.load(hw))
        local = _local_efficiency(progress)
        if local is not None:
            device = with_efficiency(device, local)
    else:
        keep = 0.0 if net is None else deadline * MODEL_SHARE
        device = profile_device(quick=quick, threads=threads, progress=progress, budget=budget, keep_seconds=keep)
    model_profile = None
    if net is not None and shape is not None:
        example = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
        model_profile = profile_model(
            net,
            example,
            ratios=ratios,
            threads=threads or (effective_cpu_count() if hw else device.threads),
            quick=quick,
            name=model,
            progress=progress,
            budget=budget,
        )
        if hw is not None:
            peak = local_peak_gflops(effective_cpu_count(), cpu_flags(), read_system_info().cpu_model, clock_mhz())
            if peak is not None:
                used = min(threads or effective_cpu_count(), effective_cpu_count())
                efficiency = kernel_efficiencies(model_profile, peak * used / effective_cpu_count())
            model_profile = estimated_model_profile(model_profile, device, efficiency)
    report = CapabilityReport(
        device_id=device_id(estimated=hw is not None),
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        device=device,
        capacity=compute_capacity(device, model_profile, budget_ms=budget_ms, budget_mb=budget_mb),
        model=model_profile,
    )
    report.run = MeasurementRun(
        quick=quick,
        seconds=round(budget.elapsed(), 2),
        deadline_seconds=float(deadline),
        cut_short=list(budget.cut_short),
        confidence=_confidence(report, budget),
    )
    report.warnings = sanity_warnings(report)
    return report


def _confidence(report: CapabilityReport, budget: Budget) -> str:
    """``low`` when measurements were cut short, ``medium`` when the device was contended or
    a rate unstable, ``high`` otherwise (estimated reports: ``medium``, never measured)."""
    if budget.cut_short:
        return "low"
    c = report.device.contention
    if report.device.estimated or (c is not None and c.verdict != "clear"):
        return "medium"
    return "high"


def _local_efficiency(progress: Callable[[str], None] | None) -> tuple[float, float] | None:
    """(this machine's 1-thread fp32 matmul GFLOP/s, its per-core peak), or None when the
    peak is unknown here."""
    info = read_system_info()
    peak = local_peak_gflops(1, cpu_flags(), info.cpu_model, clock_mhz())
    if peak is None:
        return None
    if progress:
        progress("measuring this machine's kernel efficiency")
    return matmul_gflops(1, seconds=0.3).value, peak
