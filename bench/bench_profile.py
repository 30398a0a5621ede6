"""Benchmark for issue 2 (foundation): profile wall time, FLOP exactness, score stability.

Run:  python bench/bench_profile.py        (about 3 minutes on 2 cores)
Writes bench/bench_profile.md and bench/bench_profile.json.

Bars:
* `edge-sdk profile --quick --json -` <= 10 s; the full default profile <= 60 s (wall time
  of the whole command, Python start-up included);
* count_flops == the closed-form count for every reference model, forward and training
  step, with and without no_grad (and in eval mode);
* ten quick profiles in a row: capacity score max/min <= 1.10.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import machine_info, machine_markdown  # noqa: E402

from edge_sdk import models  # noqa: E402
from edge_sdk.models.analytic import analytic_flops  # noqa: E402
from edge_sdk.profiler import CapabilityReport, count_flops  # noqa: E402

CLI = [sys.executable, "-m", "edge_sdk.cli"]


def timed_profile(*args: str) -> tuple[float, CapabilityReport]:
    start = time.perf_counter()
    result = subprocess.run([*CLI, "profile", *args, "--json", "-"], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, CapabilityReport.from_json(result.stdout)


def flop_exactness() -> list[dict[str, object]]:
    rows = []
    for name in models.names():
        for width in (1.0, 0.5):
            model = models.create(name, width=width)
            x = torch.randn(4, *models.spec(name).input_shape)
            for backward in (False, True):
                expected = analytic_flops(model, 4, backward=backward)
                plain = count_flops(model.train(), x, backward=backward)
                model.eval()
                with torch.no_grad():
                    no_grad = count_flops(model, x, backward=backward)
                rows.append({
                    "model": name, "width": width, "pass": "train step" if backward else "forward",
                    "analytic": expected, "count_flops": plain, "count_flops_no_grad_eval": no_grad,
                    "exact": plain == expected == no_grad,
                })
    return rows


def main() -> None:
    info = machine_info()
    torch.set_num_threads(info["effective_cpus"])
    quick_time, _ = timed_profile("--quick")
    full_time, full_report = timed_profile()
    scores = []
    quick_times = []
    for _ in range(10):
        seconds, report = timed_profile("--quick")
        quick_times.append(seconds)
        scores.append(report.capacity.score)
    spread = max(scores) / min(scores)
    flops = flop_exactness()
    results = {
        "machine": info,
        "command": "python bench/bench_profile.py",
        "quick_profile_seconds": round(quick_time, 2),
        "quick_profile_seconds_10_runs": [round(t, 2) for t in quick_times],
        "full_profile_seconds": round(full_time, 2),
        "full_profile_model": full_report.model.model if full_report.model else None,
        "scores_10_quick": scores,
        "score_spread_max_over_min": round(spread, 4),
        "flops": flops,
        "bars": {
            "quick <= 10 s": max([quick_time, *quick_times]) <= 10,
            "full <= 60 s": full_time <= 60,
            "flops exact": all(row["exact"] for row in flops),
            "score spread <= 1.10": spread <= 1.10,
        },
    }
    (HERE / "bench_profile.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# bench_profile: profile time, FLOP exactness, score stability",
        "",
        machine_markdown(info),
        "",
        "Command: `python bench/bench_profile.py`",
        "",
        "| measure | value | bar | met |",
        "|---|---|---|---|",
        f"| `edge-sdk profile --quick --json -` wall time | {quick_time:.1f} s (10 more runs: max {max(quick_times):.1f} s, median {statistics.median(quick_times):.1f} s) | <= 10 s | {results['bars']['quick <= 10 s']} |",
        f"| `edge-sdk profile --json -` (default: resnet18, batch 32, sizes 1..1/64) wall time | {full_time:.1f} s | <= 60 s | {results['bars']['full <= 60 s']} |",
        f"| capacity score over 10 quick profiles | min {min(scores):.1f}, max {max(scores):.1f} GFLOP/s, max/min {spread:.3f} | <= 1.10 | {results['bars']['score spread <= 1.10']} |",
        f"| FLOP counts equal to the closed form | {sum(r['exact'] for r in flops)}/{len(flops)} cases | all | {results['bars']['flops exact']} |",
        "",
        "FLOP counts (batch 4; `count_flops` in train mode and again in eval mode under `torch.no_grad()`):",
        "",
        "| model | width | pass | closed form | count_flops | no_grad + eval | exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in flops:
        lines.append(
            f"| {row['model']} | {row['width']} | {row['pass']} | {row['analytic']:,} | {row['count_flops']:,} | "
            f"{row['count_flops_no_grad_eval']:,} | {row['exact']} |"
        )
    (HERE / "bench_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
