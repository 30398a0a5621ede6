"""Result types of the exporters: :class:`ExportReport`, :class:`IntegerOnlyReport`, :class:`FloatOp`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FloatOp", "IntegerOnlyReport", "ExportReport"]


@dataclass(frozen=True)
class FloatOp:
    """One node of an exported graph that computes on float tensors."""

    name: str
    op_type: str
    domain: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.op_type})"


@dataclass
class IntegerOnlyReport:
    """Outcome of :func:`edge_sdk.export.check_integer_only`.

    ``integer_only`` is true when no node other than the input's QuantizeLinear and the
    output's DequantizeLinear (and pure layout ops next to them, listed in ``boundary``)
    reads or writes a float tensor.
    """

    integer_only: bool
    float_ops: list[FloatOp]
    boundary: list[FloatOp]
    node_count: int
    op_counts: dict[str, int]
    style: str = "qoperator"  # qoperator | qdq, see check_integer_only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExportReport:
    """What an export produced and how closely it follows the float model.

    ``top1_agreement`` is the fraction of evaluation samples on which the exported graph and
    the float model predict the same class; ``accuracy_int`` / ``accuracy_float`` are filled
    only when labels were given. Latencies are onnxruntime medians of a batch-1 call with
    ``threads`` intra-op threads (``None`` when the format is not timed, e.g. QONNX).
    """

    format: str
    path: str
    integer_only: bool
    float_ops: list[str]
    file_bytes: int
    fp32_file_bytes: int
    top1_agreement: float
    max_abs_logit_error: float
    eval_samples: int
    accuracy_int: float | None = None
    accuracy_float: float | None = None
    latency_ms_int8: float | None = None
    latency_ms_fp32: float | None = None
    threads: int = 1
    weight_bits: int | None = None
    act_bits: int | None = None
    activation_type: str | None = None
    calibration_method: str | None = None
    per_channel: bool | None = None
    sparsity: float | None = None
    max_abs_error_steps: float | None = None
    flow: str | None = None  # the FPGA tool a QONNX file was made for (None: generic)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size_ratio(self) -> float:
        """Exported file size over the fp32 ONNX file size."""
        return self.file_bytes / self.fp32_file_bytes if self.fp32_file_bytes else float("nan")

    @property
    def latency_ratio(self) -> float | None:
        """Exported-graph latency over fp32 latency (same threads), when both were measured."""
        if self.latency_ms_int8 is None or not self.latency_ms_fp32:
            return None
        return self.latency_ms_int8 / self.latency_ms_fp32

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["size_ratio"] = self.size_ratio
        doc["latency_ratio"] = self.latency_ratio
        return doc

    def summary_rows(self) -> list[tuple[str, Any]]:
        """(field, value) pairs for a human-readable table."""
        rows: list[tuple[str, Any]] = [
            ("format", self.format),
            ("path", self.path),
            ("integer_only", self.integer_only),
            ("float ops", ", ".join(self.float_ops[:8]) + (" ..." if len(self.float_ops) > 8 else "")
             if self.float_ops else "none"),
            ("file bytes", self.file_bytes),
            ("fp32 ONNX bytes", self.fp32_file_bytes),
            ("size ratio", self.size_ratio),
        ]
        if self.weight_bits is not None:
            rows.append(("weight/act bits", f"W{self.weight_bits}A{self.act_bits}"))
        if self.format == "qonnx":
            rows.append(("made for", self.flow or "generic QONNX"))
        if self.extra.get("quant_format"):
            rows.append(("graph", self.extra["quant_format"]))
        if "batch_size" in self.extra:
            rows.append(("batch", self.extra["batch_size"] or "dynamic"))
        if self.activation_type is not None:
            rows.append(("activation type", self.activation_type))
        rows += [
            ("eval samples", self.eval_samples),
            ("top-1 agreement", self.top1_agreement),
            ("max abs logit error", self.max_abs_logit_error),
        ]
        if self.max_abs_error_steps is not None:
            rows.append(("max error (quant steps)", self.max_abs_error_steps))
        if self.accuracy_int is not None:
            rows += [("accuracy (exported)", self.accuracy_int), ("accuracy (float)", self.accuracy_float)]
        if self.latency_ms_int8 is not None:
            rows += [
                (f"latency ms (exported, {self.threads} thr)", self.latency_ms_int8),
                (f"latency ms (fp32, {self.threads} thr)", self.latency_ms_fp32),
                ("latency ratio", self.latency_ratio),
            ]
        if self.sparsity is not None:
            rows.append(("weight sparsity (quantized zeros)", self.sparsity))
        for w in self.warnings:
            rows.append(("warning", w))
        return rows
