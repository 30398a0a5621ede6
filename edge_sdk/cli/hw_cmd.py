"""``edge-sdk hw list`` and ``edge-sdk hw show NAME|PATH``: the hardware profiles."""

from __future__ import annotations

import argparse
from typing import Any

from edge_sdk import hw_profiles
from edge_sdk._io import check_writable
from edge_sdk.cli._output import emit_json, format_table
from edge_sdk.hw_profiles import HardwareProfile


def register(subparsers: Any) -> None:
    """Add the ``hw`` command (with ``list`` and ``show``) to the ``edge-sdk`` parser."""
    parser = subparsers.add_parser(
        "hw", help="list and show hardware profiles",
        description="Hardware profiles shipped with the SDK (one per real device, each value "
                    "cited to its datasheet) or your own TOML file.")
    sub = parser.add_subparsers(dest="hw_command", metavar="SUBCOMMAND")
    sub.required = True

    p_list = sub.add_parser("list", help="list the shipped profiles",
                            description="List the hardware profiles shipped with the SDK.")
    _json_option(p_list)
    p_list.set_defaults(handler=run_list)

    p_show = sub.add_parser("show", help="show every field of one profile",
                            description="Show every field of a shipped profile (by name) or of "
                                        "your own profile (a path to a .toml file).")
    p_show.add_argument("profile", metavar="NAME|PATH",
                        help="a shipped profile name (see `edge-sdk hw list`) or a .toml path")
    _json_option(p_show)
    p_show.set_defaults(handler=run_show)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH|-", dest="json",
                        help="write JSON to PATH, or to stdout with '-'")


def run_list(args: argparse.Namespace) -> int:
    if args.json and args.json != "-":
        check_writable(args.json)
    profiles = [hw_profiles.load(name) for name in hw_profiles.names()]
    if args.json:
        emit_json({"profiles": [summary(p) for p in profiles]}, args.json)
        return 0
    rows = [[p.name, p.kind, _cpu_cell(p), _fabric_cell(p), _memory_cell(p), p.preferred_format]
            for p in profiles]
    print(format_table(["name", "kind", "cpu", "fabric", "memory", "format"], rows))
    return 0


def run_show(args: argparse.Namespace) -> int:
    if args.json and args.json != "-":
        check_writable(args.json)
    profile = hw_profiles.load(args.profile)
    if args.json:
        emit_json(profile.to_dict(), args.json)
        return 0
    print(render(profile))
    return 0


def summary(profile: HardwareProfile) -> dict[str, Any]:
    """The fields ``hw list --json`` gives for one profile."""
    cpu, fpga = profile.cpu, profile.fpga
    return {
        "name": profile.name,
        "kind": profile.kind,
        "vendor": profile.vendor,
        "description": profile.description,
        "preferred_format": profile.preferred_format,
        "export_only": profile.export_only,
        "cores": cpu.cores if cpu else None,
        "clock_ghz": cpu.clock_ghz if cpu else None,
        "arch": cpu.arch if cpu else None,
        "memory_mb": cpu.memory_mb if cpu else None,
        "nominal_gflops_fp32": cpu.nominal_gflops_fp32 if cpu else None,
        "part": fpga.part if fpga else None,
        "lut": fpga.lut if fpga else None,
        "dsp": fpga.dsp if fpga else None,
    }


def render(profile: HardwareProfile) -> str:
    """Every field of a profile as readable text."""
    lines = [f"{profile.name}  ({profile.kind}, {profile.vendor})", f"  {profile.description}",
             f"  preferred format: {profile.preferred_format}",
             f"  export only: {'yes' if profile.export_only else 'no'}",
             f"  file: {profile.path}"]
    if profile.cpu is not None:
        c = profile.cpu
        lines += ["", "cpu"]
        lines += _fields([
            ("model", c.model), ("cores", c.cores), ("clock", f"{c.clock_ghz:g} GHz"),
            ("arch", c.arch), ("isa features", ", ".join(c.isa_features) or "-"),
            ("int8 dot product", "yes" if c.int8_dot_product else "no"),
            ("memory", f"{c.memory_mb:g} MB"),
            ("memory bandwidth", f"{c.memory_bandwidth_gbs:g} GB/s (theoretical peak)"),
            ("fp32 FLOP/cycle/core", _opt(c.fp32_flops_per_cycle)),
            ("nominal fp32", f"{c.nominal_gflops_fp32:g} GFLOP/s (derived)"),
            ("int8 op/cycle/core", _opt(c.int8_ops_per_cycle)),
            ("nominal int8", f"{c.nominal_int8_gops:g} GOP/s (derived)"),
        ])
    if profile.mcu is not None:
        lines += ["", "mcu"]
        lines += _fields([("sram", f"{profile.mcu.sram_kb:,} KB"),
                          ("flash", f"{profile.mcu.flash_kb:,} KB")])
    if profile.fpga is not None:
        f = profile.fpga
        lines += ["", "fpga"]
        lines += _fields([
            ("part", f.part), ("clock", f"{f.clock_mhz:g} MHz (typical, rule of thumb)"),
            ("weight bits", _bits(f.weight_bits)), ("activation bits", _bits(f.act_bits)),
        ])
        rows = [[r, f.total(r), getattr(f.utilisation_limit, r), f.usable(r)]
                for r in hw_profiles.RESOURCES]
        table = format_table(["resource", "total", "limit", "usable"], rows)
        lines += ["  " + line for line in table.splitlines()]
    if profile.sources:
        lines += ["", "sources"]
        lines += [f"  {key}: {text}" for key, text in profile.sources.items()]
    return "\n".join(lines)


def _fields(pairs: list[tuple[str, Any]]) -> list[str]:
    width = max(len(k) for k, _ in pairs)
    return [f"  {k.ljust(width)}  {v:,}" if isinstance(v, int) else f"  {k.ljust(width)}  {v}"
            for k, v in pairs]


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _bits(bits: tuple[int, ...]) -> str:
    if len(bits) > 2 and list(bits) == list(range(bits[0], bits[-1] + 1)):
        return f"{bits[0]}..{bits[-1]}"
    return ", ".join(str(b) for b in bits)


def _cpu_cell(p: HardwareProfile) -> str:
    if p.cpu is None:
        return "-"
    return f"{p.cpu.cores} x {p.cpu.clock_ghz:g} GHz {p.cpu.arch}"


def _fabric_cell(p: HardwareProfile) -> str:
    if p.fpga is None:
        return "-"
    return f"{p.fpga.lut:,} LUT / {p.fpga.dsp:,} DSP"


def _memory_cell(p: HardwareProfile) -> str:
    if p.mcu is not None:
        return f"{p.mcu.sram_kb:,} KB SRAM"
    if p.cpu is None:
        return "-"
    mb = p.cpu.memory_mb
    return f"{mb / 1024:g} GB" if mb >= 1024 else f"{mb:g} MB"
