"""Integer-only ONNX for CPUs: torch -> ONNX -> onnxruntime static quantization (QOperator or QDQ)."""

from __future__ import annotations

import copy
from collections import Counter
import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from edge_sdk._io import atomic_write_bytes, check_writable
from edge_sdk.errors import ExportError, InvalidInputError, VerificationError
from edge_sdk.export import _ort
from edge_sdk.export._data import as_samples, check_model_accepts, float_logits, model_input_shape, split_eval
from edge_sdk.export._compact import compact_model
from edge_sdk.export._input_quant import quantize_input_first
from edge_sdk.export._metadata import stamp_model
from edge_sdk.export._onnx_rewrite import pad_stem_channels, rewrite_for_ort_layout, rewrite_for_quantization
from edge_sdk.export._report import ExportReport
from edge_sdk.export._target import cpu_target, load_profile
from edge_sdk.export._torch_onnx import INPUT_NAME, capture_native_stderr, export_float_onnx
from edge_sdk.export.integer_check import check_integer_only

__all__ = ["to_int_onnx", "ACTIVATION_TYPES", "CALIBRATION_METHODS", "QUANT_FORMATS"]

log = logging.getLogger(__name__)

ACTIVATION_TYPES = ("uint8", "int8")
# both graphs are called through a pre-bound IOBinding (see edge_sdk.export._ort.LATENCY_METHODS)
LATENCY_METHOD = "iobinding"
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# qoperator: integer operators (QLinearConv, QGemm, QLinearAdd ... some com.microsoft), the
# fastest graph on onnxruntime; qdq: QuantizeLinear -> DequantizeLinear around standard ops,
# which OpenVINO and other runtimes read (onnxruntime fuses it at load time)
QUANT_FORMATS = ("qoperator", "qdq")


class _Reader:
    """onnxruntime CalibrationDataReader over an array of samples, ``batch`` at a time."""

    def __init__(self, samples: np.ndarray, batch: int) -> None:
        self.samples = samples
        self.batch = batch
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= self.samples.shape[0]:
            return None
        chunk = self.samples[self.pos : self.pos + self.batch]
        self.pos += self.batch
        if chunk.shape[0] < self.batch:  # fixed-batch graph: pad with the last sample
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - chunk.shape[0], 0)])
        return {INPUT_NAME: chunk}

    def rewind(self) -> None:
        self.pos = 0



class _DropOrtQdqAdvice(logging.Filter):
    """onnxruntime advises QDQ for int8/int8 "on x64" through the root logger on every Arm
    export; int8/int8 QOperator is what an Arm target wants, so the advice is noise there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Please use QuantFormat.QDQ" not in record.getMessage()

def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInputError(f"{name}={value!r} is not accepted; expected one of {', '.join(choices)}")
    return value


def prepare_float_model(model: nn.Module) -> nn.Module:
    """A detached eval-mode float32 CPU copy (the caller's model is never changed)."""
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model is a {type(model).__name__}; expected a torch.nn.Module")
    return copy.deepcopy(model).float().cpu().eval()


def to_int_onnx(
    model: nn.Module,
    calib: Any,
    path: str | os.PathLike[str],
    *,
    activation_type: str | None = None,
    calibration_method: str = "minmax",
    per_channel: bool = True,
    eval_data: Any = None,
    opset: int = 17,
    target: Any = None,
    batch_size: int | None = 1,
    reduce_range: bool | None = None,
    threads: int = 1,
    require_integer_only: bool = False,
    measure_latency: bool = True,
    pad_stem: bool = True,
    layout_rewrites: bool | None = None,
    quant_format: str = "qoperator",
    metadata: Mapping[str, Any] | None = None,
) -> ExportReport:
    """Export ``model`` as an integer-only ONNX graph calibrated on ``calib`` and write ``path``.

    Steps: torch -> float ONNX (TorchScript exporter, ``dynamo=False``), onnxruntime
    pre-processing (shape inference, constant folding), exact rewrites that let the quantizer
    cover token BatchNorm and activation Gathers, then ``quantize_static`` in ``quant_format``:
    ``qoperator`` (QLinearConv, QLinearMatMul, and com.microsoft QGemm, QLinearAdd ..., the
    faster graph on onnxruntime) or ``qdq`` (standard ops between QuantizeLinear and
    DequantizeLinear, what OpenVINO reads); int8 weights (per output channel when
    ``per_channel``), ``activation_type`` activations: ``None`` picks uint8 for an x86 target
    (u8 x s8 kernels, fast with VNNI) and int8 for ARM; the target is ``target`` (a hardware
    profile or its name) or this host. ``reduce_range=None`` uses 7-bit weights only on x86
    without an int8 dot-product instruction. ``pad_stem`` zero-pads a first convolution with
    fewer than 4 input channels to 4 (exact; onnxruntime's int8 kernels are slow on 1-3
    channels). ``layout_rewrites`` applies two exact rewrites of the quantized graph for
    onnxruntime's channels-last int8 kernels (a 2-d stem on 1-3 channels as a space-to-depth
    convolution, which replaces the padding; ``Flatten`` before the last matmul in
    channels-last order); ``None`` applies them for x86 targets with uint8 activations, where
    they were measured. The rewritten graph is checked to give the same outputs as before on
    the calibration samples; if not, the unrewritten graph is kept with a warning.

    ``calib``: float samples ``(N, *input_shape)``. ``eval_data``: samples or
    ``(samples, labels)`` for the parity numbers (the calibration samples when ``None``, with a
    warning). ``batch_size``: the graph's fixed batch (1 suits a device; fixed shapes let
    shape arithmetic fold away, which transformers need to come out integer-only); ``None``
    exports a dynamic batch axis.

    The input's ``QuantizeLinear`` is moved in front of any data-moving op (the stem's
    channel Pad), so the graph is integer from its input. The file names edge-sdk as its
    producer and carries the bits, calibration, quantization format and batch, plus
    ``metadata`` (the caller's model name, plan, kept fraction ...), as ``edge_sdk.*``
    metadata properties; only the opset domains its nodes use are declared.

    The file is written atomically (temporary file in the same folder, then renamed); with
    ``require_integer_only`` a graph that keeps float ops raises :class:`VerificationError`
    and nothing is written.
    """
    if activation_type is not None:
        _check_choice("activation_type", activation_type, ACTIVATION_TYPES)
    _check_choice("calibration_method", calibration_method, CALIBRATION_METHODS)
    _check_choice("quant_format", quant_format, QUANT_FORMATS)
    if not isinstance(opset, int) or not 13 <= opset <= 21:
        raise InvalidInputError(f"opset={opset!r} is not accepted; expected an integer from 13 to 21")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidInputError(f"batch_size={batch_size!r} is not accepted; expected None or an integer >= 1")
    if not isinstance(threads, int) or threads < 1:
        raise InvalidInputError(f"threads={threads!r} is not accepted; expected an integer >= 1")
    out_path = check_writable(path)
    profile = load_profile(target)
    cpu = cpu_target(profile)
    act_type = activation_type or cpu.activation_type()
    use_layout = (cpu.is_x86 and act_type == "uint8") if layout_rewrites is None else bool(layout_rewrites)
    use_layout = use_layout and quant_format == "qoperator"  # they rewrite QLinearConv / QGemm
    use_reduce_range = cpu.reduce_range() if reduce_range is None else bool(reduce_range)

    float_model = prepare_float_model(model)
    input_shape = model_input_shape(float_model)
    calib_x = as_samples(calib, input_shape, "calibration")
    check_model_accepts(float_model, calib_x, "calibration")
    eval_x, eval_y = split_eval(eval_data, tuple(calib_x.shape[1:]))
    warnings: list[str] = []
    if eval_x is None:
        eval_x = calib_x
        warnings.append("no eval_data given: parity measured on the calibration samples")
    ref_logits = float_logits(float_model, eval_x)

    with tempfile.TemporaryDirectory(prefix="edge_sdk_export_") as tmp:
        fp32_path = os.path.join(tmp, "fp32.onnx")
        example = np.repeat(calib_x[:1], batch_size or 1, axis=0)
        export_float_onnx(float_model, torch.from_numpy(example), fp32_path, opset=opset,
                          dynamic_batch=batch_size is None)
        prep_path = os.path.join(tmp, "prep.onnx")
        _preprocess(fp32_path, prep_path)
        prepared, changes = rewrite_for_quantization(onnx.load(prep_path))
        if pad_stem:
            prepared, padded = pad_stem_channels(prepared)
            changes += padded
        onnx.save(prepared, prep_path)
        q_path = os.path.join(tmp, "int8.onnx")
        _quantize(prep_path, q_path, calib_x, batch_size or min(32, calib_x.shape[0]),
                  act_type, per_channel, calibration_method, use_reduce_range, quant_format)
        q_model = onnx.load(q_path)
        if use_layout:
            q_model, post = _layout_rewrites(q_model, example, calib_x, warnings)
            changes += post
        q_model, moved = quantize_input_first(q_model)
        changes += moved
        weight_bits = 7 if use_reduce_range else 8
        props = {**(metadata or {}), "format": "int8-onnx", "quant_format": quant_format,
                 "weight_bits": weight_bits, "act_bits": 8, "activation_type": act_type,
                 "per_channel": per_channel, "calibration": f"{calibration_method}, {calib_x.shape[0]} samples",
                 "batch_size": batch_size or "dynamic", "target": cpu.name}
        int8_model = stamp_model(compact_model(q_model), _doc(props), props)
        data = int8_model.SerializeToString()
        fp32_model = compact_model(onnx.load(fp32_path))
        fp32_data = fp32_model.SerializeToString()
        check = check_integer_only(int8_model)
        float_ops = [str(op) for op in check.float_ops]
        if require_integer_only and not check.integer_only:
            raise VerificationError(
                f"the int8 graph is not integer-only: {len(float_ops)} float op(s) left, e.g. "
                f"{', '.join(float_ops[:4])}; nothing written to {out_path}"
            )
        q_session = _ort.make_session(data, threads)
        int_logits = _ort.run(q_session, eval_x)
        lat_int = lat_fp32 = None
        if measure_latency:
            fp32_session = _ort.make_session(fp32_data, threads)
            lat_int, lat_fp32 = _ort.paired_latency_ms([q_session, fp32_session], eval_x[:1], method=LATENCY_METHOD)
        raw_fp32_bytes = os.path.getsize(fp32_path)
    if not check.integer_only:
        warnings.append(f"{len(float_ops)} float op(s) left: {', '.join(float_ops[:6])}")
    atomic_write_bytes(out_path, data)
    log.info("wrote %s (%d bytes)", out_path, len(data))
    return ExportReport(
        format="int8-onnx",
        path=str(out_path),
        integer_only=check.integer_only,
        float_ops=float_ops,
        file_bytes=len(data),
        fp32_file_bytes=len(fp32_data),
        top1_agreement=float(np.mean(int_logits.argmax(1) == ref_logits.argmax(1))),
        max_abs_logit_error=float(np.max(np.abs(int_logits - ref_logits))),
        eval_samples=int(eval_x.shape[0]),
        accuracy_int=None if eval_y is None else float(np.mean(int_logits.argmax(1) == eval_y)),
        accuracy_float=None if eval_y is None else float(np.mean(ref_logits.argmax(1) == eval_y)),
        latency_ms_int8=lat_int,
        latency_ms_fp32=lat_fp32,
        threads=threads,
        weight_bits=weight_bits,
        act_bits=8,
        activation_type=act_type,
        calibration_method=calibration_method,
        per_channel=per_channel,
        warnings=warnings,
        extra={"target": cpu.name, "target_arch": cpu.arch, "reduce_range": use_reduce_range,
               "quant_format": quant_format, "integer_check_style": check.style,
               "rewrites": changes, "batch_size": batch_size, "opset": opset,
               "latency_method": LATENCY_METHOD if measure_latency else None,
               "fp32_torch_export_bytes": raw_fp32_bytes,
               "float_op_types": dict(Counter(op.op_type for op in check.float_ops))},
    )


def _layout_rewrites(model: onnx.ModelProto, example: np.ndarray, calib_x: np.ndarray,
                     warnings: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """The post-quantization layout rewrites, kept only when the outputs stay identical."""
    before = onnx.ModelProto()
    before.CopyFrom(model)
    try:
        shapes = _ort.tensor_shapes(model, example)
    except Exception as exc:  # noqa: BLE001 - a graph onnxruntime cannot run is reported later
        log.debug("no tensor shapes for the layout rewrites: %s", exc)
        return before, []
    after, changes = rewrite_for_ort_layout(model, shapes)
    if not changes:
        return before, []
    probe = calib_x[: max(8, example.shape[0])]
    want = _ort.run(_ort.make_session(before), probe)
    try:
        got = _ort.run(_ort.make_session(after), probe)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises plain exceptions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.append(f"layout rewrites gave a graph onnxruntime refused ({first}); kept the graph without them")
        return before, []
    if not np.array_equal(want, got):
        warnings.append(f"layout rewrites changed the outputs (max abs {np.max(np.abs(want - got)):.3g}); "
                        f"kept the graph without them")
        return before, []
    return after, changes


def _preprocess(src: str, dst: str) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with capture_native_stderr():
            quant_pre_process(src, dst, skip_symbolic_shape=False)
    except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some graphs
        log.debug("symbolic shape inference failed (%s); retrying without it", exc)
        try:
            with capture_native_stderr():
                quant_pre_process(src, dst, skip_symbolic_shape=True)
        except Exception as exc2:  # noqa: BLE001
            raise ExportError(f"onnxruntime pre-processing failed: {exc2}") from exc2


def _doc(props: Mapping[str, Any]) -> str:
    model = props.get("model") or "a model"
    return (f"edge-sdk int8 ONNX ({props['quant_format']}) of {model}: W{props['weight_bits']}A8, "
            f"{props['activation_type']} activations, calibrated by {props['calibration']}, "
            f"batch {props['batch_size']}, for {props['target']}; quantized from the graph input on")


def _quantize(src: str, dst: str, calib: np.ndarray, batch: int, act_type: str, per_channel: bool,
              method: str, reduce_range: bool, quant_format: str = "qoperator") -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    # (not CalibMaxIntermediateOutputs: with N a multiple of it, onnxruntime 1.31's
    # calibrator empties its buffer on the last batch and fails with "No data is collected")
    extra: dict[str, Any] = {}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    root, quiet = logging.getLogger(), _DropOrtQdqAdvice()
    root.addFilter(quiet)
    try:
        with capture_native_stderr():
            quantize_static(
                src, dst, _Reader(calib, batch),
                quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8 if act_type == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                extra_options=extra,
            )
    except Exception as exc:  # noqa: BLE001 - the quantizer raises plain exceptions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"onnxruntime quantize_static failed: {first}") from exc
    finally:
        root.removeFilter(quiet)
