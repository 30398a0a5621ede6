"""``edge-sdk cluster REPORT.json...``: capability tiers of a fleet and the submodel size of each."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edge_sdk._io import check_distinct, check_writable
from edge_sdk.cli._output import emit_json, format_table
from edge_sdk.errors import InvalidInputError, SchemaError

MEMBERS_SHOWN = 3


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help="group capability reports into tiers and give each tier a submodel size",
        description=(
            "Cluster capability reports (from `edge-sdk profile`, on a device or with --hw NAME) "
            "into tiers by capacity score with a KDE on ln(score), and give each tier the largest "
            "ladder size its weakest member can train. Tier 0 is the weakest."
        ),
    )
    parser.add_argument(
        "reports", nargs="+", metavar="REPORT.json",
        help="capability report files (a file may also hold a JSON list of reports)",
    )
    parser.add_argument(
        "--ladder", default="1,1/4,1/16,1/64",
        help="submodel sizes tiers may get, fractions in (0, 1] (default: 1,1/4,1/16,1/64)",
    )
    parser.add_argument(
        "--bandwidth", default=None, metavar="B",
        help="KDE bandwidth in ln units, or scott / silverman (score mode); "
        "default 0.1 (score), 0.15 (multi)",
    )
    parser.add_argument(
        "--prominence", type=float, default=None, metavar="NATS",
        help="smallest log-density drop between two tiers, in nats (default: 1)",
    )
    parser.add_argument(
        "--features", choices=("score", "multi"), default="score",
        help="score: ln capacity score (default); multi: ln GFLOP/s, ln memory, ln train latency",
    )
    parser.add_argument(
        "--standardize", action="store_true",
        help="multi mode: z-score each ln feature first (bandwidth then in standard deviations)",
    )
    parser.add_argument("--json", metavar="PATH|-", help="write the clustering as JSON to PATH or stdout (-)")
    parser.add_argument("--plot", metavar="PNG", help="draw the density, the cuts and the clients (needs matplotlib)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edge_sdk.clustering import DEFAULT_PROMINENCE, cluster_capabilities, parse_ladder
    from edge_sdk.clustering.plot import plot_clustering, ratio_label, require_matplotlib

    ladder = parse_ladder(args.ladder)
    bandwidth = _bandwidth(args.bandwidth)
    check_distinct({"--json": args.json, "--plot": args.plot},
                   {f"report {i + 1}": path for i, path in enumerate(args.reports)})
    if args.json and args.json != "-":
        check_writable(args.json)
    if args.plot:
        require_matplotlib()
        check_writable(args.plot)
    reports = [report for path in args.reports for report in read_reports(path)]
    clustering = cluster_capabilities(
        reports,
        ladder=ladder,
        features=args.features,
        bandwidth=bandwidth,
        prominence=DEFAULT_PROMINENCE if args.prominence is None else args.prominence,
        standardize=args.standardize,
    )
    if args.plot:
        plot_clustering(clustering, args.plot)
    if args.json:
        emit_json(clustering.to_dict(), args.json)
    if args.json != "-":
        rows = []
        for k in range(clustering.n_tiers):
            low, high = clustering.score_ranges[k]
            rows.append([
                k,
                len(clustering.members[k]),
                f"{low:.3g}-{high:.3g}" if low != high else f"{low:.3g}",
                ratio_label(clustering.ratios[k]),
                _members(clustering.members[k]),
            ])
        print(format_table(["tier", "clients", "score (GFLOP/s)", "size", "members"], rows))
        units = "standard deviations" if args.standardize and args.features == "multi" else "ln units"
        cuts = ", ".join(f"{c:.3g}" for c in clustering.cuts) or "none"
        print(
            f"\n{len(clustering.client_ids)} clients, {clustering.n_tiers} tiers; cuts at {cuts} GFLOP/s; "
            f"bandwidth {clustering.bandwidth:.3g} {units} ({clustering.bandwidth_rule})"
        )
        if args.plot:
            print(f"plot written to {args.plot}")
    # clustering.warnings were logged by the library (shown on stderr by the CLI's logging).
    return 0


MAX_REPORT_FILE = 64 << 20  # a fleet of thousands of reports is a few MB


def read_reports(path: str) -> list[Any]:
    """Read the capability report(s) in ``path``; one clear error naming the file otherwise."""
    from edge_sdk.profiler.report import CapabilityReport

    try:
        with open(path, "rb") as fh:  # bounded: /dev/zero or a huge file is refused, not read whole
            raw = fh.read(MAX_REPORT_FILE + 1)
        if len(raw) > MAX_REPORT_FILE:
            raise InvalidInputError(f"{path}: larger than {MAX_REPORT_FILE >> 20} MiB; not a report file")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such report file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path}: is a directory, expected a report JSON file") from None
    except UnicodeDecodeError:
        raise SchemaError(f"{path}: not a text JSON file") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise SchemaError(f"{path}: JSON nested too deeply to be capability reports") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise SchemaError(f"{path}: empty list, expected capability reports")
    reports = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(data, list) else path
        try:
            reports.append(CapabilityReport.from_dict(item, where=where))
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, SchemaError):
                raise
            raise SchemaError(f"{where}: not a capability report ({exc})") from None
    return reports


def _bandwidth(value: str | None) -> float | str | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("scott", "silverman"):
        return text
    try:
        number = float(text)
    except ValueError:
        raise InvalidInputError(
            f"--bandwidth {value!r}: give a positive number or scott / silverman"
        ) from None
    return number


def _members(ids: list[str]) -> str:
    shown = ", ".join(ids[:MEMBERS_SHOWN])
    more = len(ids) - MEMBERS_SHOWN
    return f"{shown}, ... (+{more} more)" if more > 0 else shown
