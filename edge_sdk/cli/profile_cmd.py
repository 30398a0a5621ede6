"""``edge-sdk profile``: measure this device and a model's cost on it -> capability report."""

from __future__ import annotations

import argparse
from fractions import Fraction

from edge_sdk._io import check_writable
from edge_sdk.cli._output import Progress, emit_json, format_table
from edge_sdk.errors import InvalidInputError
from edge_sdk.profiler.report import CapabilityReport

MIB = 2**20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="measure this device and a model's cost on it; write a capability report",
        description=(
            "Measure this device (effective CPUs, memory, sustained fp32 GFLOP/s, int8 GOP/s, "
            "memory bandwidth) and a reference model's cost at several submodel sizes (FLOPs, "
            "peak training memory, latency), and print or write the capability report."
        ),
    )
    from edge_sdk import models

    parser.add_argument("--model", default="resnet18", help=f"reference model to profile: {', '.join(models.names())} (default: resnet18)")
    parser.add_argument("--no-model", action="store_true", help="profile the device only")
    parser.add_argument("--input-shape", type=_shape, metavar="C,H,W", help="per-sample input shape (default: the model's own)")
    parser.add_argument("--ratios", type=_ratios, default=None, metavar="1,1/4,...", help="submodel sizes to profile (fractions of parameters; default 1,1/4,1/16,1/64)")
    parser.add_argument("--batch-size", type=_positive_int, default=None, help="batch for FLOPs, memory and latency (default 32; 8 with --quick)")
    parser.add_argument("--budget-ms", type=_positive_float, default=None, help="training-step latency budget (ms) for the capacity")
    parser.add_argument("--budget-mb", type=_positive_float, default=None, help="training memory budget (MiB) for the capacity")
    parser.add_argument("--threads", type=_positive_int, default=None, help="threads for the all-threads measurements (default: effective CPUs)")
    parser.add_argument("--quick", action="store_true", help="shorter measurements and a smaller batch (a few seconds)")
    parser.add_argument("--hw", metavar="NAME|PATH", help="estimate the report a device of this hardware profile would send")
    parser.add_argument("--json", metavar="PATH|-", help="write the report as JSON to PATH, or to stdout with -")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edge_sdk.profiler import DEFAULT_RATIOS, build_report

    if args.json and args.json != "-":
        check_writable(args.json)
    progress = Progress()
    try:
        report = build_report(
            model=None if args.no_model else args.model,
            input_shape=args.input_shape,
            ratios=args.ratios or DEFAULT_RATIOS,
            batch_size=args.batch_size,
            budget_ms=args.budget_ms,
            budget_mb=args.budget_mb,
            threads=args.threads,
            quick=args.quick,
            hw=args.hw,
            progress=progress,
        )
    finally:
        progress.done()
    if args.json:
        emit_json(report.to_dict(), args.json)
    if args.json != "-":
        print(render(report))
    return 0


def render(report: CapabilityReport) -> str:
    """The report as a readable text block."""
    d = report.device
    kind = f"estimated from hardware profile {d.source[3:]}" if d.estimated else "measured"
    lines = [
        f"device {report.device_id} ({kind}, {report.created_at})",
        f"  cpu       {d.cpu_model} [{d.arch}], {d.effective_cpus} effective of {d.logical_cpus} logical CPUs",
        f"  isa       {' '.join(d.isa_flags) or '-'}",
        f"  memory    {d.memory_total_bytes / MIB:,.0f} MiB total, {d.memory_available_bytes / MIB:,.0f} MiB available"
        + (f" (cgroup limit {d.memory_limit_bytes / MIB:,.0f} MiB)" if d.memory_limit_bytes else ""),
        f"  fp32      {d.gflops_fp32_1t:,.1f} GFLOP/s at 1 thread, {d.gflops_fp32:,.1f} GFLOP/s at {d.threads} threads",
        f"  int8      {'-' if d.int8_gops is None else f'{d.int8_gops:,.1f} GOP/s'} (onnxruntime integer matmul, {d.threads} threads)",
        f"  memory bw {d.memory_bandwidth_gbs:,.1f} GB/s ({'theoretical peak' if d.estimated else 'copy'})",
    ]
    m = report.model
    if m is not None:
        lines.append("")
        lines.append(f"model {m.model}, input {'x'.join(map(str, m.input_shape))}, batch {m.batch_size}")
        rows = []
        for s in m.sizes:
            rows.append([
                _fraction(s.ratio),
                s.kept_fraction,
                s.params,
                s.forward_flops / 1e6,
                s.train_step_flops / 1e6,
                None if s.peak_train_memory_bytes is None else s.peak_train_memory_bytes / MIB,
                None if s.forward_latency is None else s.forward_latency.median_ms,
                None if s.train_step_latency is None else s.train_step_latency.median_ms,
                None if s.train_step_latency is None else s.train_step_latency.p90_ms,
            ])
        headers = ["size", "kept", "params", "fwd MFLOP", "step MFLOP", "peak MiB", "fwd ms", "step ms", "step p90"]
        lines.append(format_table(headers, rows))
        if d.estimated:
            lines.append("latencies are lower bounds: FLOPs / the profile's peak fp32 rate")
    c = report.capacity
    lines.append("")
    budgets = ", ".join(
        part for part in (
            f"{c.budget_ms:g} ms/step" if c.budget_ms else "",
            f"{c.budget_mb:g} MiB" if c.budget_mb else "",
        ) if part
    ) or "no budget"
    fits = "nothing profiled fits" if c.max_ratio is None else f"largest size that fits: {_fraction(c.max_ratio)}"
    if m is None:
        fits = "no model profiled"
    rate = "peak GFLOP/s, from the datasheet" if d.estimated else "sustained GFLOP/s"
    lines.append(f"capacity  score {c.score:,.1f} ({rate}); {budgets}; {fits}")
    return "\n".join(lines)


def _fraction(ratio: float) -> str:
    f = Fraction(ratio).limit_denominator(4096)
    return str(f) if abs(float(f) - ratio) < 1e-9 else f"{ratio:g}"


def _shape(text: str) -> tuple[int, ...]:
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"malformed input shape {text!r}: expected positive integers like 3,32,32") from None
    if not shape or any(v <= 0 for v in shape):
        raise argparse.ArgumentTypeError(f"malformed input shape {text!r}: expected positive integers like 3,32,32")
    return shape


def parse_ratio(text: str) -> float:
    """A size written as a fraction ("1/4") or a decimal ("0.25"), in (0, 1]."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise InvalidInputError(f"size {text!r} is not a number or fraction like 1/4") from None
    if not 0 < value <= 1:
        raise InvalidInputError(f"size {text!r} is outside (0, 1]: a size is the fraction of parameters held")
    return value


def _ratios(text: str) -> list[float]:
    try:
        return [parse_ratio(part) for part in text.split(",")]
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive finite number")
    return value
