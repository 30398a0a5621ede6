"""Device capability and model cost -> ``CapabilityReport``.

``profile_device`` measures the device, ``profile_model`` a model's cost at several
submodel sizes, ``count_flops`` counts FLOPs, and ``build_report`` puts them together with
the device's capacity into the versioned report a device sends to the server.
"""

from edge_sdk.profiler.capacity import capacity_score, compute_capacity
from edge_sdk.profiler.device import profile_device
from edge_sdk.profiler.flops import FlopBreakdown, count_flops, flop_breakdown
from edge_sdk.profiler.model_cost import DEFAULT_RATIOS, profile_model, sized_model
from edge_sdk.profiler.report import (
    SCHEMA_VERSION,
    Capacity,
    CapabilityReport,
    DeviceCapability,
    LatencyStats,
    LayerCost,
    ModelProfile,
    SizeCost,
)
from edge_sdk.profiler.reporting import build_report, device_id

__all__ = [
    "DEFAULT_RATIOS",
    "SCHEMA_VERSION",
    "Capacity",
    "CapabilityReport",
    "DeviceCapability",
    "FlopBreakdown",
    "LatencyStats",
    "LayerCost",
    "ModelProfile",
    "SizeCost",
    "build_report",
    "capacity_score",
    "compute_capacity",
    "count_flops",
    "device_id",
    "flop_breakdown",
    "profile_device",
    "profile_model",
    "sized_model",
]
