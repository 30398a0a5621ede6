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

from edge_sdk._io import check_distinct, check_writable
from edge_sdk.cli._args import seed_arg
from edge_sdk.cli._output import Progress, emit_json, format_table
from edge_sdk.errors import InvalidInputError
from edge_sdk.export.formats import format_names, get_format

# how this command spells the bit settings in error messages
_LABELS = {"weight": "--weight-bits", "act": "--act-bits"}
# options the command passes to formats that take them (a given one a format does not take is refused)
_FORMAT_OPTIONS = ("calibration_method", "require_integer_only", "quant_format", "batch_size", "flow")
_FLAGS = {"require_integer_only": "--require-integer-only", "quant_format": "--quant-format",
          "batch_size": "--batch-size", "flow": "--flow"}


def _bits_help(kind: str) -> str:
    ranges = []
    for name in format_names():
        low, high = get_format(name).bit_range(kind)
        ranges.append(f"{name} {low}" if low == high else f"{name} {low}-{high}")
    return f"{'weight' if kind == 'weight' else 'activation'} bits ({', '.join(ranges)})"


MAX_THREADS = 256  # onnxruntime with a million threads hangs or crashes; no device has more
MAX_PLAN_FILE = 256 << 20  # plans of the largest models are tens of MB


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
    p.add_argument("--format", choices=format_names(), default=None,
                   help=f"{', '.join(format_names())} (default: the target's preferred format)")
    p.add_argument("--target", metavar="NAME|PATH", help="hardware profile (see `edge-sdk hw list`)")
    calib = p.add_mutually_exclusive_group()
    calib.add_argument("--calib", metavar="PATH.npy", help="calibration samples, an array (N, *input_shape)")
    calib.add_argument("--calib-synthetic", type=int, metavar="N",
                       help="N standard-normal calibration samples (default 64 when --calib is not given)")
    p.add_argument("--weight-bits", type=int, metavar="B", help=_bits_help("weight"))
    p.add_argument("--act-bits", type=int, metavar="B", help=_bits_help("act"))
    p.add_argument("--calibration-method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="int8-onnx calibration (default minmax)")
    p.add_argument("--require-integer-only", action="store_true",
                   help="int8-onnx: fail (and write nothing) if any float op is left")
    p.add_argument("--quant-format", choices=("qoperator", "qdq"), default=None,
                   help="int8-onnx graph: qoperator (integer operators, fastest on onnxruntime; default) "
                        "or qdq (QuantizeLinear/DequantizeLinear around standard ops: OpenVINO and others)")
    p.add_argument("--batch-size", type=_batch_size, default=argparse.SUPPRESS, metavar="N|dynamic",
                   help="int8-onnx: the graph's batch, a fixed N (default 1) or dynamic")
    p.add_argument("--flow", choices=("finn", "hls4ml"), default=None,
                   help="qonnx: write the file the named FPGA tool takes (default: generic QONNX)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help=f"onnxruntime threads for latency, 1 to {MAX_THREADS} (default 1)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the synthetic calibration data and of a --model's initial weights (default 0)")
    p.add_argument("--out", required=True, metavar="PATH", help="output .onnx file")
    p.add_argument("--json", metavar="PATH|-", help="write the report as JSON to PATH, or to stdout with -")
    p.set_defaults(handler=run)
    return p


def _batch_size(text: str) -> int | None:
    """``dynamic`` -> None (a dynamic batch axis), else a positive integer."""
    if text == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a batch size; expected N >= 1 or dynamic")
    return value


def _load_model(args: argparse.Namespace):
    from edge_sdk import models

    if args.checkpoint:
        from edge_sdk.export.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint)
        label = os.path.basename(args.checkpoint)
        meta: dict[str, Any] = {"model": label}
    else:
        import torch

        torch.manual_seed(args.seed)  # the same initial weights as `edge-sdk extract --model NAME --seed S`
        model = models.create(args.model).eval()
        label = args.model
        meta = {"model": f"{label} (seed {args.seed})"}
    input_shape = tuple(model.config.input_shape)
    if args.plan:
        from edge_sdk.submodel import SubmodelPlan

        try:
            with open(args.plan, "rb") as fh:  # bounded: /dev/zero or a huge file is refused, not read whole
                data = fh.read(MAX_PLAN_FILE + 1)
            if len(data) > MAX_PLAN_FILE:
                raise InvalidInputError(f"plan {args.plan}: larger than {MAX_PLAN_FILE >> 20} MiB; not a plan file")
        except OSError as exc:
            raise InvalidInputError(f"cannot read plan {args.plan}: {exc.strerror or exc}") from exc
        plan = SubmodelPlan.from_bytes(data)
        sub = plan.extract(model)
        model = sub.dense() if hasattr(sub, "dense") else sub
        model.eval()
        label = f"{label} ({plan.strategy} submodel, {plan.kept_fraction:.3g} of the parameters)"
        meta.update(plan=f"{os.path.basename(args.plan)} ({plan.strategy})", kept_fraction=plan.kept_fraction)
    return model, input_shape, label, meta


def _calibration(args: argparse.Namespace, input_shape: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    from edge_sdk.export._data import as_samples

    if args.calib:
        try:
            data = np.load(args.calib, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InvalidInputError(f"cannot read calibration file {args.calib}: {exc}") from exc
        return as_samples(data, input_shape, "calibration"), [], f"file {os.path.basename(args.calib)}"
    n = 64 if args.calib_synthetic is None else args.calib_synthetic
    if n < 1:
        raise InvalidInputError(f"--calib-synthetic {n} is out of range; expected N >= 1")
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((n, *input_shape)).astype(np.float32)
    return x, ["calibrated on synthetic standard-normal samples: ranges and parity are not "
               "those of real data (give --calib PATH.npy)"], f"synthetic standard-normal, seed {args.seed}"


def _format_options(args: argparse.Namespace, fmt) -> dict[str, Any]:
    """The command's format options that ``fmt`` takes; a flag it does not take is refused."""
    options: dict[str, Any] = {}
    for key in _FORMAT_OPTIONS:
        if not hasattr(args, key) or getattr(args, key) in (None, False) and key != "batch_size":
            continue  # not given (--batch-size is absent unless given: None means dynamic)
        if key in fmt.options:
            options[key] = getattr(args, key)
        elif key in _FLAGS:
            takers = [n for n in format_names() if key in get_format(n).options]
            raise InvalidInputError(f"{_FLAGS[key]} applies to --format {', '.join(takers)}, not {fmt.name}")
    return options


def run(args: argparse.Namespace) -> int:
    progress = Progress()
    try:
        return _run(args, progress)
    finally:
        progress.done()


def _run(args: argparse.Namespace, progress: Progress) -> int:
    from edge_sdk.export._target import load_profile

    check_distinct({"--out": args.out, "--json": args.json},
                   {"--checkpoint": args.checkpoint, "--plan": args.plan, "--calib": args.calib})
    check_writable(args.out)
    if args.json and args.json != "-":
        check_writable(args.json)
    if not 1 <= args.threads <= MAX_THREADS:
        raise InvalidInputError(f"--threads {args.threads} is out of range; expected 1 to {MAX_THREADS}")
    profile = load_profile(args.target) if args.target else None
    name = args.format or (profile.preferred_format if profile else None)
    if name is None:
        raise InvalidInputError(f"give --format {'|'.join(format_names())}, or --target to use its preferred format")
    fmt = get_format(name)
    wb = fmt.check_bits("weight", args.weight_bits, labels=_LABELS)
    ab = fmt.check_bits("act", args.act_bits, labels=_LABELS)
    options = _format_options(args, fmt)
    progress("loading model")
    model, input_shape, label, meta = _load_model(args)
    calib, notes, calib_source = _calibration(args, input_shape)
    meta["calibration_data"] = f"{calib_source}, {calib.shape[0]} samples"
    options["metadata"] = meta
    fit = fmt.fit(model, input_shape, profile, weight_bits=wb, act_bits=ab, labels=_LABELS, progress=progress)
    estimate = fit.estimate
    progress(f"exporting {fmt.name}")
    report = fmt.export(model, calib, args.out, fit, threads=args.threads, **options)
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

