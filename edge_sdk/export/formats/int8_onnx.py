"""``int8-onnx``: integer-only ONNX (onnxruntime static quantization) for CPUs: the QOperator
graph for onnxruntime (default) or the QDQ graph of standard ops for OpenVINO and others."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from edge_sdk.export.formats._base import ExportFormat, FitResult
from edge_sdk.export.formats._registry import register_format

if TYPE_CHECKING:
    from torch import nn

    from edge_sdk.export._report import ExportReport


@register_format
class Int8Onnx(ExportFormat):
    """int8 weights and int8/uint8 activations tuned for the target's CPU (or this host's)."""

    name = "int8-onnx"
    description = "integer-only ONNX for onnxruntime on CPUs"
    suffix = ".int8.onnx"
    weight_range = (8, 8)
    act_range = (8, 8)
    default_bits = (8, 8)
    options = ("calibration_method", "require_integer_only", "activation_type", "per_channel", "opset",
               "batch_size", "reduce_range", "pad_stem", "layout_rewrites", "quant_format", "metadata")

    def write(self, model: nn.Module, calib: Any, path: str | os.PathLike[str], fit: FitResult, *,
              eval_data: Any, threads: int, measure_latency: bool, options: dict[str, Any]) -> ExportReport:
        from edge_sdk.export.int_onnx import to_int_onnx

        return to_int_onnx(model, calib, path, eval_data=eval_data, target=fit.profile, threads=threads,
                           measure_latency=measure_latency, **options)
