"""Benchmark of capability clustering on synthetic fleets with known tiers.

Run from the repository root:

    python bench/bench_clustering.py            # full run (a few minutes on 2 cores)
    python bench/bench_clustering.py --quick    # smaller sweep, for a smoke test

Writes bench/bench_clustering.md and bench/bench_clustering.json next to this script
(``--quick``: bench_clustering_quick.md/.json).

Fleets. A tier is a device class; its clients' capacity scores (GFLOP/s) are log-normal
around the class centre with standard deviation ``sigma`` in ln units (sigma = 0.1 is a
~10 % spread of sustained throughput inside a class: clock, thermal state, background load).
Class centres start at 0.5 GFLOP/s (an MCU-class board) and each next class is a factor
``F`` stronger; in the main table F is drawn per adjacent pair uniformly in [2, 4] (the gap
between e.g. MCU-class, Pi 4, Pi 5, Jetson CPU, x86 gateway), in the sweep F is fixed.
Tier sizes are balanced, or unbalanced (weights 10**linspace(0, 1, K) shuffled: the largest
tier is 10x the smallest; every tier has at least one client). Everything is seeded.

Bars (issue 4): ARI >= 0.9 on every case with 3-6 tiers and 20-10,000 clients; 100,000
clients cluster in <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edge_sdk._io import atomic_write_text  # noqa: E402
from edge_sdk.clustering import cluster_capabilities  # noqa: E402

logging.disable(logging.WARNING)  # lower tiers below 1/64 of the top tier warn; not of interest here

BASE_GFLOPS = 0.5


def ari(a, b) -> float:
    """Adjusted Rand index (Hubert & Arabie), exact."""
    a = np.unique(np.asarray(a), return_inverse=True)[1]
    b = np.unique(np.asarray(b), return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def comb(v):
        return v * (v - 1) / 2.0

    index = comb(table).sum()
    rows, cols, total = comb(table.sum(1)).sum(), comb(table.sum(0)).sum(), comb(a.size)
    expected = rows * cols / total
    top = (rows + cols) / 2.0
    return 1.0 if top == expected else float((index - expected) / (top - expected))


def make_fleet(seed: int, tiers: int, n: int, sigma: float, separation, unbalanced: bool):
    """Scores and true tiers. ``separation``: a fixed factor or a (low, high) range."""
    rng = np.random.default_rng(seed)
    weights = 10.0 ** np.linspace(0.0, 1.0, tiers) if unbalanced else np.ones(tiers)
    if unbalanced:
        rng.shuffle(weights)
    weights = weights / weights.sum()
    sizes = np.maximum(1, np.floor(weights * n).astype(int))
    while sizes.sum() > n:
        sizes[np.argmax(sizes)] -= 1
    while sizes.sum() < n:
        sizes[np.argmin(sizes / weights)] += 1
    if isinstance(separation, tuple):
        factors = rng.uniform(separation[0], separation[1], tiers - 1)
    else:
        factors = np.full(tiers - 1, float(separation))
    centres = math.log(BASE_GFLOPS) + np.concatenate(([0.0], np.cumsum(np.log(factors))))
    x = np.concatenate([rng.normal(c, sigma, s) for c, s in zip(centres, sizes)])
    truth = np.repeat(np.arange(tiers), sizes)
    return np.exp(x), truth, sizes, factors


def main_table(seeds, ns, sigma, separation):
    rows = []
    for tiers in (3, 4, 5, 6):
        for n in ns:
            for unbalanced in (False, True):
                scores_ari, scott_ari, found, smallest, times, factors_seen = [], [], [], [], [], []
                for seed in seeds:
                    s = 1000 * seed + 100 * tiers + 10 * int(unbalanced) + ns.index(n)
                    scores, truth, sizes, factors = make_fleet(s, tiers, n, sigma, separation, unbalanced)
                    t0 = time.perf_counter()
                    result = cluster_capabilities(scores)
                    times.append(time.perf_counter() - t0)
                    scores_ari.append(ari(truth, result.labels))
                    found.append(result.n_tiers)
                    scott_ari.append(ari(truth, cluster_capabilities(scores, bandwidth="scott").labels))
                    smallest.append(int(sizes.min()))
                    factors_seen.append(float(factors.min()))
                rows.append({
                    "tiers": tiers, "clients": n, "balance": "unbalanced" if unbalanced else "balanced",
                    "ari": scores_ari, "ari_min": min(scores_ari), "tiers_found": found,
                    "ari_scott_min": min(scott_ari), "smallest_tier": min(smallest),
                    "closest_factor": min(factors_seen), "seconds_max": max(times),
                })
                print(f"  K={tiers} n={n:>6} {rows[-1]['balance']:<10} ARI min {min(scores_ari):.3f} "
                      f"(scott {min(scott_ari):.3f}) tiers {found}", flush=True)
    return rows


def sweep(seeds, ns, sigmas, factors):
    grid = []
    for sigma in sigmas:
        for factor in factors:
            values = []
            for tiers in (3, 4, 5, 6):
                for n in ns:
                    for unbalanced in (False, True):
                        for seed in seeds:
                            s = 7000 + 1000 * seed + 100 * tiers + 10 * int(unbalanced) + ns.index(n)
                            scores, truth, *_ = make_fleet(s, tiers, n, sigma, factor, unbalanced)
                            values.append(ari(truth, cluster_capabilities(scores).labels))
            values = np.asarray(values)
            grid.append({"sigma": sigma, "factor": factor, "ari_min": float(values.min()),
                         "ari_mean": float(values.mean()), "share_ge_0_9": float(np.mean(values >= 0.9)),
                         "cases": int(values.size)})
            print(f"  sigma={sigma} F={factor}: min {values.min():.3f}, >=0.9 in {np.mean(values >= 0.9):.0%}",
                  flush=True)
    return grid


def timing(n: int, repeats: int):
    scores, truth, *_ = make_fleet(424242, 6, n, 0.1, (2.0, 4.0), True)
    out = {}
    inputs = {
        "numpy array of scores": scores,
        "list of floats": [float(v) for v in scores],
        "dict id -> score": {f"dev-{i:06d}": float(v) for i, v in enumerate(scores)},
    }
    for name, value in inputs.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = cluster_capabilities(value)
            times.append(time.perf_counter() - t0)
        out[name] = {"median_s": float(np.median(times)), "max_s": float(np.max(times)),
                     "ari": ari(truth, result.labels), "tiers_found": result.n_tiers}
        print(f"  {n} clients, {name}: median {np.median(times):.3f} s, max {np.max(times):.3f} s, "
              f"ARI {out[name]['ari']:.3f}", flush=True)
    return out


def multi_timing(ns, seeds):
    """Multi-feature mode (not a bar): ln GFLOP/s, ln memory, ln latency with the same tiers."""
    from types import SimpleNamespace

    rows = []
    memory_gb = [0.5, 2.0, 4.0, 8.0, 8.0, 16.0]
    for n in ns:
        aris, times = [], []
        for seed in seeds:
            for tiers in (3, 6):
                scores, truth, sizes, _ = make_fleet(9000 + seed * 10 + tiers, tiers, n, 0.1, (2.0, 4.0), True)
                rng = np.random.default_rng(seed)
                mem = np.repeat(np.asarray(memory_gb[:tiers]), sizes) * np.exp(rng.normal(0, 0.1, n))
                lat = 1000.0 / scores * np.exp(rng.normal(0, 0.05, n))
                reports = [_fake_report(i, s, m, t, SimpleNamespace) for i, (s, m, t) in enumerate(zip(scores, mem, lat))]
                t0 = time.perf_counter()
                result = cluster_capabilities(reports, features="multi")
                times.append(time.perf_counter() - t0)
                aris.append(ari(truth, result.labels))
        rows.append({"clients": n, "ari_min": min(aris), "seconds_max": max(times)})
        print(f"  multi n={n}: ARI min {min(aris):.3f}, max {max(times):.2f} s", flush=True)
    return rows


def _fake_report(i, score, mem_gb, latency_ms, ns):
    """A duck-typed stand-in for CapabilityReport with the fields the multi mode reads."""
    size = ns(ratio=1.0, train_step_latency=ns(median_ms=float(latency_ms)))
    return ns(
        device_id=f"dev-{i}",
        capacity=ns(score=float(score), budget_ms=None, budget_mb=None, max_ratio=None),
        device=ns(gflops_fp32=float(score), memory_available_bytes=float(mem_gb) * 2**30,
                  memory_limit_bytes=None, memory_total_bytes=float(mem_gb) * 2**30),
        model=ns(model="cnn", sizes=[size]),
    )


def machine():
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": affinity,
            "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "platform": platform.platform(),
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def write_markdown(doc, path: Path):
    m = doc["machine"]
    lines = [
        "# Capability clustering benchmark",
        "",
        f"Command: `{doc['command']}`  ",
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; "
        f"Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}; {m['platform']}; load average "
        f"(1/5/15 min) at start {m['load_average_at_start']}, at end {m.get('load_average_at_end')} "
        "(timings only mean something on a quiet machine)  ",
        f"Method: 1-D KDE on ln(score), bandwidth {doc['settings']['bandwidth']} ln units, valleys of at "
        f"least {doc['settings']['prominence']} nat (library defaults).",
        "",
        "## Bar 1: known tiers recovered (ARI >= 0.9 on every case)",
        "",
        f"Within-tier spread sigma = {doc['settings']['sigma']} (ln units, log-normal); adjacent classes "
        f"{doc['settings']['separation'][0]:g}-{doc['settings']['separation'][1]:g}x apart (drawn per pair); "
        f"seeds {doc['settings']['seeds']}. ARI per seed; `closest` = the smallest adjacent factor drawn; "
        "`Scott` = the same fleets with Scott's rule, for comparison.",
        "",
        "| tiers | clients | balance | smallest tier | closest | ARI per seed | min ARI | tiers found | Scott min ARI | max time (s) |",
        "|---:|---:|---|---:|---:|---|---:|---|---:|---:|",
    ]
    for r in doc["main"]:
        lines.append(
            f"| {r['tiers']} | {r['clients']:,} | {r['balance']} | {r['smallest_tier']} | {r['closest_factor']:.2f}x | "
            f"{', '.join(f'{v:.3f}' for v in r['ari'])} | **{r['ari_min']:.3f}** | {r['tiers_found']} | "
            f"{r['ari_scott_min']:.3f} | {r['seconds_max']:.3f} |"
        )
    worst = min(r["ari_min"] for r in doc["main"])
    lines += ["", f"Worst case: ARI {worst:.3f} -> bar {'met' if worst >= 0.9 else 'NOT met'}.", ""]
    lines += [
        "## What separation the method needs",
        "",
        "Minimum ARI over all 3-6 tier fleets, sizes "
        f"{', '.join(f'{n:,}' for n in doc['settings']['sweep_clients'])}, balanced and unbalanced, seeds "
        f"{doc['settings']['sweep_seeds']}, with every adjacent pair of classes exactly F apart "
        "(in brackets: share of runs with ARI >= 0.9).",
        "",
    ]
    sigmas = sorted({g["sigma"] for g in doc["sweep"]})
    factors = sorted({g["factor"] for g in doc["sweep"]})
    lines.append("| sigma \\ F | " + " | ".join(f"{f:g}x" for f in factors) + " |")
    lines.append("|---|" + "---:|" * len(factors))
    for s in sigmas:
        cells = []
        for f in factors:
            g = next(g for g in doc["sweep"] if g["sigma"] == s and g["factor"] == f)
            mark = "**" if g["ari_min"] >= 0.9 else ""
            cells.append(f"{mark}{g['ari_min']:.3f}{mark} ({g['share_ge_0_9']:.0%})")
        lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
    lines += ["", "Bold: every run has ARI >= 0.9.", ""]
    t = doc["timing"]
    lines += [
        f"## Bar 2: {t['clients']:,} clients in <= 2 s",
        "",
        f"6 unbalanced tiers, sigma 0.1, 2-4x apart; {t['repeats']} runs each (time of `cluster_capabilities` "
        "only, input already in memory).",
        "",
        "| input | median (s) | max (s) | ARI | tiers found |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, v in t["results"].items():
        lines.append(f"| {name} | {v['median_s']:.3f} | {v['max_s']:.3f} | {v['ari']:.3f} | {v['tiers_found']} |")
    worst_t = max(v["max_s"] for v in t["results"].values())
    lines += ["", f"Slowest run: {worst_t:.3f} s -> bar {'met' if worst_t <= 2.0 else 'NOT met'}.", ""]
    lines += [
        "## Multi-feature mode (not a bar)",
        "",
        "ln GFLOP/s, ln memory (0.5/2/4/8/8/16 GB per class, 10 % spread), ln train-step latency (5 % noise); "
        "3 and 6 unbalanced tiers, sigma 0.1, 2-4x apart; mean shift, bandwidth 0.15 ln units.",
        "",
        "| clients | min ARI | max time (s) |",
        "|---:|---:|---:|",
    ]
    for r in doc["multi"]:
        lines.append(f"| {r['clients']:,} | {r['ari_min']:.3f} | {r['seconds_max']:.2f} |")
    lines.append("")
    atomic_write_text(path, "\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sweep (smoke test)")
    args = parser.parse_args(argv)
    from edge_sdk.clustering import DEFAULT_BANDWIDTH, DEFAULT_PROMINENCE

    info = machine()  # load average at start
    sigma, separation = 0.1, (2.0, 4.0)
    seeds = [0, 1] if args.quick else [0, 1, 2]
    ns = [20, 100, 1000, 10000]
    sweep_seeds = [0] if args.quick else [0, 1]
    sweep_ns = [20, 100, 1000, 10000] if not args.quick else [20, 1000]
    sigmas = [0.05, 0.1, 0.15, 0.2, 0.25]
    factors = [1.5, 2.0, 2.5, 3.0, 4.0]

    print("main table", flush=True)
    main_rows = main_table(seeds, ns, sigma, separation)
    print("separation sweep", flush=True)
    grid = sweep(sweep_seeds, sweep_ns, sigmas, factors)
    print("timing", flush=True)
    n_big, repeats = 100_000, (3 if args.quick else 5)
    timing_rows = timing(n_big, repeats)
    print("multi-feature mode", flush=True)
    multi_rows = multi_timing([20, 1000, 10000] if args.quick else [20, 100, 1000, 10000, 100000], [0])

    info["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    command = "python bench/bench_clustering.py" + (" --quick" if args.quick else "")
    doc = {
        "command": command,
        "machine": info,
        "settings": {"sigma": sigma, "separation": list(separation), "seeds": seeds, "clients": ns,
                     "sweep_seeds": sweep_seeds, "sweep_clients": sweep_ns,
                     "bandwidth": DEFAULT_BANDWIDTH, "prominence": DEFAULT_PROMINENCE,
                     "base_gflops": BASE_GFLOPS},
        "main": main_rows,
        "sweep": grid,
        "timing": {"clients": n_big, "repeats": repeats, "results": timing_rows},
        "multi": multi_rows,
        "bars": {
            "ari_min": min(r["ari_min"] for r in main_rows),
            "ari_bar_met": min(r["ari_min"] for r in main_rows) >= 0.9,
            "time_100k_max_s": max(v["max_s"] for v in timing_rows.values()),
            "time_bar_met": max(v["max_s"] for v in timing_rows.values()) <= 2.0,
        },
    }
    stem = "bench_clustering_quick" if args.quick else "bench_clustering"  # never overwrite the full run
    atomic_write_text(HERE / f"{stem}.json", json.dumps(doc, indent=2) + "\n")
    write_markdown(doc, HERE / f"{stem}.md")
    print(f"wrote {HERE / stem}.md and .json; bars: {doc['bars']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
