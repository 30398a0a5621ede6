"""edge-sdk: model-heterogeneous federated learning for weak edge devices.

The public names are imported lazily so that ``import edge_sdk`` stays cheap on a device.
"""

from __future__ import annotations

from edge_sdk._lazy import lazy_exports

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
    "create_strategy": "edge_sdk.strategies",
    "strategy_names": "edge_sdk.strategies",
    "FederationSettings": "edge_sdk.settings",
}

# Subpackages reachable as attributes after a bare ``import edge_sdk``.
_SUBPACKAGES = ("models", "hw_profiles", "profiler", "clustering", "submodel", "aggregation", "export", "server_data",
                "strategies")

__all__ = ["__version__", *_LAZY, *_SUBPACKAGES]


__getattr__, __dir__ = lazy_exports("edge_sdk", _LAZY, globals(), _SUBPACKAGES)
