"""``edge-sdk profile``: measure this device and a model's cost on it -> capability report."""

from __future__ import annotations

import argparse
import os
import time
from fractions import Fraction

from edge_sdk._io import check_distinct, check_writable
from edge_sdk.cli._output import Progress, emit_json, format_table
from edge_sdk.errors import InvalidInputError
from edge_sdk.profiler.device import MAX_THREADS_PER_CPU
from edge_sdk.profiler.report import CapabilityReport, DeviceCapability, RateStats, Validation, size_label
from edge_sdk.profiler.reporting import FULL_DEADLINE, QUICK_DEADLINE
from edge_sdk.profiler.validate import DEFAULT_STEPS

MIB = 2**20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="measure this device and a model's cost on it; write a capability report",
        description=(
            "Measure this device (effective CPUs, memory, fp32 GFLOP/s, int8 GOP/s, memory "
            "bandwidth: each per CPU-second and per wall-second, with its spread and a contention "
            "verdict) and a reference model's cost at several submodel sizes (FLOPs, peak training "
            "memory, latency), within a deadline, and print or write the capability report with "
            "its sanity warnings. The capacity score is the hardware's rate; the share of it that "
            "was free is reported beside it."
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
    parser.add_argument("--threads", type=_positive_int, default=None, help=f"threads for the all-threads measurements, 1 to {MAX_THREADS_PER_CPU} x effective CPUs (default: effective CPUs)")
    parser.add_argument("--quick", action="store_true", help=f"shorter measurements and a smaller batch (deadline {QUICK_DEADLINE:g} s)")
    parser.add_argument("--deadline", type=_positive_float, default=None, metavar="SECONDS", help=f"time for the whole command, start-up included; measurements shrink to meet it (default {QUICK_DEADLINE:g} with --quick, else {FULL_DEADLINE:g})")
    parser.add_argument("--validate", action="store_true", help="then run a real local round (train_local on a HeteroFL plan) at each size and compare its time with the report's prediction")
    parser.add_argument("--validate-steps", type=_positive_int, default=DEFAULT_STEPS, metavar="N", help=f"training steps of each validation round (default {DEFAULT_STEPS}, at most 10000)")
    parser.add_argument("--hw", metavar="NAME|PATH", help="estimate the report a device of this hardware profile would send")
    parser.add_argument("--json", metavar="PATH|-", help="write the report as JSON to PATH, or to stdout with -")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edge_sdk.profiler import DEFAULT_RATIOS, build_report
    from edge_sdk.profiler.device import check_threads
    from edge_sdk.profiler.system import effective_cpu_count
    from edge_sdk.profiler.validate import validate_report

    started = _process_start()
    check_threads(args.threads, effective_cpu_count())
    if args.validate and (args.hw or args.no_model):
        raise InvalidInputError("--validate trains the profiled model on this device: it cannot go with --hw or --no-model")
    if args.validate_steps > 10_000:
        raise InvalidInputError(f"--validate-steps {args.validate_steps} is too many; accepted: 1 to 10000")
    check_distinct({"--json": args.json}, {"--hw": args.hw if args.hw and os.path.exists(args.hw) else None})
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
            deadline=args.deadline,
            started=started,
        )
        if args.validate:
            report.validation = validate_report(report, steps=args.validate_steps, progress=progress)
    finally:
        progress.done()
    document = report.to_dict()
    CapabilityReport.from_dict(document, where="the report just measured")  # write only what reads back
    if args.json:
        emit_json(document, args.json)
    if args.json != "-":
        print(render(report))
    return 0


def render(report: CapabilityReport) -> str:
    """The report as a readable text block, its warnings last."""
    d = report.device
    kind = f"estimated from hardware profile {d.source[3:]}" if d.estimated else "measured"
    lines = [
        f"device {report.device_id} ({kind}, {report.created_at})",
        f"  cpu       {d.cpu_model} [{d.arch}], {d.effective_cpus} effective of {d.logical_cpus} logical CPUs",
        f"  isa       {' '.join(d.isa_flags) or '-'}",
        f"  memory    {d.memory_total_bytes / MIB:,.0f} MiB total, {d.memory_available_bytes / MIB:,.0f} MiB available"
        + (f" (cgroup limit {d.memory_limit_bytes / MIB:,.0f} MiB)" if d.memory_limit_bytes else ""),
    ]
    if d.rates is not None:
        lines += ["", format_table(
            ["rate", "per CPU-s", "per wall-s", "spread", "windows", "CPU share", "verdict"],
            [[label, r.value, r.wall_value, f"{r.spread:.1%}", r.windows, f"{r.cpu_share:.0%}", r.verdict]
             for label, r in _rate_rows(d)],
        )]
        if d.contention is not None:
            lines.append(_machine_line(d))
    else:
        rate_kind = "peak x kernel efficiency measured here" if d.kernel_efficiency else "datasheet peak"
        lines += [
            f"  fp32      {d.gflops_fp32_1t:,.1f} GFLOP/s at 1 thread, {d.gflops_fp32:,.1f} GFLOP/s at {d.threads} threads ({rate_kind})",
            f"  int8      {'-' if d.int8_gops is None else f'{d.int8_gops:,.1f} GOP/s'} ({d.threads} threads)",
            f"  memory bw {d.memory_bandwidth_gbs:,.1f} GB/s ({'theoretical peak' if d.estimated else 'copy'})",
        ]
    if d.kernel_efficiency is not None and d.peak_gflops_fp32 is not None:
        lines.append(f"  peak      {d.peak_gflops_fp32:,.1f} GFLOP/s fp32; fp32 matmul reaches {d.kernel_efficiency:.0%} of it"
                     + (" (efficiency measured on the machine that made this estimate)" if d.estimated else ""))
    if report.model is not None:
        lines += ["", *_model_lines(report)]
    lines += ["", _capacity_line(report)]
    if report.run is not None:
        r = report.run
        lines.append(f"run       {r.seconds:.1f} s, deadline {r.deadline_seconds:g} s; confidence {r.confidence}")
    if report.validation is not None:
        v = report.validation
        lines += [
            "",
            f"validation: real local rounds ({v.strategy} plan, train_local) against the prediction",
            format_table(
                ["size", "steps", "batch", "predicted s", "measured s", "error", "CPU share"],
                [[size_label(r.ratio), r.steps, r.batch_size, r.predicted_s, r.measured_s, f"{r.error:+.1%}",
                  None if r.cpu_share is None else f"{r.cpu_share:.0%}"] for r in v.rounds],
            ),
            _validation_verdict(v),
        ]
    lines += [f"warning: {warning}" for warning in report.warnings]
    return "\n".join(lines)


def _validation_verdict(v: Validation) -> str:
    if not v.rounds:
        return "nothing to validate: no size has a measured train-step latency (see the cuts below)"
    if v.within_tolerance:
        return f"every round within +-{v.tolerance:.0%} of the prediction"
    return f"some rounds are NOT within +-{v.tolerance:.0%} of the prediction"


def _rate_rows(d: DeviceCapability) -> list[tuple[str, RateStats]]:
    r = d.rates
    assert r is not None
    rows = [(f"fp32 GFLOP/s, {d.threads} threads", r.fp32), ("fp32 GFLOP/s, 1 thread", r.fp32_1t)]
    if r.int8 is not None:
        rows.append((f"int8 GOP/s, {d.threads} threads", r.int8))
    rows.append(("copy GB/s, 1 thread", r.memory_bandwidth))
    return rows


def _machine_line(d: DeviceCapability) -> str:
    c = d.contention
    assert c is not None
    parts = [f"{c.free_share:.0%} of the CPUs free"]
    parts += [f"{label} {value}" for label, value in (
        ("steal", None if c.steal_fraction is None else f"{c.steal_fraction:.1%}"),
        ("other runnable tasks", c.run_queue), ("load average", c.load_average),
        ("CPU pressure", None if c.psi_cpu_some_avg10 is None else f"{c.psi_cpu_some_avg10:g}%"),
        ("clock", None if c.freq_mhz is None else f"{c.freq_mhz:,.0f} MHz"),
    ) if value is not None]
    return f"  machine   {c.verdict}: {', '.join(parts)}"


def _model_lines(report: CapabilityReport) -> list[str]:
    m = report.model
    assert m is not None
    rows = []
    for s in m.sizes:
        step = s.train_step_latency
        rows.append([
            size_label(s.ratio), s.kept_fraction, s.params, s.forward_flops / 1e6, s.train_step_flops / 1e6,
            None if s.peak_train_memory_bytes is None else s.peak_train_memory_bytes / MIB,
            None if s.forward_latency is None else s.forward_latency.median_ms,
            None if step is None else step.median_ms,
            None if step is None else step.p90_ms,
            None if step is None or step.cpu_share is None else f"{step.cpu_share:.0%}",
        ])
    headers = ["size", "kept", "params", "fwd MFLOP", "step MFLOP", "peak MiB", "fwd ms", "step ms", "step p90", "CPU share"]
    lines = [f"model {m.model}, input {'x'.join(map(str, m.input_shape))}, batch {m.batch_size}", format_table(headers, rows)]
    if report.device.estimated:
        lines.append(
            "latencies are predictions: FLOPs / (the profile's peak fp32 rate x the kernel efficiency this model reached here)"
            if report.device.kernel_efficiency else "latencies are lower bounds: FLOPs / the profile's peak fp32 rate"
        )
    return lines


def _capacity_line(report: CapabilityReport) -> str:
    c, d = report.capacity, report.device
    budgets = ", ".join(
        part for part in (f"{c.budget_ms:g} ms/step" if c.budget_ms else "", f"{c.budget_mb:g} MiB" if c.budget_mb else "")
        if part
    ) or "no budget"
    fits = "nothing profiled fits" if c.max_ratio is None else f"largest size that fits: {size_label(c.max_ratio)}"
    if report.model is None:
        fits = "no model profiled"
    rate = "GFLOP/s, estimated" if d.estimated else "GFLOP/s per CPU-second"
    free = "" if c.free_share is None else f", {c.free_share:.0%} free now = {c.available_score or 0:,.1f} available"
    return f"capacity  score {c.score:,.1f} ({rate}{free}); {budgets}; {fits}"


def _process_start() -> float:
    """This process's start as a ``time.monotonic()`` value, so the deadline counts the
    interpreter's start-up and imports too. Linux: the start tick in /proc/self/stat against
    the boot-time clock (10 ms steps); elsewhere psutil's create time (its boot time is
    rounded to whole seconds)."""
    try:
        with open("/proc/self/stat") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        try:
            import psutil

            age = time.time() - psutil.Process().create_time()
        except Exception:  # psutil cannot read the process table here: count from now
            age = 0.0
    return time.monotonic() - max(0.0, min(age, 60.0))


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
