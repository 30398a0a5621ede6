"""edge-sdk: model-heterogeneous federated learning for weak edge devices.

The public names are imported lazily so that ``import edge_sdk`` stays cheap on a device.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "count_flops": "edge_sdk.profiler",
    "profile_device": "edge_sdk.profiler",
    "profile_model": "edge_sdk.profiler",
    "CapabilityReport": "edge_sdk.profiler",
    "DeviceCapability": "edge_sdk.profiler",
    "ModelProfile": "edge_sdk.profiler",
    "cluster_capabilities": "edge_sdk.clustering",
    "Clustering": "edge_sdk.clustering",
    "plan": "edge_sdk.submodel",
    "plan_fedra": "edge_sdk.submodel",
    "SubmodelPlan": "edge_sdk.submodel",
    "train_local": "edge_sdk.training",
    "evaluate": "edge_sdk.training",
    "Update": "edge_sdk.training",
    "aggregate": "edge_sdk.aggregation",
    "run_simulation": "edge_sdk.simulation",
    "SimulationConfig": "edge_sdk.simulation",
}

# Subpackages reachable as attributes after a bare ``import edge_sdk``.
_SUBPACKAGES = ("models", "hw_profiles", "profiler", "clustering", "submodel", "aggregation", "export", "server_data")

__all__ = ["__version__", *_LAZY, *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        value = importlib.import_module(f"edge_sdk.{name}")
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
