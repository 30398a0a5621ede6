"""Decoder fuzzing at scale: outcomes per decoder and the worst memory peak against the bar.

Bars (issue 11): decoding any input uses at most 64 MiB + 4x its size; no input ends in an
untyped exception; every single flipped bit of a plan, update or payload is refused.
For every decoder this runs the cases of tests/fuzz_cases.py at larger counts: every
single-bit flip and every truncation of a small valid message, random damage (truncation,
byte changes, splices, random bytes), header fields replaced by hostile values and re-packed
with a valid checksum, and the memory bombs. Outcomes: round trip, other decode (a damaged
input that is still a valid message), typed error, failure (anything else, or over the bar).
Peaks are tracemalloc's plus the bytes of the decoded tensors; the bombs are also decoded in
a fresh process each, whose peak RSS growth (VmHWM) is reported as a check of what
tracemalloc cannot see.

Run: ``python bench/bench_fuzz.py`` (``--quick``: 10x fewer random cases). Writes
bench/bench_fuzz.md and bench/bench_fuzz.json next to this file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import fuzz_cases as fc  # noqa: E402
from machine import machine_info, machine_markdown  # noqa: E402

from edge_sdk._io import atomic_write_text  # noqa: E402

KINDS = ("roundtrip", "decoded", "typed", "failure")

_RSS_CHILD = """
import sys, resource
sys.path.insert(0, {tests!r})
import fuzz_cases as fc
cases = fc.make_cases()
label = {label!r}
(name, case, data), = [b for b in fc.bombs(cases) if b[0] == label]
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
fc.run(case, case.data)  # warm the decoder's imports and caches
before = hwm()
out = fc.run(case, data)
print(hwm() - before, out.kind)
"""


def _rss_growth(label: str) -> tuple[int, str]:
    code = _RSS_CHILD.format(tests=str(HERE.parent / "tests"), label=label)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode:
        return -1, f"child failed: {out.stderr.strip().splitlines()[-1:]}"
    grew, kind = out.stdout.split()
    return int(grew), kind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10x fewer random cases")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_random = 200 if args.quick else 2000
    rng = np.random.default_rng(args.seed)
    cases = fc.make_cases()
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    worst: dict[str, dict[str, float]] = {}
    failures: list[str] = []
    flips_accepted: dict[str, int] = {}
    t0 = time.perf_counter()

    def judge(case: fc.Case, family: str, data: bytes) -> fc.Outcome:
        out = fc.run(case, data)
        counts[case.name][family][out.kind] += 1
        share = out.peak / fc.bar(len(data))
        w = worst.setdefault(case.name, {"share": 0.0, "peak": 0, "size": 0})
        if share > w["share"]:
            worst[case.name] = {"share": share, "peak": out.peak, "size": len(data)}
        if out.kind == "failure" and len(failures) < 50:
            failures.append(f"{case.name} / {family}: {out.detail[:300]}")
        return out

    for name, case in cases.items():
        judge(case, "valid", case.data)
        accepted = 0
        for flipped in fc.bit_flips(case.data):
            if judge(case, "bit flip (all)", flipped).kind != "typed":
                accepted += 1
        flips_accepted[name] = accepted
        for n in range(len(case.data)):
            judge(case, "truncation (all)", case.data[:n])
        for data in fc.random_messages(rng, case, n_random):
            judge(case, "random damage", data)
        hostile = (fc.hostile_headers(rng, case, n_random) if case.checksummed
                   else fc.hostile_profiles(rng, case, n_random))
        for data in hostile:
            judge(case, "hostile field", data)
        print(f"{name}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    bomb_rows = []
    for label, case, data in fc.bombs(cases):
        out = judge(case, "memory bomb", data)
        rss, child_kind = _rss_growth(label)
        bomb_rows.append({"bomb": label, "decoder": case.name, "input_bytes": len(data), "outcome": out.kind,
                          "traced_peak_bytes": out.peak, "rss_growth_bytes": rss, "bar_bytes": fc.bar(len(data)),
                          "fresh_process_outcome": child_kind, "detail": out.detail[:160]})
    elapsed = time.perf_counter() - t0

    info = machine_info()
    table = {name: {fam: dict(c) for fam, c in fams.items()} for name, fams in counts.items()}
    total = Counter()
    for fams in counts.values():
        for c in fams.values():
            total.update(c)
    result = {"machine": info, "seed": args.seed, "random_cases_per_family": n_random, "seconds": round(elapsed, 1),
              "counts": table, "totals": dict(total), "worst_peak": worst, "flips_accepted": flips_accepted,
              "bombs": bomb_rows, "failures": failures}
    atomic_write_text(HERE / "bench_fuzz.json", json.dumps(result, indent=2, default=str) + "\n")

    lines = [
        "# Decoder fuzzing (issue 11)",
        "",
        machine_markdown(info),
        "",
        f"`python bench/bench_fuzz.py{' --quick' if args.quick else ''}` (seed {args.seed}, {n_random} random and "
        f"{n_random} hostile-field cases per decoder, every bit flip and truncation of each small valid message, "
        f"{len(bomb_rows)} memory bombs); {sum(total.values())} decodes in {elapsed:.0f} s.",
        "",
        "Bars: no failure (untyped exception, unstable re-encoding, or a peak over 64 MiB + 4x the input); "
        "every single-bit flip of a plan, update or payload refused.",
        "",
        "| decoder | message bytes | cases | round trip | other decode | typed error | failure | flips accepted "
        "| worst peak / bar |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, case in cases.items():
        c = Counter()
        for fam in counts[name].values():
            c.update(fam)
        flips = "n/a (no checksum)" if not case.checksummed else f"{flips_accepted[name]} of {len(case.data) * 8}"
        lines.append(f"| {name} | {len(case.data)} | {sum(c.values())} | {c['roundtrip']} | {c['decoded']} | "
                     f"{c['typed']} | {c['failure']} | {flips} | {worst[name]['share']:.4f} |")
    lines += [
        "",
        "\"Other decode\": a damaged input that is still a well-formed message (a hostile field that is valid, "
        "e.g. a different round; TOML edits of a profile); its re-encoding is stable. Profiles carry no checksum, "
        "so a flipped bit there may still give a valid profile.",
        "",
        "## Memory bombs",
        "",
        "| bomb | decoder | input bytes | outcome | traced peak | RSS growth (fresh process) | bar |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in bomb_rows:
        lines.append(f"| {r['bomb']} | {r['decoder']} | {r['input_bytes']} | {r['outcome']} | "
                     f"{r['traced_peak_bytes'] / 2**20:.2f} MiB | {r['rss_growth_bytes'] / 2**20:.2f} MiB | "
                     f"{r['bar_bytes'] / 2**20:.1f} MiB |")
    lines += ["", "## Failures", ""] + ([f"* {f}" for f in failures] or ["None."])
    atomic_write_text(HERE / "bench_fuzz.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
