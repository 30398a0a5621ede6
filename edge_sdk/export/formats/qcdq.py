"""``qcdq``: Brevitas QuantizeLinear -> Clip -> DequantizeLinear (at most 8 bits), standard
ONNX that onnxruntime (and OpenVINO) run."""

from __future__ import annotations

from edge_sdk.export.formats._brevitas import BrevitasFormat
from edge_sdk.export.formats._registry import register_format


@register_format
class Qcdq(BrevitasFormat):
    """Verified with onnxruntime against the Brevitas model; FPGA targets fit a budget."""

    name = "qcdq"
    description = "Brevitas QCDQ for onnxruntime / OpenVINO"
    suffix = ".qcdq.onnx"
    weight_range = (2, 8)
    act_range = (2, 8)
    default_bits = (8, 8)
    exporter = "to_qcdq"
    options = tuple(o for o in BrevitasFormat.options if o != "flow")  # flows are QONNX presets
