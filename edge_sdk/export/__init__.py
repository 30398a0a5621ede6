"""Export: integer-only ONNX for CPUs, Brevitas QONNX / QCDQ for FPGAs, FPGA estimates.

Formats are registered objects (:mod:`edge_sdk.export.formats`): ``get_format(name).fit(...)``
chooses bits for a target, ``.export(...)`` writes; ``to_int_onnx`` / ``to_qonnx`` /
``to_qcdq`` are the exporters they call.

Names load lazily so that ``import edge_sdk.export`` does not import onnxruntime, Brevitas
or qonnx until an exporter is called.
"""

from __future__ import annotations

from edge_sdk._lazy import lazy_exports

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
    "BrevitasExportConfig": "edge_sdk.export.config",
    "ExportFormat": "edge_sdk.export.formats",
    "FitResult": "edge_sdk.export.formats",
    "register_format": "edge_sdk.export.formats",
    "format_names": "edge_sdk.export.formats",
    "get_format": "edge_sdk.export.formats",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports("edge_sdk.export", _LAZY, globals())
