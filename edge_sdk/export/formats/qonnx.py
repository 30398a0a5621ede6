"""``qonnx``: Brevitas QONNX (``Quant`` nodes, 2 to 16 bits); with ``flow="finn"`` or
``flow="hls4ml"`` the graph that tool takes as it is (:data:`edge_sdk.export.config.FLOWS`)."""

from __future__ import annotations

from edge_sdk.export.formats._brevitas import BrevitasFormat
from edge_sdk.export.formats._registry import register_format


@register_format
class Qonnx(BrevitasFormat):
    """Verified with qonnx's executor against the Brevitas model; FPGA targets fit a budget."""

    name = "qonnx"
    description = "Brevitas QONNX for FINN / hls4ml"
    suffix = ".qonnx.onnx"
    weight_range = (2, 16)
    act_range = (2, 16)
    default_bits = (4, 4)
    exporter = "to_qonnx"
    flows = ("finn", "hls4ml")  # presets of BrevitasExportConfig.for_flow, chosen by the option "flow"
