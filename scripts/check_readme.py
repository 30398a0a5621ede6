"""Run the README's command blocks as written and compare their output's shape with the README.

    python scripts/check_readme.py [README.md ...] [--list] [--only TEXT] [--times PATH.md] [--keep]

Every fenced block that is a shell or Python example (```bash, ```sh, ```console, ```python,
or any block with a ``$ `` prompt line) must carry a marker in the lines just above it:

* ``<!-- check -->``: run it. A ``$ command`` block runs each command (continuation lines end
  in ``\\``) and compares what it printed with the lines the README shows under it; a block
  without prompts is one bash script (a ```python block: one Python script) that must exit 0.
* ``<!-- check: skip (reason) -->``: not run; the reason is required (a long run, a server
  that keeps running, a command that needs hardware or the network).

An unmarked example block is an error, so a new example is either checked or says why not.

The blocks of one README run in order in one fresh temporary directory (a reader's state
carries from block to block: a plan written in one block is read in the next); ``examples/``
and ``scripts/`` of this repository are copied into it, so commands written for the clone's
root run as written. The tour's scratch directory ``/tmp/edge-sdk-tour`` is mapped to a
directory inside the temporary one.

The shape of an output is what does not depend on the machine or the run:

* a table header (a line followed by a ``----`` rule) must appear exactly (spaces collapsed);
* every other line's first word (``device``, ``cpu``, ``round``, ``format``, ``warning``...)
  must appear as a line's first word, in the README's order (extra lines are allowed);
* lines starting with a digit (table rows, numbers) are not compared: they are measurements;
  nor are ``warning`` lines, which depend on the machine's load (a busy machine adds some).

Exit 0 when every checked block ran and matched, 1 otherwise (each failure printed).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOUR_DIR = "/tmp/edge-sdk-tour"
SHELL_LANGS = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*check(?::\s*(?P<rest>.*?))?\s*-->")
RULE = re.compile(r"^[-\s]*--[-\s]*$")
FIRST_WORD = re.compile(r"^\s*(\S+)")
TIMEOUT_S = 900


@dataclass
class Command:
    text: str  # the command as written (continuations joined)
    expected: list[str] = field(default_factory=list)  # the output lines the README shows


@dataclass
class Block:
    readme: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: list[str]
    mode: str  # "check" | "skip" | "" (unmarked)
    reason: str = ""

    @property
    def where(self) -> str:
        try:
            name = self.readme.resolve().relative_to(ROOT)
        except ValueError:
            name = self.readme
        return f"{name}:{self.line}"

    @property
    def is_example(self) -> bool:
        return self.lang in SHELL_LANGS or self.lang == "python" or any(l.startswith("$ ") for l in self.body)

    def commands(self) -> list[Command]:
        """``$ `` lines with their continuations, each with the output shown under it."""
        out: list[Command] = []
        lines = iter(self.body)
        for line in lines:
            if line.startswith("$ "):
                text = line[2:]
                while text.endswith("\\"):
                    text = text[:-1].rstrip() + " " + next(lines, "").strip()
                out.append(Command(text))
            elif out:
                out[-1].expected.append(line)
        return out


def parse(readme: Path) -> list[Block]:
    lines = readme.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        mode, reason = "", ""
        k = start - 1
        while k >= 0 and (not lines[k].strip() or lines[k].lstrip().startswith("<!--")):
            mk = MARKER.search(lines[k])
            if mk:
                rest = (mk.group("rest") or "").strip()
                if rest.startswith("skip"):
                    mode, reason = "skip", rest[4:].strip().strip("()").strip()
                else:
                    mode = "check"
                break
            k -= 1
        blocks.append(Block(readme, start + 1, lang, lines[start + 1:j], mode, reason))
        i = j + 1
    return blocks


def shape(lines: list[str]) -> tuple[list[str], list[str]]:
    """(table headers, first words) of an output, as described in the module docstring."""
    headers, words = [], []
    for n, line in enumerate(lines):
        if not line.strip() or RULE.match(line):
            continue
        nxt = lines[n + 1] if n + 1 < len(lines) else ""
        if RULE.match(nxt):
            headers.append(" ".join(line.split()))
            continue
        word = FIRST_WORD.match(line).group(1)
        if word[0].isdigit() or word in {"...", "(+"} or word.rstrip(":") == "warning":
            continue
        words.append(word)
    return headers, words


def compare(expected: list[str], actual: list[str]) -> list[str]:
    """What of the expected shape is missing from the actual output ([] when it matches)."""
    exp_headers, exp_words = shape(expected)
    act_headers, act_words = shape(actual)
    problems = [f"table header not printed: {h!r}" for h in exp_headers if h not in act_headers]
    pos = 0
    for word in exp_words:
        try:
            pos = act_words.index(word, pos) + 1
        except ValueError:
            problems.append(f"no line starting with {word!r} (in this order) in the output")
            break
    return problems


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FLWR_TELEMETRY_ENABLED="0", MPLBACKEND="Agg", PYTHONUNBUFFERED="1", COLUMNS="200")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(args: list[str], work: Path) -> tuple[int, str, float]:
    t0 = time.monotonic()
    try:
        proc = subprocess.run(args, cwd=work, env=_env(work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True, timeout=TIMEOUT_S)
        code, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        code, out = -1, f"{exc.stdout or ''}\n(timed out after {TIMEOUT_S} s)"
    return code, out, time.monotonic() - t0


def _local(text: str, work: Path) -> str:
    return text.replace(TOUR_DIR, str(work / "edge-sdk-tour"))


def run_block(block: Block, work: Path, times: list[tuple[str, str, float]], save: Path | None = None) -> list[str]:
    failures = []
    commands = block.commands()
    if block.lang == "python":
        scripts = [("python", "\n".join(block.body))]
    elif commands:
        scripts = [(c.text, c) for c in commands]
    else:
        scripts = [("bash", "\n".join(block.body))]
    for label, item in scripts:
        if isinstance(item, Command):
            args, shown, expected = ["bash", "-o", "pipefail", "-c", _local(item.text, work)], item.text, item.expected
        elif label == "python":
            args, shown, expected = [sys.executable, "-c", _local(item, work)], "(python block)", []
        else:
            args, shown, expected = ["bash", "-euo", "pipefail", "-c", _local(item, work)], "(bash block)", []
        print(f"{block.where}$ {shown}", flush=True)
        code, out, seconds = _run(args, work)
        times.append((block.where, shown, seconds))
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            (save / f"{len(times):03d}.txt").write_text(f"$ {shown}\n{out}")
        print(f"  exit {code} in {seconds:.1f} s", flush=True)
        if code != 0:
            failures.append(f"{block.where}: `{shown}` exited {code}:\n{out[-3000:]}")
            break  # later commands of the block depend on this one
        problems = compare(expected, out.splitlines())
        if problems:
            failures.append(f"{block.where}: `{shown}` printed another shape than the README shows: "
                            + "; ".join(problems) + f"\n--- output:\n{out[-3000:]}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readmes", nargs="*", type=Path,
                        default=[ROOT / "README.md", ROOT / "examples" / "flower_app" / "README.md"])
    parser.add_argument("--list", action="store_true", help="list the example blocks and their markers; run nothing")
    parser.add_argument("--only", metavar="TEXT", help="run only the blocks whose text contains TEXT")
    parser.add_argument("--times", metavar="PATH.md", type=Path, help="write each command's wall time to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--save-outputs", metavar="DIR", type=Path, help="write each command's output to DIR/NNN.txt")
    args = parser.parse_args(argv)

    failures: list[str] = []
    times: list[tuple[str, str, float]] = []
    for readme in args.readmes:
        blocks = [b for b in parse(readme) if b.is_example]
        for b in blocks:
            if not b.mode:
                failures.append(f"{b.where}: example block without a marker (<!-- check --> or "
                                f"<!-- check: skip (reason) -->)")
            elif b.mode == "skip" and not b.reason:
                failures.append(f"{b.where}: `check: skip` needs a reason in parentheses")
        if args.list:
            for b in blocks:
                first = next((l for l in b.body if l.strip()), "")
                print(f"{b.where:<22} {b.mode or 'UNMARKED':<6} {b.reason[:60]:<60} {first[:70]}")
            continue
        work = Path(tempfile.mkdtemp(prefix="readme-check-"))
        for sub in ("examples", "scripts"):
            shutil.copytree(ROOT / sub, work / sub, ignore=shutil.ignore_patterns("__pycache__"))
        try:
            for b in blocks:
                if b.mode != "check" or (args.only and args.only not in "\n".join(b.body)):
                    continue
                failures += run_block(b, work, times, args.save_outputs)
        finally:
            if args.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    if args.times and times:
        rows = "\n".join(f"| {w} | `{c}` | {s:.1f} |" for w, c, s in times)
        args.times.write_text("# README commands: wall time\n\nWritten by `python scripts/check_readme.py --times "
                              f"{args.times.name}` ({time.strftime('%Y-%m-%d')}).\n\n| block | command | s |\n"
                              f"|---|---|---:|\n{rows}\n")
    for f in failures:
        print(f"\nFAIL {f}", file=sys.stderr)
    print(f"\nreadme check: {len(times)} commands run, {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
