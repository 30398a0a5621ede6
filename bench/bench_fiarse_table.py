"""FIARSE's Table 1 at small scale: MNIST-1D (or scikit-learn digits with ``--dataset digits``),
20 clients in 4 tiers {1, 1/4, 1/16, 1/64}, Dirichlet 0.3, the same data, seeds, rounds, local
steps and training settings for every method, 3 seeds.

For every method: the global model's test accuracy at each submodel size, their average (BN
statistics recomputed, and with test-batch BN as the released FIARSE code evaluates), and the
clients' local accuracy, mean and spread over seeds. Methods: fiarse ("hard mask, released
code" and "surrogate gradient, paper"; extra rows with the old "all parameters" budget),
fiarse-structured, heterofl, fedrolex, feddropout (Federated Dropout) and full-model fedavg
(the ceiling, not a feasible method when weak clients cannot hold it). Any registered strategy
can be added as a row with ``--add-to``: its runs join an existing result file of the same setup.

Training settings (``--preset``): ``released`` (default; the released FIARSE code's: lr 0.1, no
momentum, batch 20, unweighted mean over the holders) or ``momentum`` (the earlier tables').

Bar: FIARSE (default gradient, released budget) at least FedRolex's average; the margins to
HeteroFL and FedRolex are paired by seed (same data split, same initial model) and reported
per seed. fiarse-structured against the best baseline at every size.

Run: python bench/bench_fiarse_table.py   (about 20 min on 2 idle cores)
     python bench/bench_fiarse_table.py --width 8 --seeds 0 1 --out bench/bench_fiarse_table_width8
     python bench/bench_fiarse_table.py --dataset digits --model resnet8 --width 1 --out bench/bench_fiarse_table_digits
Add a row: python bench/bench_fiarse_table.py --methods feddropout --add-to bench/bench_fiarse_table.json
Writes bench/bench_fiarse_table.md and bench/bench_fiarse_table.json next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from fractions import Fraction
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine_info, machine_markdown  # noqa: E402  (bench/machine.py)

OUT_MD = HERE / "bench_fiarse_table.md"
OUT_JSON = HERE / "bench_fiarse_table.json"
TIERS = "1,1/4,1/16,1/64"

# label -> (strategy, its options). FIARSE's two gradient modes carry the labels the README
# uses: "hard mask (released code)" and "surrogate gradient (paper)".
METHODS = {
    "fiarse (hard mask, released code)": ("fiarse", {"gradient": "hard"}),
    "fiarse (surrogate gradient, paper)": ("fiarse", {"gradient": "surrogate"}),
    "fiarse-structured": ("fiarse-structured", {}),
    "heterofl": ("heterofl", {}),
    "fedrolex": ("fedrolex", {}),
    "feddropout": ("feddropout", {}),
    "fedavg (full model, ceiling)": ("fedavg", {}),
}
# optional rows (not run by default): --methods ...
EXTRA_METHODS = {
    "fiarse (surrogate, budget all)": ("fiarse", {"gradient": "surrogate", "budget": "all"}),
    "fiarse (hard, budget all)": ("fiarse", {"gradient": "hard", "budget": "all"}),
    "fiarse (layer threshold)": ("fiarse", {"gradient": "hard", "scope": "layer"}),
    "fiarse-structured (importance only)": ("fiarse-structured", {"explore": "none"}),
    # the default before session 5 (a constant explored share); "fiarse-structured" is the default
    # (half-life 30) and its rows before session 5 were relabelled to this one
    "fiarse-structured (random, constant share)": ("fiarse-structured", {
        "explore": "random", "explore_share": 1.0, "explore_by_width": True, "explore_half_life": 0.0}),
}
# exploration that fades (the explored share halves every H rounds); every option named, so
# that a row means the same whatever the strategy's defaults are
for _half_life in (10, 20, 40, 60):  # 30: the default, row fiarse-structured
    EXTRA_METHODS[f"fiarse-structured (random, half-life {_half_life})"] = ("fiarse-structured", {
        "explore": "random", "explore_share": 1.0, "explore_by_width": True, "explore_half_life": float(_half_life)})
# the importance ranking remembered over rounds (an exponential average), on top of the default
for _memory in (0.5, 0.8, 0.9):
    EXTRA_METHODS[f"fiarse-structured (importance memory {_memory})"] = ("fiarse-structured", {
        "importance_memory": _memory})
# a channel kept at a size in the previous round counts (1 + h) times its importance, on top of the
# default; h = 100 freezes the first round's ranking (with and without the default's exploration)
for _hysteresis in (0.1, 0.3):
    EXTRA_METHODS[f"fiarse-structured (rank hysteresis {_hysteresis:g})"] = ("fiarse-structured", {
        "rank_hysteresis": _hysteresis})
EXTRA_METHODS["fiarse-structured (frozen ranking)"] = ("fiarse-structured", {"rank_hysteresis": 100.0})
EXTRA_METHODS["fiarse-structured (importance only, frozen ranking)"] = ("fiarse-structured", {
    "explore": "none", "rank_hysteresis": 100.0})
FIARSE_LABELS = [m for m, (strategy, _) in {**METHODS, **EXTRA_METHODS}.items() if strategy == "fiarse"]
# training settings: "released" is the released FIARSE code's (lr 0.1, no momentum, batch 20,
# unweighted mean over the holders); "momentum" the earlier tables' (lr 0.05, momentum 0.9, batch 32)
PRESETS = {
    "released": {"lr": 0.1, "momentum": 0.0, "batch_size": 20, "sample_weights": "equal"},
    "momentum": {"lr": 0.05, "momentum": 0.9, "batch_size": 32, "sample_weights": "auto"},
}


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from edge_sdk.simulation import SimulationConfig, run_simulation

    cfg = SimulationConfig(
        strategy=job["strategy"], strategy_options=job["options"], dataset=job.get("dataset", "mnist1d"),
        model=job["model"], clients=job["clients"], tiers=TIERS, alpha=job["alpha"],
        rounds=job["rounds"], local_steps=job["local_steps"], batch_size=job["batch_size"],
        lr=job["lr"], momentum=job.get("momentum", 0.9), sample_weights=job.get("sample_weights", "auto"),
        seed=job["seed"], eval_every=job["eval_every"], model_options=job["model_options"],
    )
    res = run_simulation(cfg)
    doc = res.to_dict()
    masks = None
    if job["strategy"] == "fiarse":  # where the smallest size's weights sit, layer by layer
        from edge_sdk import submodel

        smallest = min(Fraction(t) for t in TIERS.split(","))
        opts = {k: v for k, v in job["options"].items() if k in ("scope", "budget")}
        plan = submodel.plan("fiarse", res.global_model, float(smallest), **opts)
        masks = {n: [int(m.sum()), int(m.numel())] for n, m in plan.masks.items()}
    return {
        "fiarse_smallest_mask": masks,
        "method": job["method"],
        "seed": job["seed"],
        "final": doc["final"],
        "final_average": doc["final_average"],
        "final_by_bn_stats": doc["final_by_bn_stats"],
        "local_accuracy": doc["local_accuracy"],
        "local_accuracy_per_tier": doc["local_accuracy_per_tier"],
        "kept_fraction": doc["kept_fraction"],
        "upload_bytes_per_round": doc["rounds"][-1]["upload_bytes"],
        "curve": [
            {"round": r["round"], "global_accuracy": r["global_accuracy"], "train_loss": r["train_loss"]}
            for r in doc["rounds"] if r["global_accuracy"]
        ],
        "wall_time_s": doc["wall_time_s"],
    }


def _ms(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, sd


def _fmt(values: list[float], scale: float = 100.0) -> str:
    mean, sd = _ms(values)
    return f"{mean * scale:.2f} ± {sd * scale:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--local-steps", type=int, default=10)
    ap.add_argument("--preset", choices=list(PRESETS), default="released",
                    help="training settings for every method: released (the released FIARSE code's: lr 0.1, "
                         "no momentum, batch 20, unweighted mean; default) or momentum (lr 0.05, momentum 0.9, "
                         "batch 32, sample-weighted mean)")
    ap.add_argument("--dataset", choices=["mnist1d", "digits"], default="mnist1d")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--model", default="cnn1d")
    ap.add_argument("--width", type=float, default=3.0,
                    help="global model width multiplier (3: 96 channels, 98k parameters; see the notes)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2, help="processes (1 thread each)")
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, *EXTRA_METHODS],
                    metavar="METHOD")
    ap.add_argument("--out", default=str(OUT_MD.with_suffix("")), help="output path without suffix")
    ap.add_argument("--render", metavar="JSON",
                    help="only recompute the summary and rewrite the markdown of an existing result JSON")
    ap.add_argument("--add-to", metavar="JSON",
                    help="run only --methods and add their runs to this result file (its setup must be the same)")
    args = ap.parse_args(argv)
    if args.render:
        from edge_sdk._io import atomic_write_text

        doc = json.loads(Path(args.render).read_text())
        # the summary is recomputed from the runs (rows in their order, then runs merged in by hand)
        methods = list(dict.fromkeys([*doc["summary"], *(r["method"] for r in doc["runs"])]))
        doc["summary"], doc["margins"] = _summarize(doc["runs"], methods, doc["setup"]["tiers"])
        bar = _bar(doc["margins"])
        if bar:
            doc["bar"] = bar
        atomic_write_text(Path(args.render), json.dumps(doc, indent=2) + "\n")
        md = _markdown(doc, doc["setup"]["tiers"])
        atomic_write_text(Path(args.render).with_suffix(".md"), md)
        print(md)
        return 0

    preset = PRESETS[args.preset]
    args.batch_size, args.lr = preset["batch_size"], preset["lr"]
    model_options = {"width": args.width}
    table = {**METHODS, **EXTRA_METHODS}
    jobs = [
        {
            "method": m, "strategy": table[m][0], "options": table[m][1], "seed": s,
            "model": args.model, "clients": args.clients, "alpha": args.alpha, "rounds": args.rounds,
            "local_steps": args.local_steps, "batch_size": args.batch_size, "lr": args.lr,
            "momentum": preset["momentum"], "sample_weights": preset["sample_weights"], "dataset": args.dataset,
            "eval_every": args.eval_every, "model_options": model_options,
        }
        for s in args.seeds for m in args.methods
    ]
    previous = _previous(args) if args.add_to else None
    t0 = time.perf_counter()
    results: list[dict] = []
    if args.workers <= 1:
        _init_worker()
        for job in jobs:
            results.append(_run_one(job))
            _log(results[-1])
    else:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"), initializer=_init_worker) as ex:
            for res in ex.map(_run_one, jobs):
                results.append(res)
                _log(res)
    wall = time.perf_counter() - t0
    added = None
    methods = list(args.methods)
    command = "python bench/bench_fiarse_table.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if previous is not None:  # the earlier rows first, as they were; a re-run method replaces its runs
        methods = [m for m in previous["summary"] if m not in methods] + methods
        results = [r for r in previous["runs"] if r["method"] not in args.methods] + results
        added = [*previous.get("added", []), {"methods": list(args.methods), "machine": machine_info(),
                                               "wall_time_s": wall, "load_average": list(os.getloadavg())}]
        wall += previous["wall_time_s"]
        command = f"{previous['command']}; then {command.strip()}"

    tiers = TIERS.split(",")
    summary, margins = _summarize(results, methods, tiers)

    doc = {
        "bench": "fiarse_table",
        "command": command.strip(),
        "machine": previous["machine"] if previous is not None else machine_info(),
        "setup": {
            "dataset": DATASET_NOTES[args.dataset], "dataset_name": args.dataset, "preset": args.preset,
            "model": args.model, "width": args.width, "clients": args.clients, "tiers": tiers,
            "params": _param_count(args.model, model_options, args.dataset),
            "alpha": args.alpha, "rounds": args.rounds, "local_steps": args.local_steps,
            "batch_size": args.batch_size, "lr": args.lr,
            "optimizer": f"SGD momentum {preset['momentum']}" if preset["momentum"] else "SGD without momentum",
            "mean": ("unweighted mean over the holders" if preset["sample_weights"] == "equal"
                     else "sample-weighted mean over the holders"),
            "seeds": args.seeds, "workers": args.workers, "threads_per_worker": 1,
        },
        "wall_time_s": wall,
        "summary": summary,
        "margins": margins,
        "runs": results,
    }
    if added:
        doc["added"] = added
    bar = _bar(margins)
    if bar:
        doc["bar"] = bar
    out = Path(args.out)
    from edge_sdk._io import atomic_write_text

    atomic_write_text(out.with_suffix(".json"), json.dumps(doc, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), _markdown(doc, tiers))
    print(_markdown(doc, tiers))
    return 0


DATASET_NOTES = {
    "mnist1d": "mnist1d (4000 train / 1000 test, generated offline, data seed = run seed)",
    "digits": "scikit-learn digits (8x8 images; 1438 train / 359 test, split seeded by the run seed)",
}
# the bar is judged on FIARSE as shipped: the default gradient mode and budget (edge_sdk.submodel.fiarse)
BAR_LABEL = "fiarse (surrogate gradient, paper)"


def _summarize(results: list[dict], methods: list[str], tiers: list[str]) -> tuple[dict, dict]:
    """Per method: accuracy at every size, averages (per BN mode too), local accuracy; and the
    margins of FIARSE, fiarse-structured and feddropout to HeteroFL and FedRolex, paired by seed."""
    by_method = {m: sorted((r for r in results if r["method"] == m), key=lambda r: r["seed"]) for m in methods}
    summary = {}
    for m, rs in by_method.items():
        summary[m] = {
            "global": {t: _ms([r["final"][t] for r in rs]) for t in tiers},
            "average": _ms([r["final_average"] for r in rs]),
            # the same final models evaluated with every BN mode (edge_sdk.simulation.BN_STATS)
            "average_by_bn_stats": {mode: _ms([statistics.fmean(acc.values()) for acc in
                                               (r["final_by_bn_stats"][mode] for r in rs)])
                                    for mode in (rs[0].get("final_by_bn_stats") or {})
                                    if all("final_by_bn_stats" in r for r in rs)},
            "local": _ms([r["local_accuracy"] for r in rs]),
            "kept_fraction": rs[0]["kept_fraction"],
            "seconds_per_run": statistics.fmean(r["wall_time_s"] for r in rs),
        }
    margins = {}
    for ref in ("heterofl", "fedrolex"):
        for fl in (*FIARSE_LABELS, "fiarse-structured", "fiarse-structured (importance only)", "feddropout"):
            if fl in by_method and ref in by_method:
                a = {r["seed"]: r["final_average"] for r in by_method[fl]}
                b = {r["seed"]: r["final_average"] for r in by_method[ref]}
                diffs = [a[s] - b[s] for s in sorted(a) if s in b]
                mean, sd = _ms(diffs)
                margins[f"{fl} - {ref}"] = {"per_seed": diffs, "mean": mean, "std": sd, "min": min(diffs)}
    return summary, margins


def _previous(args: argparse.Namespace) -> dict:
    """The result file rows are added to, refused if its setup differs from this run's."""
    doc = json.loads(Path(args.add_to).read_text())
    s = doc["setup"]
    mine = {"model": args.model, "width": args.width, "clients": args.clients, "alpha": args.alpha,
            "rounds": args.rounds, "local_steps": args.local_steps, "batch_size": args.batch_size, "lr": args.lr,
            "seeds": list(args.seeds), "preset": args.preset, "dataset_name": args.dataset}
    defaults = {"preset": "momentum", "dataset_name": "mnist1d"}  # files written before these existed
    differ = {k: (s.get(k, defaults.get(k)), v) for k, v in mine.items() if s.get(k, defaults.get(k)) != v}
    if differ:
        raise SystemExit(f"--add-to {args.add_to}: its setup differs from this run's: {differ}")
    args.out = str(Path(args.add_to).with_suffix(""))
    return doc


def _bar(margins: dict) -> dict | None:
    key = f"{BAR_LABEL} - fedrolex"
    if key not in margins:
        return None
    return {"statement": f"FIARSE's average global accuracy ({BAR_LABEL}, the default, released budget) is at least "
                         "FedRolex's (mean over seeds)",
            "passed": margins[key]["mean"] >= 0}


def _log(res: dict) -> None:
    print(f"[{res['method']} seed {res['seed']}] avg {res['final_average']:.4f} local {res['local_accuracy']:.4f} "
          f"({res['wall_time_s']:.0f}s)", file=sys.stderr, flush=True)


def _markdown(doc: dict, tiers: list[str]) -> str:
    s = doc["setup"]
    m = doc["machine"]
    dataset = s.get("dataset_name", "mnist1d")
    title = {"mnist1d": "MNIST-1D", "digits": "scikit-learn digits"}[dataset]
    mean_text = s.get("mean", "sample-weighted mean over the holders")
    lines = [
        f"# FIARSE Table 1, small scale ({title})",
        "",
        f"{s['model']} (width {s['width']}, {s.get('params', 0):,} parameters) on {title}, {s['clients']} clients in "
        f"{len(tiers)} tiers {{{', '.join(tiers)}}} ({s['clients'] // len(tiers)} each), Dirichlet {s['alpha']}, "
        f"{s['rounds']} rounds x {s['local_steps']} local steps (batch {s['batch_size']}, lr {s['lr']}, "
        f"{s['optimizer']}), {mean_text}, all clients every round, seeds {s['seeds']}"
        + (f" (training settings: `--preset {s['preset']}`)" if "preset" in s else "")
        + ". Accuracy in %, mean ± standard deviation over seeds.",
        "",
        "Global: the final global model's test accuracy at each submodel size "
        "(the strategy's plan at that size extracted from the global model; fedavg: the full "
        "model for every size), BatchNorm statistics recomputed on the clients' training data. "
        "Test-batch BN: the same final models evaluated as the released FIARSE code evaluates "
        "(each test batch of 20 normalised by its own statistics). Local: mean over clients of their size's "
        "submodel's accuracy on test data with the client's own label mix. Kept fraction: share of all "
        "parameters each size holds.",
        "",
        "| method | " + " | ".join(f"size {t}" for t in tiers)
        + " | average | average, test-batch BN | local | kept fraction | s/run |",
        "|---|" + "---:|" * (len(tiers) + 5),
    ]
    for name, row in doc["summary"].items():
        cells = [f"{row['global'][t][0] * 100:.2f} ± {row['global'][t][1] * 100:.2f}" for t in tiers]
        kept = "/".join(f"{row['kept_fraction'][t]:.3f}" for t in tiers)
        static = row.get("average_by_bn_stats", {}).get("test-batch")
        static_cell = f"{static[0] * 100:.2f} ± {static[1] * 100:.2f}" if static else "-"
        lines.append(
            f"| {name} | " + " | ".join(cells)
            + f" | **{row['average'][0] * 100:.2f} ± {row['average'][1] * 100:.2f}** | {static_cell}"
            + f" | {row['local'][0] * 100:.2f} ± {row['local'][1] * 100:.2f} | {kept} | {row['seconds_per_run']:.0f} |"
        )
    for refs in (STRUCTURED_BASELINES, STRUCTURED_BASELINES[:2]):
        best = _best_baseline_per_size(doc, tiers, refs)
        if not best:
            continue
        lines += ["", f"## fiarse-structured against the best of {' / '.join(refs)} per size (mean over seeds)", "",
                  "| row | " + " | ".join(f"size {t}" for t in tiers) + " | at or above at every size |",
                  "|---|" + "---:|" * len(tiers) + "---|",
                  "| best baseline | " + " | ".join(f"{best[t][0]} {best[t][1] * 100:.2f}" for t in tiers) + " | |"]
        for name in _structured_rows(doc):
            d = [(doc["summary"][name]["global"][t][0] - best[t][1]) * 100 for t in tiers]
            lines.append(f"| {name} | " + " | ".join(f"{v:+.2f}" for v in d)
                         + f" | {'yes' if all(v >= -1e-9 for v in d) else 'no'} |")
    lines += ["", "## Bar: FIARSE vs HeteroFL / FedRolex (average global accuracy, paired by seed)", ""]
    lines += ["| comparison | margin (points) | per seed | min |", "|---|---:|---|---:|"]
    for name, mg in doc["margins"].items():
        per = ", ".join(f"{d * 100:+.2f}" for d in mg["per_seed"])
        lines.append(f"| {name} | {mg['mean'] * 100:+.2f} ± {mg['std'] * 100:.2f} | {per} | {mg['min'] * 100:+.2f} |")
    bar = _bar(doc["margins"])
    if bar:
        lines += ["", f"Bar ({bar['statement']}): **{'passed' if bar['passed'] else 'FAILED'}**."]
    mask_lines = _mask_summary(doc)
    if mask_lines:
        lines += ["", "## Where FIARSE's smallest submodel sits", "",
                  "Weights the final global model's size-" + min(tiers, key=Fraction)
                  + " FIARSE plan holds per maskable tensor (mean over seeds; held / total):", ""]
        lines += mask_lines
    lines += [
        "",
        "## Setup notes",
        "",
        _model_note(s),
        "* BatchNorm: before a submodel is evaluated, its BN statistics are recomputed on the "
        "clients' training data (HeteroFL's static BN; `bn_stats=\"recompute\"`, the simulation's "
        "default), the same for every method; the test-batch column evaluates the same final models "
        "with `bn_stats=\"test-batch\"`. Using the running statistics as aggregated instead cost "
        "every heterogeneous method accuracy in a trial run (width 1, 30 rounds: FIARSE 36 -> 22 %, "
        "HeteroFL 46 -> 33 % average), since one set of statistics cannot fit every size.",
        "* Same data split, initial model, rounds, local steps, batch size and learning rate for "
        "every method (paired by seed); nothing is tuned per method. FedRolex is evaluated with the "
        "window of the last round; HeteroFL with the leftmost channels.",
        "* s/run: FIARSE trains a masked dense model, so every client pays the full model's compute "
        "(plus the masking); the structured methods train physically smaller models.",
        "",
        (machine_markdown(m) if "effective_cpus" in m else
         f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, torch {m['torch']}, Python {m['python']}.")
        + f" {s['workers']} worker processes x {s['threads_per_worker']} thread; total wall time "
        f"{doc['wall_time_s'] / 60:.1f} min.",
        "",
        f"Command: `{doc['command']}`",
        "",
    ]
    for note in [doc.get("note_importance_only"), *doc.get("notes", [])]:
        if note:
            lines.insert(-3, "")
            lines.insert(-3, note)
    for add in doc.get("added", []):
        lines.insert(-3, f"Rows {', '.join(add['methods'])} were added later with `--add-to` (same setup, seeds and "
                     f"data; the other rows' code paths are pinned by tests/test_strategy_pins.py): "
                     f"{add['wall_time_s'] / 60:.1f} min, load average at the end "
                     f"{', '.join(f'{x:.1f}' for x in add['load_average'])} (other work was running).")
        lines.insert(-3, "")
    return "\n".join(lines)


STRUCTURED_BASELINES = ("heterofl", "fedrolex", "feddropout")


def _structured_rows(doc: dict) -> list[str]:
    """The summary's fiarse-structured rows (the default and every variant), in table order."""
    table = {**METHODS, **EXTRA_METHODS}
    return [m for m in doc["summary"] if table.get(m, ("",))[0] == "fiarse-structured"]


def _best_baseline_per_size(doc: dict, tiers: list[str], refs: tuple[str, ...] = STRUCTURED_BASELINES
                            ) -> dict[str, tuple[str, float]]:
    """size -> (the best of ``refs`` at that size, its mean accuracy); empty without those rows."""
    summary = doc["summary"]
    present = [m for m in refs if m in summary]
    if not _structured_rows(doc) or not present:
        return {}
    out = {}
    for t in tiers:
        ref = max(present, key=lambda m: summary[m]["global"][t][0])
        out[t] = (ref, summary[ref]["global"][t][0])
    return out


def _param_count(model: str, kwargs: dict, dataset: str = "mnist1d") -> int:
    from edge_sdk import datasets
    from edge_sdk.simulation import SimulationConfig, build_model

    data = datasets.load(dataset, seed=0)
    net = build_model(SimulationConfig(model=model, model_options=kwargs, dataset=dataset), data.input_shape,
                      data.num_classes)
    return sum(p.numel() for p in net.parameters())


def _model_note(setup: dict) -> str:
    if setup["model"] == "cnn1d" and setup["width"] == 3.0:
        return ("* Model: cnn1d at width 3 (96 channels, 98k parameters), the width of the earlier tables. With "
        "the old budget (`budget=all`: the held share of *all* parameters is the ratio) the always-held norm "
        "parameters take 38 % of the 1/64 budget at width 3 and all of it at width 1; the released rule "
        "(`budget=maskable`, the default) holds int(ratio x maskable) conv/linear weights and biases with "
        "the norm parameters on top, so FIARSE's kept fraction of all parameters is a little above the ratio.")
    params = f" ({setup['params']:,} parameters)" if "params" in setup else ""
    if setup.get("dataset_name") == "digits":
        return (f"* Model: {setup['model']} at width {setup['width']}{params} on scikit-learn's digits (8x8 "
                "grey images, 10 classes, shipped with scikit-learn): a second model family (residual 2-d "
                "convolutions) and data set with everything else as in the MNIST-1D table.")
    return (f"* Model: {setup['model']} at width {setup['width']}{params}: a scale check of the width-3 table "
            "(bench_fiarse_table.md) with everything else the same. The smallest size holds about "
            "1/64 of the parameters, so a wider model gives FIARSE's unstructured 1/64 plan more weights per layer.")


def _mask_summary(doc: dict) -> list[str]:
    out = []
    for method in doc["summary"]:
        runs = [r for r in doc["runs"] if r["method"] == method and r.get("fiarse_smallest_mask")]
        if not runs:
            continue
        names = list(runs[0]["fiarse_smallest_mask"])
        cells = []
        for n in names:
            held = statistics.fmean(r["fiarse_smallest_mask"][n][0] for r in runs)
            cells.append(f"{n} {held:.0f}/{runs[0]['fiarse_smallest_mask'][n][1]}")
        out.append(f"* {method}: " + ", ".join(cells))
    return out


if __name__ == "__main__":
    sys.exit(main())
