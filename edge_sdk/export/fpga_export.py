"""Brevitas QONNX and QCDQ export for FPGA flows (FINN, hls4ml), verified numerically.

QONNX keeps quantization as ``Quant`` nodes (2 to 16 bits) and is what FINN and hls4ml read;
it is verified by running it with qonnx's own executor against the Brevitas model. QCDQ
(QuantizeLinear -> Clip -> DequantizeLinear, at most 8 bits) is standard ONNX and is
verified with onnxruntime.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edge_sdk._io import atomic_write_bytes, check_writable
from edge_sdk.errors import ExportError, InvalidInputError, VerificationError
from edge_sdk.export import _ort
from edge_sdk.export._brevitas_ptq import PtqConfig, brevitas_ptq, check_supported_layers, output_step
from edge_sdk.export._compact import compact_model
from edge_sdk.export._compat import brevitas_export_env, qonnx_ir_fix, require, QONNX_IR_VERSION
from edge_sdk.export._data import as_samples, check_model_accepts, float_logits, model_input_shape, split_eval
from edge_sdk.export._metadata import stamp_model
from edge_sdk.export._qonnx_flows import apply_flow
from edge_sdk.export._report import ExportReport
from edge_sdk.export._torch_onnx import capture_native_stderr, export_float_onnx
from edge_sdk.export.config import BrevitasExportConfig
from edge_sdk.export.integer_check import check_integer_only

__all__ = ["to_qonnx", "to_qcdq", "finn_compatibility", "weight_sparsity", "quantized_weight_sparsity"]

log = logging.getLogger(__name__)

_STEP_EPS = 1e-4  # float32 rounding of (difference / step) when the difference is whole steps


def weight_sparsity(model: nn.Module) -> tuple[float, int, int]:
    """(fraction of exactly-zero weights, zero count, total) over Conv and Linear weights."""
    zeros = total = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            w = module.weight.detach()
            zeros += int((w == 0).sum())
            total += w.numel()
    return (zeros / total if total else 0.0), zeros, total


def quantized_weight_sparsity(qmodel: nn.Module) -> tuple[float, int, int]:
    """(fraction of weights whose quantized value is 0, zero count, total) of a Brevitas model:
    at few bits, small weights round to zero and cost nothing where zeros are skipped."""
    zeros = total = 0
    with torch.no_grad():
        for module in qmodel.modules():
            if hasattr(module, "weight_quant") and hasattr(module, "quant_weight"):
                w = module.quant_weight().value.detach()
                zeros += int((w == 0).sum())
                total += w.numel()
    return (zeros / total if total else 0.0), zeros, total


def finn_compatibility(model: onnx.ModelProto) -> dict[str, Any]:
    """What FINN needs of a QONNX graph, checked on its ``Quant`` nodes.

    zero points all 0; the quantizer after every Relu unsigned; weight scales per-tensor or
    per-output-channel; whether every scale is a power of two; the bit widths used.
    """
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    quants = [n for n in g.node if n.op_type in ("Quant", "BipolarQuant")]
    zero_points_zero = True
    pow2 = True
    bits: set[int] = set()
    unsigned_after_relu = True
    weight_granularity: set[str] = set()
    for n in quants:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        scale = inits.get(n.input[1]) if len(n.input) > 1 else None
        if n.op_type == "Quant":
            zp = inits.get(n.input[2])
            if zp is None or np.any(zp != 0):
                zero_points_zero = False
            bw = inits.get(n.input[3])
            if bw is not None:
                bits.add(int(np.asarray(bw).reshape(-1)[0]))
        if scale is not None:
            s = np.asarray(scale, dtype=np.float64).reshape(-1)
            if not np.all(np.abs(np.log2(s) - np.round(np.log2(s))) < 1e-6):
                pow2 = False
            if n.input[0] in inits:  # a weight quantizer
                weight_granularity.add("per-tensor" if s.size == 1 else "per-channel")
        src = producer.get(n.input[0])
        if src is not None and src.op_type == "Relu" and int(attrs.get("signed", 1)) != 0:
            unsigned_after_relu = False
    return {
        "quant_nodes": len(quants),
        "zero_points_zero": zero_points_zero,
        "unsigned_after_relu": unsigned_after_relu,
        "weight_scales": sorted(weight_granularity),
        "power_of_two_scales": pow2,
        "bit_widths": sorted(bits),
    }


def _resolve(fmt: str, config: BrevitasExportConfig | None) -> tuple[BrevitasExportConfig, PtqConfig]:
    """``config`` with the format's default bits filled in, every bit width checked by the format."""
    from edge_sdk.export.formats import get_format

    if config is None:
        config = BrevitasExportConfig()
    elif not isinstance(config, BrevitasExportConfig):
        raise InvalidInputError(f"config is a {type(config).__name__}; expected a BrevitasExportConfig")
    form = get_format(fmt)
    if config.flow is not None and "flow" not in form.options:
        raise InvalidInputError(f"flow={config.flow!r} applies to QONNX (the FPGA tools read Quant nodes), not {fmt}")
    wb, ab = form.default_bits
    config = replace(config, weight_bits=wb if config.weight_bits is None else config.weight_bits,
                     act_bits=ab if config.act_bits is None else config.act_bits)
    for kind in ("weight", "act", "input", "output"):
        form.check_bits(kind, getattr(config, f"{kind}_bits"))
    ptq = PtqConfig(config.weight_bits, config.act_bits, config.input_bits, config.output_bits,
                    config.per_channel, config.pow2_scales, config.bias_correction,
                    bias_quant=config.bias_quant, requantize_pooled=config.requantize_pooled,
                    signed_residuals=config.signed_residuals)
    return config, ptq


def _prepare(fmt: str, model: nn.Module, calib: Any, path: Any, eval_data: Any, qat_data: Any):
    out_path = check_writable(path)
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model is a {type(model).__name__}; expected a torch.nn.Module")
    float_model = copy.deepcopy(model).float().cpu().eval()
    check_supported_layers(float_model, fmt)
    require("brevitas.graph.quantize")  # fail on a missing extra before any work
    shape = model_input_shape(float_model)
    calib_x = as_samples(calib, shape, "calibration")
    check_model_accepts(float_model, calib_x, "calibration")
    eval_x, eval_y = split_eval(eval_data, tuple(calib_x.shape[1:]))
    qat = None
    if qat_data is not None:
        qx, qy = split_eval(qat_data, tuple(calib_x.shape[1:]))
        if qy is None:
            raise InvalidInputError("qat_data must be (samples, labels); got samples without labels")
        qat = (qx, qy)
    return out_path, float_model, calib_x, eval_x, eval_y, qat


def _export(fmt: str, qmodel: nn.Module, example: np.ndarray, path: str, opset: int) -> None:
    brevitas_export = require("brevitas.export")
    fn = brevitas_export.export_qonnx if fmt == "qonnx" else brevitas_export.export_onnx_qcdq
    # a failed Brevitas export leaves the model in a bad state: export a deep copy
    module = copy.deepcopy(qmodel).eval()
    try:
        with brevitas_export_env(), capture_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(module, args=torch.from_numpy(example[:1]), export_path=path, dynamo=False,
               opset_version=opset, input_names=["input"], output_names=["logits"])
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"Brevitas {fmt} export failed: {first}") from exc


def _brevitas_outputs(qmodel: nn.Module, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float_logits(qmodel, x)


@dataclass
class _Quantized:
    """The float reference and the calibrated Brevitas model, which both formats export."""

    fmt: str
    config: BrevitasExportConfig
    ptq: PtqConfig
    out_path: Any
    float_model: nn.Module
    eval_x: np.ndarray
    eval_y: np.ndarray | None
    qat: bool
    ref: np.ndarray
    qmodel: nn.Module
    brevitas: np.ndarray
    step: float | None
    sparsity: float
    float_sparsity: float
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _quantize(fmt: str, model: nn.Module, calib: Any, path: Any, config: BrevitasExportConfig | None,
              eval_data: Any, qat_data: Any, metadata: Mapping[str, Any] | None,
              requires: tuple[str, ...] = ()) -> _Quantized:
    """Check every input, then Brevitas PTQ (and optional QAT) of a copy of ``model``."""
    config, ptq = _resolve(fmt, config)
    out_path, float_model, calib_x, eval_x, eval_y, qat = _prepare(fmt, model, calib, path, eval_data, qat_data)
    for module in requires:
        require(module)
    warnings_: list[str] = []
    if eval_x is None:
        eval_x = calib_x
        warnings_.append("no eval_data given: parity measured on the calibration samples")
    qmodel = brevitas_ptq(float_model, calib_x, ptq, qat_data=qat, qat_epochs=config.qat_epochs,
                          qat_lr=config.qat_lr)
    props = {**(metadata or {}), "format": fmt, "flow": config.flow, "weight_bits": config.weight_bits,
             "act_bits": config.act_bits, "input_bits": config.input_bits, "output_bits": config.output_bits,
             "per_channel": config.per_channel, "pow2_scales": config.pow2_scales, "bias_quant": config.bias_quant,
             "calibration": f"Brevitas PTQ, {calib_x.shape[0]} samples"
                            + (f", {config.qat_epochs} QAT epochs" if qat is not None and config.qat_epochs else "")}
    return _Quantized(fmt, config, ptq, out_path, float_model, eval_x, eval_y, qat is not None,
                      float_logits(float_model, eval_x), qmodel, _brevitas_outputs(qmodel, eval_x),
                      output_step(qmodel, eval_x), quantized_weight_sparsity(qmodel)[0],
                      weight_sparsity(float_model)[0], props, warnings_)


def _stamp(q: _Quantized, proto: onnx.ModelProto) -> onnx.ModelProto:
    """Producer, version, doc string and metadata of a Brevitas export (see _metadata)."""
    p = q.metadata
    made_for = f"for {p['flow']}" if p.get("flow") else "generic"
    doc = (f"edge-sdk {p['format']} ({made_for}) of {p.get('model') or 'a model'}: W{p['weight_bits']}A{p['act_bits']}, "
           f"input {p['input_bits']} bits, {'per-channel' if p['per_channel'] else 'per-tensor'}"
           f"{' power-of-two' if p['pow2_scales'] else ''} weight scales, {p['bias_quant']} biases, "
           f"calibrated by {p['calibration']}")
    return stamp_model(proto, doc, p)


def _report(q: _Quantized, data: bytes, fp32_bytes: int, check, ex_logits: np.ndarray, steps: float | None,
            extra: dict[str, Any]) -> ExportReport:
    ref, eval_y, cfg = q.ref, q.eval_y, q.config
    return ExportReport(
        format=q.fmt,
        path=str(q.out_path),
        integer_only=check.integer_only,
        float_ops=[str(op) for op in check.float_ops],
        file_bytes=len(data),
        fp32_file_bytes=fp32_bytes,
        top1_agreement=float(np.mean(ex_logits.argmax(1) == ref.argmax(1))),
        max_abs_logit_error=float(np.max(np.abs(ex_logits - ref))),
        eval_samples=int(ref.shape[0]),
        accuracy_int=None if eval_y is None else float(np.mean(ex_logits.argmax(1) == eval_y)),
        accuracy_float=None if eval_y is None else float(np.mean(ref.argmax(1) == eval_y)),
        weight_bits=cfg.weight_bits,
        act_bits=cfg.act_bits,
        per_channel=cfg.per_channel,
        sparsity=q.sparsity,
        max_abs_error_steps=steps,
        flow=cfg.flow,
        warnings=q.warnings,
        extra={**extra, "output_step": q.step, "input_bits": cfg.input_bits, "output_bits": cfg.output_bits,
               "pow2_scales": cfg.pow2_scales, "bias_quant": cfg.bias_quant,
               "qat_epochs": cfg.qat_epochs if q.qat else 0, "float_weight_sparsity": q.float_sparsity},
    )


def _steps(q: _Quantized, diff: float) -> float | None:
    return diff / q.step if q.step else None


def _too_far(q: _Quantized, steps: float | None) -> bool:
    return steps is not None and steps > q.config.tolerance_steps + _STEP_EPS


def _fp32_onnx(float_model: nn.Module, example: np.ndarray, tmp: str) -> bytes:
    fp32_path = os.path.join(tmp, "fp32.onnx")
    export_float_onnx(float_model, torch.from_numpy(example[:1]), fp32_path)
    return compact_model(onnx.load(fp32_path)).SerializeToString()


def to_qonnx(
    model: nn.Module,
    calib: Any,
    path: str | os.PathLike[str],
    config: BrevitasExportConfig | None = None,
    *,
    eval_data: Any = None,
    qat_data: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> ExportReport:
    """Brevitas PTQ of ``model`` at ``config``'s bits (default W4A4) and QONNX export to ``path``.

    Activations after ReLU use unsigned quantizers, all zero-points are 0, weight scales are
    per output channel (``config.per_channel``) or per tensor, optionally powers of two. The
    input is quantized to ``input_bits`` (signed); the logits are left at the last layer's
    accumulator scale when ``output_bits`` is ``None``. ``qat_data=(x, y)`` with
    ``config.qat_epochs > 0`` adds a short quantization-aware fine-tuning pass after
    calibration and bias correction. ``eval_data``: samples or ``(samples, labels)`` for the
    parity numbers (the calibration samples when ``None``, with a warning).

    Verification: ``config.verify_samples`` evaluation samples run through the QONNX graph with
    qonnx's executor (its node models made IR version 10 so onnxruntime 1.31 accepts them)
    must match the Brevitas model within ``config.tolerance_steps`` output quantization steps
    (the two sum convolutions in different orders, so a value on a rounding tie can land one
    step apart inside the network), else :class:`VerificationError` is raised and nothing is
    written. Top-1 agreement and accuracy are the Brevitas model's (equal to the graph's, as
    verified) against the float model.
    """
    q = _quantize("qonnx", model, calib, path, config, eval_data, qat_data, metadata,
                  requires=("qonnx.core.modelwrapper",))
    bre = q.brevitas
    with tempfile.TemporaryDirectory(prefix="edge_sdk_qonnx_") as tmp:
        raw = os.path.join(tmp, "qonnx.onnx")
        _export("qonnx", q.qmodel, q.eval_x, raw, q.config.opset)
        model_proto, flow_changes = apply_flow(_cleanup_qonnx(raw), q.config.flow)
        n_verify = min(int(q.config.verify_samples), q.eval_x.shape[0])
        got = _execute_qonnx(model_proto, q.eval_x[:n_verify])
        fp32_bytes = len(_fp32_onnx(q.float_model, q.eval_x, tmp))
    diff = float(np.max(np.abs(got - bre[:n_verify]))) if n_verify else 0.0
    steps = _steps(q, diff)
    if _too_far(q, steps):
        raise VerificationError(
            f"QONNX graph differs from the Brevitas model by {diff:.4g} ({steps:.2f} output "
            f"quantization steps of {q.step:.4g}) on {n_verify} samples; allowed {q.config.tolerance_steps} "
            f"step(s); nothing written to {q.out_path}"
        )
    model_proto = _stamp(q, model_proto)
    data = model_proto.SerializeToString()
    check = check_integer_only(model_proto)
    atomic_write_bytes(q.out_path, data)
    extra = {
        "verified_samples": n_verify,
        "qonnx_vs_brevitas_max_abs": diff,
        "exact_fraction": float(np.mean(got == bre[:n_verify])) if n_verify else 1.0,
        "finn": finn_compatibility(model_proto),
        "flow_changes": flow_changes,
        "input_shape": _input_shape(model_proto),
        "note": "QONNX keeps Quant nodes on float tensors; FINN/hls4ml lower them to integer "
                "hardware, so integer_only is false for this format by construction",
    }
    return _report(q, data, fp32_bytes, check, bre, steps, extra)


def _cleanup_qonnx(path: str) -> onnx.ModelProto:
    modelwrapper = require("qonnx.core.modelwrapper")
    cleanup = require("qonnx.util.cleanup")
    with qonnx_ir_fix(), capture_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = cleanup.cleanup_model(modelwrapper.ModelWrapper(path))
    proto = wrapped.model
    proto.ir_version = min(proto.ir_version, QONNX_IR_VERSION)
    return proto


def _input_shape(model: onnx.ModelProto) -> list[int]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value for d in dims]


def _execute_qonnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    modelwrapper = require("qonnx.core.modelwrapper")
    onnx_exec = require("qonnx.core.onnx_exec")
    wrapped = modelwrapper.ModelWrapper(model)
    iname, oname = wrapped.graph.input[0].name, wrapped.graph.output[0].name
    shape = _input_shape(model)
    if shape and x.shape[0] and int(np.prod(shape[1:])) == int(np.prod(x.shape[1:])):
        x = x.reshape(x.shape[0], *shape[1:])  # a FINN graph takes 1-d signals as (C, L, 1)
    outs = []
    with qonnx_ir_fix(), capture_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(x.shape[0]):
            try:
                result = onnx_exec.execute_onnx(wrapped, {iname: x[i : i + 1]})
            except Exception as exc:  # noqa: BLE001
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise VerificationError(f"qonnx could not execute the exported graph: {first}") from exc
            outs.append(np.asarray(result[oname], dtype=np.float32).reshape(1, -1))
    return np.concatenate(outs, axis=0) if outs else np.zeros((0, 0), np.float32)


def to_qcdq(
    model: nn.Module,
    calib: Any,
    path: str | os.PathLike[str],
    config: BrevitasExportConfig | None = None,
    *,
    eval_data: Any = None,
    qat_data: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> ExportReport:
    """Brevitas PTQ (as :func:`to_qonnx`, default W8A8) and QCDQ export: QuantizeLinear ->
    Clip -> DequantizeLinear around float ops, at most 8 bits, runnable in onnxruntime. The
    logits are quantized to ``config.output_bits`` (8 by default) so that the comparison
    below is in steps of a real quantizer (onnxruntime's fused integer kernels round
    differently from Brevitas' float simulation by up to one step).

    Verified with onnxruntime against the Brevitas model on all evaluation samples (within
    ``config.tolerance_steps`` output steps, else :class:`VerificationError`, nothing
    written); latency (``config.measure_latency``) is onnxruntime's, against the fp32 ONNX at
    the same ``config.threads``.
    """
    q = _quantize("qcdq", model, calib, path, config, eval_data, qat_data, metadata)
    threads = q.config.threads
    with tempfile.TemporaryDirectory(prefix="edge_sdk_qcdq_") as tmp:
        raw = os.path.join(tmp, "qcdq.onnx")
        _export("qcdq", q.qmodel, q.eval_x, raw, q.config.opset)
        proto = _stamp(q, compact_model(onnx.load(raw)))
        data = proto.SerializeToString()
        fp32_data = _fp32_onnx(q.float_model, q.eval_x, tmp)
    try:
        session = _ort.make_session(data, threads)
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(f"onnxruntime cannot load the QCDQ graph: {exc}") from exc
    got = _ort.run(session, q.eval_x)
    diff = float(np.max(np.abs(got - q.brevitas)))
    steps = _steps(q, diff)
    if _too_far(q, steps):
        raise VerificationError(
            f"QCDQ graph in onnxruntime differs from the Brevitas model by {diff:.4g} "
            f"({steps:.2f} output steps of {q.step:.4g}); allowed {q.config.tolerance_steps}; nothing "
            f"written to {q.out_path}"
        )
    lat_q = lat_f = None
    if q.config.measure_latency:
        lat_q, lat_f = _ort.paired_latency_ms([session, _ort.make_session(fp32_data, threads)], q.eval_x[:1])
    check = check_integer_only(proto)
    atomic_write_bytes(q.out_path, data)
    extra = {
        "ort_vs_brevitas_max_abs": diff,
        "note": "QCDQ is fake-quantized ONNX: float ops between DequantizeLinear and "
                "QuantizeLinear; onnxruntime fuses 8-bit patterns into integer kernels at load time",
    }
    report = _report(q, data, len(fp32_data), check, got, steps, extra)
    report.latency_ms_int8, report.latency_ms_fp32, report.threads = lat_q, lat_f, threads
    return report
