"""Plan a mixed fleet on paper: tiers and submodel sizes for devices you don't have at hand.

Each hardware class's report is what `edge-sdk profile --hw NAME --quick` writes (device
figures from the datasheet scaled by the kernel efficiency measured on this machine, model
cost measured here, latencies estimated); the fleet is then clustered as the server would
cluster real reports.

    python examples/plan_fleet.py [--model resnet8] [--budget-ms MS] [--out PATH.json]
    edge-sdk cluster PATH.json             # the same clustering from the CLI

The reports go to ``--out``, or without it to a new temporary directory (never into the
working tree); the path is printed on the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from fractions import Fraction
from pathlib import Path

from edge_sdk.clustering import cluster_capabilities
from edge_sdk.profiler import build_report

# hardware profile -> devices of that kind in the fleet
FLEET = {
    "raspberry-pi-4": 6,
    "raspberry-pi-5": 4,
    "jetson-nano": 3,
    "x86-gateway-j6412": 2,
    "pynq-z2": 3,  # the Zynq's Cortex-A9 trains; its fabric is an export target
    "ultra96-v2": 2,
    "zcu104": 1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet8", help="the reference model the reports are made for (default resnet8)")
    parser.add_argument("--budget-ms", type=float, default=None,
                        help="training-step budget per device (batch 32); without it sizes follow the capacity scores")
    parser.add_argument("--full", action="store_true",
                        help="full-length measurements of this machine's kernel efficiency (default: quick ones)")
    parser.add_argument("--out", type=Path, help="where to write the reports (default: fleet.json in a new temporary directory)")
    args = parser.parse_args()

    reports = []
    for hw, count in FLEET.items():
        base = build_report(model=args.model, hw=hw, budget_ms=args.budget_ms, quick=not args.full)
        reports += [dataclasses.replace(base, device_id=f"{hw}-{i}") for i in range(count)]
    out = args.out or Path(tempfile.mkdtemp(prefix="edge-sdk-fleet-")) / "fleet.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as handle:
        json.dump([r.to_dict() for r in reports], handle, indent=1)

    clustering = cluster_capabilities(reports)
    budget = "no budget (sizes by score)" if args.budget_ms is None else f"budget {args.budget_ms:g} ms per step"
    print(f"{len(reports)} devices, {clustering.n_tiers} tiers, {budget} of {args.model}")
    for tier, members in enumerate(clustering.members):
        kinds = sorted({m.rsplit("-", 1)[0] for m in members})
        ratio = clustering.ratios[tier]
        size = "none fits" if ratio is None else str(Fraction(ratio).limit_denominator(64))
        low, high = clustering.score_ranges[tier]
        print(f"  tier {tier}: size {size:>9}  score {low:6.1f}-{high:6.1f} GFLOP/s  {len(members)} devices: {', '.join(kinds)}")
    print(f"reports written to {out}")


if __name__ == "__main__":
    main()
