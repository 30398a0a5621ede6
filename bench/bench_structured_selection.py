"""Which channels `fiarse-structured` trains: importance alone vs importance plus an
exploration share (rolling window or random draw), against HeteroFL, FedRolex and
Federated Dropout, per submodel size.

The FIARSE-table setup (bench/bench_fiarse_table.py: MNIST-1D, cnn1d width 3, 20 clients in
tiers {1, 1/4, 1/16, 1/64}, Dirichlet 0.3, 40 rounds x 10 local steps, batch 32, lr 0.05)
by default; ``--dataset digits --model resnet8`` gives the digits/resnet8 table. Every row
is one strategy with its options; runs are paired by seed (same split, same initial model).

Bar: the chosen ``fiarse-structured`` row at or above the best baseline (heterofl, fedrolex,
feddropout) at every size, mean over seeds.

Run (one table, ~1 min a run on one core):
    python bench/bench_structured_selection.py --seeds 0 1 2 --rows importance rolling-0.25 heterofl fedrolex
Runs accumulate in the JSON (``--out``); a (row, seed) already there is not run again, so
rows and seeds can be added later. ``--render`` only rewrites the markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine_info, machine_markdown  # noqa: E402  (bench/machine.py)
from federation_args import add_federation_args  # noqa: E402  (bench/federation_args.py)

TIERS = "1,1/4,1/16,1/64"
BASELINES = ("heterofl", "fedrolex", "feddropout")

# label -> (strategy, its options); fiarse-structured rows name every option (its defaults changed
# while this table was measured: a row must mean the same whatever the defaults are)


def _explore(mode: str, share: float, half_life: float = 0.0, by_width: bool = False) -> tuple[str, dict]:
    return ("fiarse-structured", {"explore": mode, "explore_share": share, "explore_half_life": half_life,
                                  "explore_by_width": by_width})


ROWS: dict[str, tuple[str, dict]] = {
    "importance": _explore("none", 0.0),
    "heterofl": ("heterofl", {}),
    "fedrolex": ("fedrolex", {}),
    "feddropout": ("feddropout", {}),
}
for _share in (0.125, 0.25, 0.5):
    ROWS[f"rolling-{_share}"] = _explore("rolling", _share)
    ROWS[f"random-{_share}"] = _explore("random", _share)
for _share, _hl in ((0.5, 10), (0.5, 20), (1.0, 5), (1.0, 10), (1.0, 20)):
    for _mode in ("rolling", "random"):
        ROWS[f"{_mode}-{_share}-hl{_hl}"] = _explore(_mode, _share, float(_hl))
for _mode in ("rolling", "random"):
    for _share in (0.5, 1.0):
        ROWS[f"{_mode}-{_share}-bywidth"] = _explore(_mode, _share, by_width=True)
ROWS["random-1.0-hl10-bywidth"] = _explore("random", 1.0, 10.0, True)
ROWS["default"] = ("fiarse-structured", {})  # whatever the strategy's defaults are in this checkout


def _run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from edge_sdk.simulation import SimulationConfig, run_simulation

    cfg = SimulationConfig(
        strategy=job["strategy"], strategy_options=job["options"], dataset=job["dataset"],
        model=job["model"], clients=job["clients"], tiers=TIERS, alpha=job["alpha"],
        rounds=job["rounds"], local_steps=job["local_steps"], batch_size=job["batch_size"],
        lr=job["lr"], seed=job["seed"], eval_every=job["eval_every"], model_options=job["model_options"],
    )
    res = run_simulation(cfg)
    doc = res.to_dict()
    return {"params": sum(p.numel() for p in res.global_model.parameters()), "row": job["row"],
            "strategy": job["strategy"], "options": job["options"], "seed": job["seed"],
            "final": doc["final"], "final_average": doc["final_average"], "local_accuracy": doc["local_accuracy"],
            "kept_fraction": doc["kept_fraction"], "wall_time_s": doc["wall_time_s"]}


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(values: list[float]) -> str:
    m, s = _ms(values)
    return f"{m * 100:.2f} ± {s * 100:.2f}"


def _is_default(row: str) -> bool:
    """The row runs fiarse-structured with the options it has by default (in this checkout)."""
    from edge_sdk.strategies import create_strategy

    strategy, options = ROWS.get(row, ("", {}))
    if strategy != "fiarse-structured":
        return False
    return create_strategy(strategy, **options).option_values == create_strategy(strategy).option_values


def _markdown(doc: dict) -> str:
    s = doc["setup"]
    tiers = TIERS.split(",")
    runs = doc["runs"]
    rows = list(dict.fromkeys(r["row"] for r in runs))
    seeds_of = {row: sorted(r["seed"] for r in runs if r["row"] == row) for row in rows}
    full = max(len(v) for v in seeds_of.values())
    lines = [
        f"# fiarse-structured channel selection ({s['dataset']}, {s['model']})",
        "",
        f"{s['model']} (options {s['model_options']}, {s.get('params', '?')} parameters) on {s['dataset']}, {s['clients']} "
        f"clients in tiers {{{', '.join(tiers)}}}, Dirichlet {s['alpha']}, {s['rounds']} rounds x "
        f"{s['local_steps']} local steps (batch {s['batch_size']}, lr {s['lr']}, SGD momentum 0.9), all clients "
        "every round. Global test accuracy (%) of the final global model at each size (the strategy's "
        "evaluation plan; for fiarse-structured always the importance ranking alone), mean ± sd over the "
        "seeds listed. Rows are paired by seed (same split, same initial model).",
        "",
        "Rows: `importance` = fiarse-structured without exploration (the old behaviour); `rolling-X` / "
        "`random-X` = a share X of every client's kept channels in each channel group explored (rolling "
        "window that advances by its length each round / random per client and round), the rest by "
        "importance; `-hlH` = that share halves every H rounds; `-bywidth` = the share times the group's kept fraction (about 1/2, 1/4, 1/8 at sizes 1/4, 1/16, 1/64); `default` = the strategy's defaults; '(default)' marks the row whose options are fiarse-structured's defaults in this checkout. s/run is wall time on a shared, loaded machine.",
        "",
        "| row | seeds | " + " | ".join(f"size {t}" for t in tiers) + " | average | local | s/run |",
        "|---|---|" + "---:|" * (len(tiers) + 3),
    ]
    means = {}
    for row in rows:
        rs = sorted((r for r in runs if r["row"] == row), key=lambda r: r["seed"])
        means[row] = {t: _ms([r["final"][t] for r in rs])[0] for t in tiers}
        cells = [_cell([r["final"][t] for r in rs]) for t in tiers]
        label = f"{row} (default)" if _is_default(row) and row != "default" else row
        lines.append(f"| {label} | {','.join(map(str, seeds_of[row]))} | " + " | ".join(cells)
                     + f" | **{_cell([r['final_average'] for r in rs])}** | {_cell([r['local_accuracy'] for r in rs])}"
                     + f" | {statistics.fmean(r['wall_time_s'] for r in rs):.0f} |")
    for base in ([b for b in BASELINES if b in means and len(seeds_of[b]) == full],
                 [b for b in ("heterofl", "fedrolex") if b in means and len(seeds_of[b]) == full]):
        if not base:
            continue
        lines += ["", f"## Against the best of {', '.join(base)} per size (difference in points; rows with all "
                  f"{full} seeds)", "",
                  "| row | " + " | ".join(f"size {t}" for t in tiers) + " | at or above at every size |",
                  "|---|" + "---:|" * len(tiers) + "---|"]
        best = {t: max(means[b][t] for b in base) for t in tiers}
        for row in rows:
            if row in BASELINES or len(seeds_of[row]) != full:
                continue
            d = {t: (means[row][t] - best[t]) * 100 for t in tiers}
            ok = all(v >= -1e-9 for v in d.values())
            label = f"{row} (default)" if _is_default(row) and row != "default" else row
            lines.append(f"| {label} | " + " | ".join(f"{d[t]:+.2f}" for t in tiers) + f" | {'yes' if ok else 'no'} |")
        lines += ["", "Best per size: " + ", ".join(
            f"{t}: {max(base, key=lambda b: means[b][t])} {best[t] * 100:.2f}" for t in tiers) + "."]
    notes = sorted({f"{r['row']}: {r['note']}" for r in runs if r.get("note")})
    if notes:
        lines += ["", "Notes: " + "; ".join(notes) + "."]
    imported = sorted({f"{r['row']} seed {r['seed']}" for r in runs if r.get("imported_from")})
    if imported:
        lines += ["", f"Imported from {runs[[bool(r.get('imported_from')) for r in runs].index(True)]['imported_from']} "
                  f"(same setup and code path; rerunning importance and heterofl at seed 0 here gave bit-identical "
                  f"accuracies): {', '.join(imported)}."]
    m = doc["machine"]
    lines += ["", machine_markdown(m) + f" 1 worker process x 1 thread, nice 19; load average at the last "
              f"write {', '.join(f'{x:.1f}' for x in doc['load_average'])} (other helpers' work was running).",
              "", f"Command: `{doc['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist1d", choices=("mnist1d", "digits"))
    ap.add_argument("--model", default="cnn1d")
    ap.add_argument("--width", type=float, default=3.0, help="model width multiplier")
    add_federation_args(ap)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=["importance", "default", *BASELINES], choices=list(ROWS),
                    metavar="ROW", help=f"rows to run; known: {', '.join(ROWS)}")
    ap.add_argument("--out", default=str(HERE / "bench_structured_selection"), help="output path without suffix")
    ap.add_argument("--render", action="store_true", help="only rewrite the markdown from --out's JSON")
    ap.add_argument("--import-runs", metavar="JSON",
                    help="take the runs of rows importance/heterofl/fedrolex/feddropout from a "
                         "bench_fiarse_table.py result of the same setup (the same code paths: they are "
                         "bit-identical when rerun, see the notes) instead of running them")
    args = ap.parse_args(argv)
    out = Path(args.out)
    from edge_sdk._io import atomic_write_text

    setup = {"dataset": args.dataset, "model": args.model, "model_options": {"width": args.width},
             "clients": args.clients, "alpha": args.alpha, "rounds": args.rounds, "local_steps": args.local_steps,
             "batch_size": args.batch_size, "lr": args.lr, "tiers": TIERS}
    doc = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else None
    if doc is not None:
        differ = {k: (doc["setup"].get(k), v) for k, v in setup.items() if doc["setup"].get(k) != v}
        if differ:
            raise SystemExit(f"{out.with_suffix('.json')}: its setup differs from this run's: {differ}")
    else:
        doc = {"bench": "structured_selection", "setup": dict(setup), "machine": machine_info(),
               "commands": [], "runs": []}
    command = "python bench/bench_structured_selection.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if not args.render:
        os.environ["OMP_NUM_THREADS"] = "1"
        doc["commands"].append(command)
        if args.import_runs:
            _import(doc, Path(args.import_runs), args)
        done = {(r["row"], r["seed"]) for r in doc["runs"]}
        for seed in args.seeds:
            for row in args.rows:
                if (row, seed) in done:
                    continue
                strategy, options = ROWS[row]
                job = {"row": row, "strategy": strategy, "options": options, "seed": seed, "dataset": args.dataset,
                       "model": args.model, "model_options": {"width": args.width}, "clients": args.clients,
                       "alpha": args.alpha, "rounds": args.rounds, "local_steps": args.local_steps,
                       "batch_size": args.batch_size, "lr": args.lr, "eval_every": args.eval_every}
                t0 = time.perf_counter()
                res = _run_one(job)
                doc["setup"]["params"] = res["params"]
                doc["runs"].append(res)
                print(f"[{row} seed {seed}] " + " ".join(f"{t}:{v * 100:.1f}" for t, v in res["final"].items())
                      + f" avg {res['final_average'] * 100:.2f} ({time.perf_counter() - t0:.0f}s)",
                      file=sys.stderr, flush=True)
                doc["load_average"] = list(os.getloadavg())
                doc["command"] = "; ".join(doc["commands"])
                atomic_write_text(out.with_suffix(".json"), json.dumps(doc, indent=2) + "\n")
                atomic_write_text(out.with_suffix(".md"), _markdown(doc))
    doc.setdefault("load_average", list(os.getloadavg()))
    doc["command"] = "; ".join(doc["commands"]) or command
    atomic_write_text(out.with_suffix(".md"), _markdown(doc))
    print(_markdown(doc))
    return 0


# bench_fiarse_table.py's labels of the rows it shares with this bench
_TABLE_LABELS = {"fiarse-structured": "importance", "heterofl": "heterofl", "fedrolex": "fedrolex",
                 "feddropout": "feddropout"}


def _import(doc: dict, path: Path, args: argparse.Namespace) -> None:
    other = json.loads(path.read_text())
    s = other["setup"]
    mine = {"model": args.model, "width": args.width, "clients": args.clients, "alpha": args.alpha,
            "rounds": args.rounds, "local_steps": args.local_steps, "batch_size": args.batch_size, "lr": args.lr}
    differ = {k: (s.get(k), v) for k, v in mine.items() if s.get(k) != v}
    if args.dataset != "mnist1d" or differ or s.get("tiers") != TIERS.split(","):
        raise SystemExit(f"--import-runs {path}: its setup differs from this run's: {differ or args.dataset}")
    done = {(r["row"], r["seed"]) for r in doc["runs"]}
    for r in other["runs"]:
        row = _TABLE_LABELS.get(r["method"])
        if row is None or r["seed"] not in args.seeds or row not in args.rows or (row, r["seed"]) in done:
            continue
        strategy, options = ROWS[row]
        doc["runs"].append({"row": row, "strategy": strategy, "options": options, "seed": r["seed"],
                            "final": r["final"], "final_average": r["final_average"],
                            "local_accuracy": r["local_accuracy"], "kept_fraction": r["kept_fraction"],
                            "wall_time_s": r["wall_time_s"], "imported_from": str(path.name)})


if __name__ == "__main__":
    raise SystemExit(main())
