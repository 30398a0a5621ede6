"""The settings of a Brevitas QONNX / QCDQ export as one object (cf. onnxruntime's
``StaticQuantConfig``), so that callers pass, store and vary one value instead of sixteen
keywords. Data (calibration, evaluation and fine-tuning samples) stays out of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edge_sdk.errors import InvalidInputError

__all__ = ["BrevitasExportConfig", "FLOWS", "BIAS_QUANTS"]

BIAS_QUANTS = ("int32", "float")
# what each FPGA tool takes, measured with it (see the field notes in the architecture doc):
# hls4ml 1.3.0 fails on per-channel weight scales with a 32-bit bias Quant and converts
# per-tensor power-of-two scales (their products are the bias scales it absorbs); FINN's
# pinned qonnx folds a 32-bit bias Quant into wrong outputs, so its biases stay float (they
# streamline into thresholds) and its Quant parameters become shape (1,) (see _qonnx_flows).
# Neither gets a requantizer after average pooling: FINN takes no unsigned Quant that does
# not follow a ReLU, and hls4ml's requantizer of the pooled values differed from qonnx's
# (resnet8: 0.24 at that node, 137 output steps); without it hls4ml is within one step.
# FINN streams a residual Add (AddStreams) only when both inputs have one integer type, so
# its identity shortcuts get a signed requantizer of act_bits + 1 at the shared scale.
FLOWS: dict[str, dict[str, Any]] = {
    "hls4ml": {"per_channel": False, "pow2_scales": True, "bias_quant": "int32", "requantize_pooled": False},
    "finn": {"per_channel": True, "pow2_scales": False, "bias_quant": "float", "requantize_pooled": False,
             "signed_residuals": True},
}


@dataclass(frozen=True)
class BrevitasExportConfig:
    """How :func:`~edge_sdk.export.to_qonnx` and :func:`~edge_sdk.export.to_qcdq` quantize,
    export and verify.

    ``weight_bits`` / ``act_bits``: ``None`` takes the format's default (QONNX W4A4, QCDQ
    W8A8, see :mod:`edge_sdk.export.formats`). ``input_bits``: the signed input quantizer.
    ``output_bits``: the logits' quantizer; ``None`` leaves them at the last layer's
    accumulator scale. ``per_channel``: per-output-channel weight scales (else per tensor);
    ``pow2_scales``: power-of-two scales (Brevitas fixed-point quantizers). ``qat_epochs`` /
    ``qat_lr``: a short quantization-aware fine-tuning pass when ``qat_data`` is given.
    ``verify_samples``: QONNX samples run through qonnx's executor (QCDQ verifies every
    evaluation sample); ``tolerance_steps``: allowed difference in output quantization steps.
    ``threads`` / ``measure_latency``: QCDQ's onnxruntime latency. ``opset``: ONNX opset.
    ``bias_quant``: ``int32`` (a 32-bit bias Quant at input x weight scale) or ``float``
    biases. ``flow``: ``None`` for generic QONNX, or the FPGA tool the graph is made for
    (``finn`` / ``hls4ml``, see :data:`FLOWS` and :meth:`for_flow`), which also selects that
    tool's graph clean-up after export. ``requantize_pooled``: an unsigned requantizer after
    average pooling of ReLU outputs (``False``: the pooled sums feed the next layer, which
    FINN streamlines; it takes no unsigned quantizer that does not follow a ReLU).
    ``signed_residuals``: where a residual Add joins a ReLU's unsigned output (an identity
    shortcut) with a signed requantizer of the same scale, both inputs become signed at
    ``act_bits + 1`` bits and that scale (exact for the shortcut): FINN's AddStreams takes
    two inputs of one integer type.
    """

    weight_bits: int | None = None
    act_bits: int | None = None
    input_bits: int = 8
    output_bits: int | None = 8
    per_channel: bool = True
    pow2_scales: bool = False
    bias_correction: bool = True
    qat_epochs: int = 0
    qat_lr: float = 1e-3
    verify_samples: int = 16
    tolerance_steps: float = 1.0
    threads: int = 1
    measure_latency: bool = True
    opset: int = 13
    bias_quant: str = "int32"
    requantize_pooled: bool = True
    signed_residuals: bool = False
    flow: str | None = None

    def __post_init__(self) -> None:
        if self.flow is not None and self.flow not in FLOWS:
            raise InvalidInputError(f"flow={self.flow!r} is not accepted; expected None or one of {', '.join(FLOWS)}")
        if self.bias_quant not in BIAS_QUANTS:
            raise InvalidInputError(f"bias_quant={self.bias_quant!r} is not accepted; expected one of "
                                    f"{', '.join(BIAS_QUANTS)}")

    @classmethod
    def for_flow(cls, flow: str | None, **settings: Any) -> BrevitasExportConfig:
        """The preset of ``flow`` (generic defaults for ``None``), then ``settings`` over it."""
        if flow is not None and flow not in FLOWS:
            raise InvalidInputError(f"flow={flow!r} is not accepted; expected None or one of {', '.join(FLOWS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise InvalidInputError(f"BrevitasExportConfig does not take {', '.join(unknown)}")
        preset = FLOWS.get(flow, {}) if flow else {}
        return replace(cls(flow=flow), **{**preset, **settings})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
