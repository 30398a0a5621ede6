"""Benchmark of submodel extraction, local training and aggregation on the resnet18 reference.

Bars (issue 3):
* fiarse-structured at size 1/16 trains a resnet18 step (batch 32) >= 4x faster than the
  full model (a ratio measured in the same run, full and submodel steps interleaved);
* planning + extracting a resnet18 submodel takes < 5% of one full training step;
* aggregating 20 updates takes less than one full training step;
* upload bytes per client within 10% of kept_fraction x full model bytes (index overhead
  reported apart).

Run: ``python bench/bench_submodel.py`` (``--quick`` for a short run). Writes
bench/bench_submodel.md and bench/bench_submodel.json next to this file.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edge_sdk import models
from edge_sdk._io import atomic_write_text, check_writable
from edge_sdk.aggregation import aggregate
from edge_sdk.submodel import plan, plan_fedra
from edge_sdk.submodel import structured as _structured
from edge_sdk.training import Update, train_local

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine_info, machine_markdown  # noqa: E402  (bench/machine.py)

TIERS = [1.0, 1 / 4, 1 / 16, 1 / 64]
TIER_NAMES = ["1", "1/4", "1/16", "1/64"]


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def fwd_flops(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()
        model(x)
    model.train()
    return int(fc.get_total_flops())


def state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: usable CPUs)")
    ap.add_argument("--out", default=str(HERE / "bench_submodel"), help="output path without extension")
    args = ap.parse_args(argv)
    check_writable(args.out + ".json")
    check_writable(args.out + ".md")
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    reps = 3 if args.quick else 7
    torch.manual_seed(0)
    results: dict = {"machine": {**machine_info(), "threads": threads}, "reps": reps}

    # ---- train step: full vs submodels (interleaved, same run) ------------------------------
    g = models.create("resnet18")
    x = torch.randn(32, 3, 32, 32)
    y = torch.randint(0, 10, (32,))
    ex = torch.randn(2, 3, 32, 32)
    subs = {"full": copy.deepcopy(g)}
    kept = {"full": 1.0}
    for strat in ("fiarse-structured", "heterofl"):
        p = plan(strat, g, 1 / 16, example_input=ex)
        subs[f"{strat} 1/16"] = p.extract(g)
        kept[f"{strat} 1/16"] = p.kept_fraction
    for mode in ("hard", "surrogate"):
        p = plan("fiarse", g, 1 / 16)
        s = p.extract(g)
        s.gradient = mode
        subs[f"fiarse ({mode}) 1/16"] = s
        kept[f"fiarse ({mode}) 1/16"] = p.kept_fraction
    steps = {k: step_fn(m, x, y) for k, m in subs.items()}
    flops = {k: fwd_flops(m.model if hasattr(m, "dense") else m, ex[:1]) for k, m in subs.items()}
    results["train_step"] = {}
    for nthreads in sorted({1, threads}):
        torch.set_num_threads(nthreads)
        for f in steps.values():  # warm-up
            f()
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(reps):
            for k, f in steps.items():
                times[k] += timed(f, 1)
        med = {k: statistics.median(v) for k, v in times.items()}
        results["train_step"][str(nthreads)] = {
            k: {"kept_fraction": kept[k], "median_s": med[k], "speedup_vs_full": med["full"] / med[k],
                "forward_gflops_per_sample": flops[k] / 1e9, "times_s": times[k]} for k in steps}
    torch.set_num_threads(threads)
    full_step = results["train_step"][str(threads)]["full"]["median_s"]
    results["full_step_s"] = full_step

    thread_counts = sorted({1, threads})

    # ---- plan + extract cost -------------------------------------------------------------
    results["plan_extract"] = {}
    for nthreads in thread_counts:
        torch.set_num_threads(nthreads)
        step_s = results["train_step"][str(nthreads)]["full"]["median_s"]
        _structured._CACHE.clear()
        t = time.perf_counter()
        p = plan("fiarse-structured", g, 1 / 16, example_input=ex)
        p.extract(g)
        cold = time.perf_counter() - t
        pe: dict[str, dict] = {"fiarse-structured (cold, includes fx analysis)": {"median_s": cold}}
        for strat in ("fiarse-structured", "heterofl", "fedrolex", "fiarse"):
            def once(strat=strat):
                q = plan(strat, g, 1 / 16, round=3, example_input=ex)
                q.extract(g)
            once()
            pe[strat] = {"median_s": statistics.median(timed(once, reps))}
        for v in pe.values():
            v["fraction_of_full_step"] = v["median_s"] / step_s
        results["plan_extract"][str(nthreads)] = pe
    torch.set_num_threads(threads)

    # ---- aggregation of 20 updates -------------------------------------------------------
    uploads: dict[str, list] = {}
    full_bytes = state_bytes(g)
    all_updates: dict[str, list[Update]] = {}
    for strat in ("fiarse-structured", "heterofl", "fedrolex", "fiarse"):
        updates = []
        rows = []
        for i in range(20):
            tier = i % 4
            q = plan(strat, g, TIERS[tier], round=1, example_input=ex)
            sub = q.extract(g)
            tensors = q.collect(sub)
            # a perturbed copy, as if trained
            tensors = {n: (t + 1e-3 * torch.randn_like(t)) if t.is_floating_point() else t for n, t in tensors.items()}
            u = Update(strat, q, tensors, num_samples=100 + i)
            updates.append(u)
            if i < 4:
                rows.append({"tier": TIER_NAMES[tier], "kept_fraction": q.kept_fraction, "payload_bytes": u.num_bytes,
                             "index_bytes": u.index_bytes,
                             "payload_over_kept_x_full": u.num_bytes / (q.kept_fraction * full_bytes)})
        uploads[strat] = rows
        all_updates[strat] = updates
    results["aggregate_20"] = {}
    for nthreads in thread_counts:
        torch.set_num_threads(nthreads)
        step_s = results["train_step"][str(nthreads)]["full"]["median_s"]
        agg: dict[str, dict] = {}
        for strat, updates in all_updates.items():
            ts = []
            for _ in range(max(2, reps // 2)):
                m2 = copy.deepcopy(g)
                t = time.perf_counter()
                aggregate(m2, updates, strat)
                ts.append(time.perf_counter() - t)
            agg[strat] = {"median_s": statistics.median(ts), "fraction_of_full_step": statistics.median(ts) / step_s}
        results["aggregate_20"][str(nthreads)] = agg
    torch.set_num_threads(threads)
    results["upload"] = {"full_model_bytes": full_bytes, "per_strategy": uploads}

    # ---- FedRA on vit_tiny: bytes --------------------------------------------------------
    v = models.create("vit_tiny")
    fedra_rows = []
    plans = plan_fedra(v, TIERS, rng=np.random.default_rng(0))
    vx = torch.randn(8, 3, 32, 32)
    vy = torch.randint(0, 10, (8,))
    for name, q in zip(TIER_NAMES, plans):
        sub = q.extract(v)
        st = step_fn(sub, vx, vy)
        st()
        t_step = statistics.median(timed(st, max(2, reps // 2)))
        u = Update("fedra", q, q.collect(sub), 8)
        fedra_rows.append({"capacity": name, "blocks": q.kept_blocks, "kept_fraction": q.kept_fraction,
                           "payload_bytes": u.num_bytes, "index_bytes": u.index_bytes,
                           "step_s_batch8": t_step})
    results["fedra_vit_tiny"] = {"full_model_bytes": state_bytes(v), "clients": fedra_rows}

    results["machine"]["loadavg_end"] = list(os.getloadavg())
    # ---- bars --------------------------------------------------------------------------
    up_dev = max(abs(r["payload_over_kept_x_full"] - 1) for rows in uploads.values() for r in rows)
    bars: dict[str, dict] = {"upload_within_10pct": {"value": up_dev, "pass": up_dev <= 0.10}}
    for nthreads in thread_counts:
        key = str(nthreads)
        fs = results["train_step"][key]["fiarse-structured 1/16"]["speedup_vs_full"]
        pe = results["plan_extract"][key]
        warm_pe = max(pe[s]["fraction_of_full_step"] for s in ("fiarse-structured", "heterofl", "fedrolex", "fiarse"))
        agg_max = max(a["fraction_of_full_step"] for a in results["aggregate_20"][key].values())
        bars[key] = {
            "structured_1_16_speedup_ge_4x": {"value": fs, "pass": fs >= 4.0},
            "plan_extract_lt_5pct_of_step": {"value": warm_pe, "pass": warm_pe < 0.05},
            "aggregate_20_lt_1_step": {"value": agg_max, "pass": agg_max < 1.0},
        }
    results["bars"] = bars
    atomic_write_text(args.out + ".json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(args.out + ".md", render(results))
    print(render(results))
    return 0


def render(r: dict) -> str:
    L = ["# bench_submodel: extraction, local training and aggregation (resnet18, CIFAR shape)", "",
         machine_markdown(r["machine"]),
         f"{r['machine']['threads']} threads; {r['reps']} repetitions, medians. Rerun: `python bench/bench_submodel.py`.",
         f"Load average (1/5/15 min) at start {_load(r['machine']['load_average_at_start'])}, at end "
         f"{_load(r['machine']['loadavg_end'])}: timings are only meaningful on a quiet machine "
         f"(with other processes on the cores, multi-threaded runs of many small ops slow down several-fold).", "",
         "## Bars (each against the full-model step at the same thread count)", "",
         "| bar | threads | value | pass |", "|---|---|---|---|"]
    b = r["bars"]
    for key, v in b.items():
        if key == "upload_within_10pct":
            continue
        s1, s2, s3 = (v["structured_1_16_speedup_ge_4x"], v["plan_extract_lt_5pct_of_step"], v["aggregate_20_lt_1_step"])
        L.append(f"| fiarse-structured 1/16 train step speed-up vs full (batch 32) >= 4x | {key} | "
                 f"{s1['value']:.2f}x | {s1['pass']} |")
        L.append(f"| plan + extract (warm, worst strategy) < 5% of a full step | {key} | "
                 f"{100 * s2['value']:.2f}% | {s2['pass']} |")
        L.append(f"| aggregate 20 updates (worst rule) < 1 full step | {key} | {s3['value']:.2f} steps | {s3['pass']} |")
    u = b["upload_within_10pct"]
    L.append(f"| upload payload within 10% of kept_fraction x full bytes (worst client) | - | "
             f"{100 * u['value']:.1f}% off | {u['pass']} |")
    L += ["", "## Train step, batch 32 (full and submodels interleaved in one run)", "",
          "| threads | model | kept fraction | median step (s) | speed-up | forward GFLOPs/sample |",
          "|---|---|---|---|---|---|"]
    for nthreads, rows in r["train_step"].items():
        for k, v in rows.items():
            L.append(f"| {nthreads} | {k} | {v['kept_fraction']:.4f} | {v['median_s']:.3f} | "
                     f"{v['speedup_vs_full']:.2f}x | {v['forward_gflops_per_sample']:.3f} |")
    L += ["", "FIARSE (parameter level) masks weights in the forward pass: no FLOPs or time saved on a CPU; "
          "the surrogate gradient adds one elementwise rescale per masked tensor.", "",
          "## Plan + extract (resnet18, size 1/16)", "",
          "| threads | strategy | median (ms) | % of full step |", "|---|---|---|---|"]
    for nthreads, rows in r["plan_extract"].items():
        for k, v in rows.items():
            L.append(f"| {nthreads} | {k} | {1000 * v['median_s']:.1f} | {100 * v['fraction_of_full_step']:.2f}% |")
    L += ["", "## Aggregating 20 updates (5 clients per tier 1, 1/4, 1/16, 1/64)", "",
          "| threads | rule | median (s) | full steps |", "|---|---|---|---|"]
    for nthreads, rows in r["aggregate_20"].items():
        for k, v in rows.items():
            L.append(f"| {nthreads} | {k} | {v['median_s']:.3f} | {v['fraction_of_full_step']:.2f} |")
    L += ["", f"## Upload bytes per client (full model state: {r['upload']['full_model_bytes']:,} bytes)", "",
          "Payload = tensor data the client holds (incl. BatchNorm statistics); index = plan (masks / kept "
          "indices) + header, reported apart.", "",
          "| strategy | tier | kept fraction | payload bytes | payload / (kept x full) | index bytes |",
          "|---|---|---|---|---|---|"]
    for s, rows in r["upload"]["per_strategy"].items():
        for row in rows:
            L.append(f"| {s} | {row['tier']} | {row['kept_fraction']:.4f} | {row['payload_bytes']:,} | "
                     f"{row['payload_over_kept_x_full']:.3f} | {row['index_bytes']:,} |")
    L += ["", f"## FedRA on vit_tiny (full model state {r['fedra_vit_tiny']['full_model_bytes']:,} bytes)", "",
          "Upload = LoRA adapters of the drawn blocks + head.", "",
          "| capacity | blocks | kept fraction | payload bytes | index bytes | step (s, batch 8) |", "|---|---|---|---|---|---|"]
    for row in r["fedra_vit_tiny"]["clients"]:
        L.append(f"| {row['capacity']} | {row['blocks']} | {row['kept_fraction']:.3f} | {row['payload_bytes']:,} | "
                 f"{row['index_bytes']:,} | {row['step_s_batch8']:.3f} |")
    return "\n".join(L) + "\n"


def _load(v: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in v)


if __name__ == "__main__":
    raise SystemExit(main())
