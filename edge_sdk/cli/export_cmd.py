"""``edge-sdk export``: a model (or a client's submodel) to int8 ONNX, QONNX or QCDQ.

Every input is checked before the long work (calibration, quantization, verification): the
format and bit widths, the target profile, the output path, the checkpoint and plan, and the
calibration data's shape. Files are written atomically; a failed export writes nothing.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from edge_sdk._io import check_writable
from edge_sdk.cli._output import Progress, emit_json, format_table
from edge_sdk.errors import BudgetExceededError, InvalidInputError

FORMATS = ("int8-onnx", "qonnx", "qcdq")
MAX_BITS = {"qonnx": 16, "qcdq": 8, "int8-onnx": 8}
DEFAULT_BITS = {"qonnx": (4, 4), "qcdq": (8, 8)}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from edge_sdk import models

    p = subparsers.add_parser(
        "export",
        help="export a model to integer-only ONNX (CPUs) or QONNX / QCDQ (FPGAs)",
        description=(
            "Quantize a reference model, a checkpoint or a client's submodel and write it as "
            "int8 ONNX (onnxruntime static quantization, integer-only check), QONNX (Brevitas, "
            "for FINN / hls4ml) or QCDQ (Brevitas, runnable in onnxruntime), with a parity "
            "report against the float model. With --target, the hardware profile's preferred "
            "format and bit widths are used and, for FPGAs, the weight width is lowered until "
            "the resource estimate fits."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help=f"reference model: {', '.join(models.names())}")
    src.add_argument("--checkpoint", metavar="PATH",
                     help="checkpoint written by edge_sdk.export.save_checkpoint")
    p.add_argument("--plan", metavar="PATH", help="submodel plan (SubmodelPlan.to_bytes) to extract first")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="int8-onnx, qonnx or qcdq (default: the target's preferred format)")
    p.add_argument("--target", metavar="NAME|PATH", help="hardware profile (see `edge-sdk hw list`)")
    calib = p.add_mutually_exclusive_group()
    calib.add_argument("--calib", metavar="PATH.npy", help="calibration samples, an array (N, *input_shape)")
    calib.add_argument("--calib-synthetic", type=int, metavar="N",
                       help="N standard-normal calibration samples (default 64 when --calib is not given)")
    p.add_argument("--weight-bits", type=int, metavar="B", help="weight bits (qonnx 2-16, qcdq 2-8)")
    p.add_argument("--act-bits", type=int, metavar="B", help="activation bits (qonnx 2-16, qcdq 2-8)")
    p.add_argument("--calibration-method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="int8-onnx calibration (default minmax)")
    p.add_argument("--require-integer-only", action="store_true",
                   help="int8-onnx: fail (and write nothing) if any float op is left")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="onnxruntime threads for latency (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic calibration data and of a --model's initial weights (default 0)")
    p.add_argument("--out", required=True, metavar="PATH", help="output .onnx file")
    p.add_argument("--json", metavar="PATH|-", help="write the report as JSON to PATH, or to stdout with -")
    p.set_defaults(handler=run)
    return p


def _bits(name: str, value: int | None, fmt: str) -> int | None:
    if value is None:
        return None
    high = MAX_BITS[fmt]
    if fmt == "int8-onnx":
        if value != 8:
            raise InvalidInputError(f"--{name} {value} is out of range for int8-onnx; it uses 8 bits "
                                    f"(use --format qonnx or qcdq for 2 to 8 bits)")
        return value
    if not 2 <= value <= high:
        raise InvalidInputError(f"--{name} {value} is out of range for {fmt}; expected 2 to {high}")
    return value


def _load_model(args: argparse.Namespace):
    from edge_sdk import models

    if args.checkpoint:
        from edge_sdk.export.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint)
        label = os.path.basename(args.checkpoint)
    else:
        import torch

        torch.manual_seed(args.seed)  # the same initial weights as `edge-sdk extract --model NAME --seed S`
        model = models.create(args.model).eval()
        label = args.model
    input_shape = tuple(model.config.input_shape)
    if args.plan:
        from edge_sdk.submodel import SubmodelPlan

        try:
            with open(args.plan, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise InvalidInputError(f"cannot read plan {args.plan}: {exc.strerror or exc}") from exc
        plan = SubmodelPlan.from_bytes(data)
        sub = plan.extract(model)
        model = sub.dense() if hasattr(sub, "dense") else sub
        model.eval()
        label = f"{label} ({plan.strategy} submodel, {plan.kept_fraction:.3g} of the parameters)"
    return model, input_shape, label


def _calibration(args: argparse.Namespace, input_shape: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    from edge_sdk.export._data import as_samples

    if args.calib:
        try:
            data = np.load(args.calib, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read calibration file {args.calib}: {exc}") from exc
        return as_samples(data, input_shape, "calibration"), []
    n = 64 if args.calib_synthetic is None else args.calib_synthetic
    if n < 1:
        raise InvalidInputError(f"--calib-synthetic {n} is out of range; expected N >= 1")
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((n, *input_shape)).astype(np.float32)
    return x, ["calibrated on synthetic standard-normal samples: ranges and parity are not "
               "those of real data (give --calib PATH.npy)"]


def _choose_bits(model, input_shape: tuple[int, ...], profile, fmt: str, wb: int | None, ab: int | None, progress: Progress):
    """Weight/act bits for an FPGA target: the profile's widest, weight bits lowered until it fits."""
    from edge_sdk.export import estimate_fpga
    from edge_sdk.export.fpga_estimate import model_layers

    high = MAX_BITS[fmt]
    act_choices = sorted((b for b in profile.fpga.act_bits if 2 <= b <= high), reverse=True)
    w_choices = sorted((b for b in profile.fpga.weight_bits if 2 <= b <= high), reverse=True)
    if not act_choices or not w_choices:
        raise InvalidInputError(f"target {profile.name} supports no bit width {fmt} can write (2 to {high})")
    if wb is not None and wb not in profile.fpga.weight_bits:
        raise InvalidInputError(f"--weight-bits {wb} is out of range for {profile.name}; it supports "
                                f"{', '.join(map(str, profile.fpga.weight_bits))}")
    if ab is not None and ab not in profile.fpga.act_bits:
        raise InvalidInputError(f"--act-bits {ab} is out of range for {profile.name}; it supports "
                                f"{', '.join(map(str, profile.fpga.act_bits))}")
    act = ab if ab is not None else act_choices[0]
    candidates = [wb] if wb is not None else w_choices
    layers = model_layers(model, input_shape)  # traced once, estimated at each width
    estimate = None
    for bits in candidates:
        progress(f"estimating W{bits}A{act} on {profile.name}")
        estimate = estimate_fpga(layers, profile, weight_bits=bits, act_bits=act)
        if estimate.fits:
            return bits, act, estimate
    assert estimate is not None
    tried = f"W{candidates[0]}" if len(candidates) == 1 else f"W{candidates[0]} down to W{candidates[-1]}"
    raise BudgetExceededError(
        f"the model does not fit {profile.name} ({profile.fpga.part}) at {tried} with A{act}: at "
        f"W{estimate.weight_bits} it needs {estimate.budget_line()} (needed/available; over: "
        f"{', '.join(estimate.over_budget)})"
    )


def run(args: argparse.Namespace) -> int:
    progress = Progress()
    try:
        return _run(args, progress)
    finally:
        progress.done()


def _run(args: argparse.Namespace, progress: Progress) -> int:
    from edge_sdk.export._target import load_profile

    check_writable(args.out)
    if args.json and args.json != "-":
        check_writable(args.json)
    if args.threads < 1:
        raise InvalidInputError(f"--threads {args.threads} is out of range; expected N >= 1")
    profile = load_profile(args.target) if args.target else None
    fmt = args.format or (profile.preferred_format if profile else None)
    if fmt is None:
        raise InvalidInputError("give --format int8-onnx|qonnx|qcdq, or --target to use its preferred format")
    wb, ab = _bits("weight-bits", args.weight_bits, fmt), _bits("act-bits", args.act_bits, fmt)
    if args.require_integer_only and fmt != "int8-onnx":
        raise InvalidInputError("--require-integer-only applies to --format int8-onnx; QONNX and QCDQ "
                                "keep float scale ops by design")
    progress("loading model")
    model, input_shape, label = _load_model(args)
    calib, notes = _calibration(args, input_shape)
    estimate = None
    if fmt in ("qonnx", "qcdq"):
        from edge_sdk.export._brevitas_ptq import check_supported_layers

        check_supported_layers(model, fmt)
        if profile is not None and profile.fpga is not None:
            wb, ab, estimate = _choose_bits(model, input_shape, profile, fmt, wb, ab, progress)
        wb = wb if wb is not None else DEFAULT_BITS[fmt][0]
        ab = ab if ab is not None else DEFAULT_BITS[fmt][1]
    progress(f"exporting {fmt}")
    report = _export(fmt, model, calib, args, profile, wb, ab)
    progress.done()
    report.warnings = notes + report.warnings
    doc: dict[str, Any] = {"model": label, "report": report.to_dict(),
                           "fpga_estimate": estimate.to_dict() if estimate else None}
    if args.json:
        emit_json(doc, args.json)
        if args.json == "-":
            return 0
    rows = report.summary_rows()
    if estimate is not None:
        rows += [("FPGA target", f"{estimate.target} ({estimate.part})"),
                 ("FPGA fits", estimate.fits), ("FPGA needed/available", estimate.budget_line()),
                 ("FPGA folding", estimate.folding), ("FPGA est. frames/s", estimate.fps)]
    print(f"exported {label}")
    print(format_table(["field", "value"], rows))
    return 0


def _export(fmt: str, model, calib: np.ndarray, args: argparse.Namespace, profile, wb, ab):
    from edge_sdk import export

    if fmt == "int8-onnx":
        return export.to_int_onnx(model, calib, args.out, calibration_method=args.calibration_method,
                                  target=profile, threads=args.threads,
                                  require_integer_only=args.require_integer_only)
    if fmt == "qonnx":
        return export.to_qonnx(model, calib, args.out, weight_bits=wb, act_bits=ab)
    return export.to_qcdq(model, calib, args.out, weight_bits=wb, act_bits=ab, threads=args.threads)

