"""Plan a mixed fleet on paper: tiers and submodel sizes for devices you don't have at hand.

Each hardware class's report is what `edge-sdk profile --hw NAME` writes (device figures
from the datasheet, model cost measured here, latencies estimated); the fleet is then
clustered as the server would cluster real reports.

    python examples/plan_fleet.py [--budget-ms 2000] [--out fleet.json]
    edge-sdk cluster fleet.json            # the same clustering from the CLI
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from fractions import Fraction

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
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--budget-ms", type=float, default=2000.0, help="training-step budget per device (batch 32)")
    parser.add_argument("--out", default="fleet.json")
    args = parser.parse_args()

    reports = []
    for hw, count in FLEET.items():
        base = build_report(model=args.model, hw=hw, budget_ms=args.budget_ms)
        reports += [dataclasses.replace(base, device_id=f"{hw}-{i}") for i in range(count)]
    with open(args.out, "w") as handle:
        json.dump([r.to_dict() for r in reports], handle, indent=1)

    clustering = cluster_capabilities(reports)
    print(f"{len(reports)} devices, {clustering.n_tiers} tiers, budget {args.budget_ms:g} ms per step of {args.model}")
    for tier, members in enumerate(clustering.members):
        kinds = sorted({m.rsplit("-", 1)[0] for m in members})
        ratio = clustering.ratios[tier]
        size = "none fits" if ratio is None else str(Fraction(ratio).limit_denominator(64))
        low, high = clustering.score_ranges[tier]
        print(f"  tier {tier}: size {size:>9}  score {low:6.1f}-{high:6.1f} GFLOP/s  {len(members)} devices: {', '.join(kinds)}")
    print(f"reports written to {args.out}")


if __name__ == "__main__":
    main()
