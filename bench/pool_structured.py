"""fiarse-structured against the baselines per size, pooled over the FIARSE tables' seed sets.

Reads the result files of bench_fiarse_table.py for seeds 0-2 and 3-5 (MNIST-1D cnn1d width 3
and digits/resnet8, released settings) and writes bench/bench_structured_pooled.md: per table,
the mean of the six runs of each method (paired data splits and initial models per seed), and
each fiarse-structured row's margin to the best baseline at every size, against HeteroFL /
FedRolex / Federated Dropout and against HeteroFL / FedRolex.

Run: python bench/pool_structured.py   (seconds: no training, only the committed JSON files)
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLES = {
    "MNIST-1D, cnn1d width 3": ("bench_fiarse_table.json", "bench_fiarse_table_seeds345.json"),
    "digits, resnet8": ("bench_fiarse_table_digits.json", "bench_fiarse_table_digits_seeds345.json"),
}
BASELINES = ("heterofl", "fedrolex", "feddropout")
ROWS = ("fiarse-structured", "fiarse-structured (random, constant share)", "fiarse-structured (random, half-life 40)",
        "fiarse-structured (importance memory 0.5)", "fiarse-structured (rank hysteresis 0.1)",
        "fiarse-structured (rank hysteresis 0.3)", "fiarse-structured (frozen ranking)",
        "fiarse-structured (importance only, frozen ranking)")


def pooled(files: tuple[str, ...]) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """tiers, method -> tier -> the final accuracy of every run (all files, all seeds)."""
    out: dict[str, dict[str, list[float]]] = {}
    tiers: list[str] = []
    for name in files:
        doc = json.loads((HERE / name).read_text())
        tiers = doc["setup"]["tiers"]
        for run in doc["runs"]:
            for t in tiers:
                out.setdefault(run["method"], {}).setdefault(t, []).append(run["final"][t])
    return tiers, out


def markdown() -> str:
    lines = ["# fiarse-structured against the baselines, pooled over seeds 0-5", "",
             "From the committed result files of `bench/bench_fiarse_table.py` (released settings: lr 0.1, "
             "no momentum, batch 20, unweighted mean over holders; 20 clients in tiers {1, 1/4, 1/16, 1/64}, "
             "Dirichlet 0.3): seeds 0-2 and 3-5 of each table, 6 runs per method. Accuracy in %, mean over the "
             "runs; margin = the row minus the best baseline at that size, in points. `fiarse-structured` is the "
             "default (explored share halving every 30 rounds), chosen among half-lives 10-60 and the constant "
             "share on seeds 0-2; seeds 3-5 were run afterwards for it, half-life 40, the constant share (the "
             "earlier default) and the baselines; the importance-memory row (an average of the importance over "
             "rounds, on top of the default) was tried after that, on all six seeds, and last (session 6, all six "
             "seeds, with the evaluation ranking the merged model as the next round does) the rank-hysteresis "
             "rows: a channel a size kept in the previous round counts (1 + h) times its importance; "
             "`frozen ranking` is h = 100, with the default's exploration or without any.", ""]
    for title, files in TABLES.items():
        tiers, runs = pooled(files)
        mean = {m: {t: statistics.fmean(v) * 100 for t, v in per.items()} for m, per in runs.items()}
        counts = {m: len(next(iter(per.values()))) for m, per in runs.items()}
        lines += [f"## {title}", "", "| method | runs | " + " | ".join(f"size {t}" for t in tiers) + " |",
                  "|---|---:|" + "---:|" * len(tiers)]
        for m in (*BASELINES, *ROWS):
            if m in mean:
                lines.append(f"| {m} | {counts[m]} | " + " | ".join(f"{mean[m][t]:.2f}" for t in tiers) + " |")
        for refs in (BASELINES, BASELINES[:2]):
            best = {t: max(refs, key=lambda b: mean[b][t]) for t in tiers}
            lines += ["", f"Margin to the best of {' / '.join(refs)}:", "",
                      "| row | " + " | ".join(f"size {t}" for t in tiers) + " | worst |",
                      "|---|" + "---:|" * (len(tiers) + 1),
                      "| best baseline | " + " | ".join(f"{best[t]} {mean[best[t]][t]:.2f}" for t in tiers) + " | |"]
            for m in ROWS:
                if m in mean:
                    d = [mean[m][t] - mean[best[t]][t] for t in tiers]
                    lines.append(f"| {m} | " + " | ".join(f"{v:+.2f}" for v in d) + f" | {min(d):+.2f} |")
        lines.append("")
    lines += ["Command: `python bench/pool_structured.py`", ""]
    return "\n".join(lines)


def main() -> int:
    text = markdown()
    (HERE / "bench_structured_pooled.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
