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
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edge_sdk._io import atomic_write_bytes, check_writable
from edge_sdk.errors import ExportError, InvalidInputError, VerificationError
from edge_sdk.export import _ort
from edge_sdk.export._brevitas_ptq import (
    PtqConfig,
    brevitas_ptq,
    check_bits,
    check_supported_layers,
    output_step,
)
from edge_sdk.export._compact import compact_model
from edge_sdk.export._compat import brevitas_export_env, qonnx_ir_fix, require, QONNX_IR_VERSION
from edge_sdk.export._data import as_samples, check_model_accepts, float_logits, model_input_shape, split_eval
from edge_sdk.export._report import ExportReport
from edge_sdk.export._torch_onnx import capture_native_stderr, export_float_onnx
from edge_sdk.export.integer_check import check_integer_only

__all__ = ["to_qonnx", "to_qcdq", "finn_compatibility", "weight_sparsity"]

log = logging.getLogger(__name__)

MAX_BITS = {"qonnx": 16, "qcdq": 8}
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


def _prepare(fmt: str, model: nn.Module, calib: Any, path: Any, weight_bits: int, act_bits: int,
             input_bits: int, output_bits: int | None, eval_data: Any, qat_data: Any):
    max_bits = MAX_BITS[fmt]
    check_bits("weight_bits", weight_bits, 2, max_bits, fmt)
    check_bits("act_bits", act_bits, 2, max_bits, fmt)
    check_bits("input_bits", input_bits, 2, max_bits, fmt)
    if output_bits is not None:
        check_bits("output_bits", output_bits, 2, max_bits, fmt)
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


def _common_report(fmt, path, data, fp32_bytes, check, cfg, ref, ex_logits, eval_y,
                   sparsity, warnings_, extra) -> ExportReport:
    return ExportReport(
        format=fmt,
        path=str(path),
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
        sparsity=sparsity,
        warnings=warnings_,
        extra=extra,
    )


def _fp32_onnx_bytes(float_model: nn.Module, example: np.ndarray, tmp: str) -> int:
    fp32_path = os.path.join(tmp, "fp32.onnx")
    export_float_onnx(float_model, torch.from_numpy(example[:1]), fp32_path)
    return len(compact_model(onnx.load(fp32_path)).SerializeToString())


def to_qonnx(
    model: nn.Module,
    calib: Any,
    path: str | os.PathLike[str],
    *,
    weight_bits: int = 4,
    act_bits: int = 4,
    input_bits: int = 8,
    output_bits: int | None = 8,
    per_channel: bool = True,
    pow2_scales: bool = False,
    bias_correction: bool = True,
    eval_data: Any = None,
    qat_data: Any = None,
    qat_epochs: int = 0,
    qat_lr: float = 1e-3,
    verify_samples: int = 16,
    tolerance_steps: float = 1.0,
    opset: int = 13,
) -> ExportReport:
    """Brevitas PTQ of ``model`` at W``weight_bits``/A``act_bits`` and QONNX export to ``path``.

    Activations after ReLU use unsigned quantizers, all zero-points are 0, weight scales are
    per output channel (``per_channel``) or per tensor, optionally powers of two. The input is
    quantized to ``input_bits`` (signed); the logits are left at the last layer's accumulator
    scale unless ``output_bits`` is given. ``qat_data=(x, y)`` with ``qat_epochs > 0`` adds a
    short quantization-aware fine-tuning pass after calibration and bias correction.

    Verification: ``verify_samples`` evaluation samples run through the QONNX graph with
    qonnx's executor (its node models made IR version 10 so onnxruntime 1.31 accepts them)
    must match the Brevitas model within ``tolerance_steps`` output quantization steps (the
    two sum convolutions in different orders, so a value on a rounding tie can land one
    step apart inside the network), else
    :class:`VerificationError` is raised and nothing is written. Top-1 agreement and accuracy
    are the Brevitas model's (equal to the graph's, as verified) against the float model.
    """
    out_path, float_model, calib_x, eval_x, eval_y, qat = _prepare(
        "qonnx", model, calib, path, weight_bits, act_bits, input_bits, output_bits, eval_data, qat_data)
    require("qonnx.core.modelwrapper")
    cfg = PtqConfig(weight_bits, act_bits, input_bits, output_bits, per_channel, pow2_scales, bias_correction)
    warnings_: list[str] = []
    if eval_x is None:
        eval_x = calib_x
        warnings_.append("no eval_data given: parity measured on the calibration samples")
    sparsity = weight_sparsity(float_model)[0]
    ref = float_logits(float_model, eval_x)
    qmodel = brevitas_ptq(float_model, calib_x, cfg, qat_data=qat, qat_epochs=qat_epochs, qat_lr=qat_lr)
    bre = _brevitas_outputs(qmodel, eval_x)
    step = output_step(qmodel, eval_x)
    with tempfile.TemporaryDirectory(prefix="edge_sdk_qonnx_") as tmp:
        raw = os.path.join(tmp, "qonnx.onnx")
        _export("qonnx", qmodel, eval_x, raw, opset)
        model_proto = _cleanup_qonnx(raw)
        n_verify = min(int(verify_samples), eval_x.shape[0])
        got = _execute_qonnx(model_proto, eval_x[:n_verify])
        fp32_bytes = _fp32_onnx_bytes(float_model, eval_x, tmp)
    diff = float(np.max(np.abs(got - bre[:n_verify]))) if n_verify else 0.0
    steps = diff / step if step else None
    if steps is not None and steps > tolerance_steps + _STEP_EPS:
        raise VerificationError(
            f"QONNX graph differs from the Brevitas model by {diff:.4g} ({steps:.2f} output "
            f"quantization steps of {step:.4g}) on {n_verify} samples; allowed {tolerance_steps} "
            f"step(s); nothing written to {out_path}"
        )
    data = model_proto.SerializeToString()
    check = check_integer_only(model_proto)
    atomic_write_bytes(out_path, data)
    extra = {
        "verified_samples": n_verify,
        "qonnx_vs_brevitas_max_abs": diff,
        "exact_fraction": float(np.mean(got == bre[:n_verify])) if n_verify else 1.0,
        "output_step": step,
        "finn": finn_compatibility(model_proto),
        "input_bits": input_bits,
        "output_bits": output_bits,
        "pow2_scales": pow2_scales,
        "qat_epochs": qat_epochs if qat else 0,
        "note": "QONNX keeps Quant nodes on float tensors; FINN/hls4ml lower them to integer "
                "hardware, so integer_only is false for this format by construction",
    }
    report = _common_report("qonnx", out_path, data, fp32_bytes, check, cfg, ref, bre, eval_y,
                            sparsity, warnings_, extra)
    report.max_abs_error_steps = steps
    return report


def _cleanup_qonnx(path: str) -> onnx.ModelProto:
    modelwrapper = require("qonnx.core.modelwrapper")
    cleanup = require("qonnx.util.cleanup")
    with qonnx_ir_fix(), capture_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = cleanup.cleanup_model(modelwrapper.ModelWrapper(path))
    proto = wrapped.model
    proto.ir_version = min(proto.ir_version, QONNX_IR_VERSION)
    return proto


def _execute_qonnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    modelwrapper = require("qonnx.core.modelwrapper")
    onnx_exec = require("qonnx.core.onnx_exec")
    wrapped = modelwrapper.ModelWrapper(model)
    iname, oname = wrapped.graph.input[0].name, wrapped.graph.output[0].name
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
    *,
    weight_bits: int = 8,
    act_bits: int = 8,
    input_bits: int = 8,
    output_bits: int | None = 8,
    per_channel: bool = True,
    pow2_scales: bool = False,
    bias_correction: bool = True,
    eval_data: Any = None,
    qat_data: Any = None,
    qat_epochs: int = 0,
    qat_lr: float = 1e-3,
    tolerance_steps: float = 1.0,
    threads: int = 1,
    measure_latency: bool = True,
    opset: int = 13,
) -> ExportReport:
    """Brevitas PTQ (as :func:`to_qonnx`) and QCDQ export: QuantizeLinear -> Clip ->
    DequantizeLinear around float ops, at most 8 bits, runnable in onnxruntime. The logits
    are quantized to ``output_bits`` (8 by default) so that the comparison below is in steps
    of a real quantizer (onnxruntime's fused integer kernels round differently from Brevitas'
    float simulation by up to one step).

    Verified with onnxruntime against the Brevitas model on all evaluation samples (within
    ``tolerance_steps`` output steps, else :class:`VerificationError`, nothing written);
    latency is onnxruntime's, against the fp32 ONNX at the same ``threads``.
    """
    out_path, float_model, calib_x, eval_x, eval_y, qat = _prepare(
        "qcdq", model, calib, path, weight_bits, act_bits, input_bits, output_bits, eval_data, qat_data)
    cfg = PtqConfig(weight_bits, act_bits, input_bits, output_bits, per_channel, pow2_scales, bias_correction)
    warnings_: list[str] = []
    if eval_x is None:
        eval_x = calib_x
        warnings_.append("no eval_data given: parity measured on the calibration samples")
    sparsity = weight_sparsity(float_model)[0]
    ref = float_logits(float_model, eval_x)
    qmodel = brevitas_ptq(float_model, calib_x, cfg, qat_data=qat, qat_epochs=qat_epochs, qat_lr=qat_lr)
    bre = _brevitas_outputs(qmodel, eval_x)
    step = output_step(qmodel, eval_x)
    with tempfile.TemporaryDirectory(prefix="edge_sdk_qcdq_") as tmp:
        raw = os.path.join(tmp, "qcdq.onnx")
        _export("qcdq", qmodel, eval_x, raw, opset)
        proto = compact_model(onnx.load(raw))
        data = proto.SerializeToString()
        fp32_path = os.path.join(tmp, "fp32.onnx")
        export_float_onnx(float_model, torch.from_numpy(eval_x[:1]), fp32_path)
        fp32_data = compact_model(onnx.load(fp32_path)).SerializeToString()
    try:
        session = _ort.make_session(data, threads)
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(f"onnxruntime cannot load the QCDQ graph: {exc}") from exc
    got = _ort.run(session, eval_x)
    diff = float(np.max(np.abs(got - bre)))
    steps = diff / step if step else None
    if steps is not None and steps > tolerance_steps + _STEP_EPS:
        raise VerificationError(
            f"QCDQ graph in onnxruntime differs from the Brevitas model by {diff:.4g} "
            f"({steps:.2f} output steps of {step:.4g}); allowed {tolerance_steps}; nothing "
            f"written to {out_path}"
        )
    lat_q = lat_f = None
    if measure_latency:
        lat_q, lat_f = _ort.paired_latency_ms([session, _ort.make_session(fp32_data, threads)], eval_x[:1])
    check = check_integer_only(proto)
    atomic_write_bytes(out_path, data)
    extra = {
        "ort_vs_brevitas_max_abs": diff,
        "output_step": step,
        "input_bits": input_bits,
        "output_bits": output_bits,
        "pow2_scales": pow2_scales,
        "qat_epochs": qat_epochs if qat else 0,
        "note": "QCDQ is fake-quantized ONNX: float ops between DequantizeLinear and "
                "QuantizeLinear; onnxruntime fuses 8-bit patterns into integer kernels at load time",
    }
    report = _common_report("qcdq", out_path, data, len(fp32_data), check, cfg, ref, got, eval_y,
                            sparsity, warnings_, extra)
    report.max_abs_error_steps = steps
    report.latency_ms_int8, report.latency_ms_fp32, report.threads = lat_q, lat_f, threads
    return report
