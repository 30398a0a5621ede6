"""``build_report``: device + model profile + capacity -> ``CapabilityReport``."""

from __future__ import annotations

import datetime as _dt
import hashlib
import uuid
from pathlib import Path
from typing import Callable, Sequence

import torch

from edge_sdk.errors import InvalidInputError
from edge_sdk.profiler.capacity import compute_capacity
from edge_sdk.profiler.device import profile_device
from edge_sdk.profiler.estimate import estimated_device, estimated_model_profile
from edge_sdk.profiler.model_cost import DEFAULT_RATIOS, profile_model
from edge_sdk.profiler.report import CapabilityReport

DEFAULT_MODEL = "resnet18"
DEFAULT_BATCH = 32
QUICK_BATCH = 8


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
) -> CapabilityReport:
    """Profile this device (or estimate a device of hardware profile ``hw``) and the reference
    model ``model`` (None: device only) and return the capability report."""
    batch = batch_size or (QUICK_BATCH if quick else DEFAULT_BATCH)
    if batch < 1:
        raise InvalidInputError(f"batch size must be a positive integer, got {batch}")
    if threads is not None and threads < 1:
        raise InvalidInputError(f"threads must be a positive integer, got {threads}")
    for label, value in (("budget_ms", budget_ms), ("budget_mb", budget_mb)):
        if value is not None and not value > 0:
            raise InvalidInputError(f"{label} must be a positive number, got {value!r}")
    net = shape = None
    if model is not None:
        net, shape = reference_model(model, input_shape)
    if hw is not None:
        from edge_sdk import hw_profiles

        device = estimated_device(hw_profiles.load(hw))
    else:
        device = profile_device(quick=quick, threads=threads, progress=progress)
    model_profile = None
    if net is not None and shape is not None:
        example = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
        model_profile = profile_model(
            net,
            example,
            ratios=ratios,
            threads=threads or (None if hw else device.threads),
            quick=quick,
            name=model,
            measure_latency=hw is None,
            progress=progress,
        )
        if hw is not None:
            model_profile = estimated_model_profile(model_profile, device)
    return CapabilityReport(
        device_id=device_id(estimated=hw is not None),
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        device=device,
        capacity=compute_capacity(device, model_profile, budget_ms=budget_ms, budget_mb=budget_mb),
        model=model_profile,
    )
