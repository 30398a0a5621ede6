"""The settings of a Brevitas QONNX / QCDQ export as one object (cf. onnxruntime's
``StaticQuantConfig``), so that callers pass, store and vary one value instead of sixteen
keywords. Data (calibration, evaluation and fine-tuning samples) stays out of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BrevitasExportConfig"]


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
