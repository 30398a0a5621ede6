"""Export: integer-only ONNX for CPUs, Brevitas QONNX / QCDQ for FPGAs, FPGA estimates.

Names load lazily so that ``import edge_sdk.export`` does not import onnxruntime, Brevitas
or qonnx until an exporter is called.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "to_int_onnx": "edge_sdk.export.int_onnx",
    "check_integer_only": "edge_sdk.export.integer_check",
    "to_qonnx": "edge_sdk.export.fpga_export",
    "to_qcdq": "edge_sdk.export.fpga_export",
    "finn_compatibility": "edge_sdk.export.fpga_export",
    "weight_sparsity": "edge_sdk.export.fpga_export",
    "estimate_fpga": "edge_sdk.export.fpga_estimate",
    "save_checkpoint": "edge_sdk.export.checkpoint",
    "load_checkpoint": "edge_sdk.export.checkpoint",
    "FpgaEstimate": "edge_sdk.export.fpga_estimate",
    "ExportReport": "edge_sdk.export._report",
    "IntegerOnlyReport": "edge_sdk.export._report",
    "FloatOp": "edge_sdk.export._report",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_sdk.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
