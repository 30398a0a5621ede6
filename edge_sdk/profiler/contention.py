"""What else the machine is doing: steal time, run queue, CPU pressure, clock frequency.

Read from Linux's /proc and /sys; every probe returns None where the file is missing or
unreadable (other systems, containers that hide them), never fails the profile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.profiler.report import Contention, RateStats
from edge_sdk.profiler.system import _read

PROC = Path("/proc")
SYS_CPU = Path("/sys/devices/system/cpu")
CONTENDED_SHARE = 0.90  # below this share of its CPUs, a benchmark ran on a busy device
STEAL_LIMIT = 0.05  # above this share of CPU time taken by the hypervisor, likewise
UNSTABLE_SPREAD = 0.10  # relative IQR of per-window CPU-second rates above which a rate is unsure


@dataclass(frozen=True)
class CpuTicks:
    """Cumulative /proc/stat CPU ticks: all, and stolen by the hypervisor."""

    total: int
    steal: int


def cpu_ticks(proc: Path = PROC) -> CpuTicks | None:
    text = _read(proc / "stat")
    if not text or not text.startswith("cpu "):
        return None
    try:
        values = [int(v) for v in text.splitlines()[0].split()[1:]]
    except ValueError:
        return None
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is inside user
    return CpuTicks(total=sum(values[:8]), steal=values[7] if len(values) > 7 else 0)


def steal_fraction(before: CpuTicks | None, after: CpuTicks | None) -> float | None:
    if before is None or after is None or after.total <= before.total:
        return None
    return round(max(0.0, (after.steal - before.steal) / (after.total - before.total)), 4)


def procs_running(proc: Path = PROC) -> int | None:
    """Runnable tasks now (the fourth field of /proc/loadavg, before the slash)."""
    text = _read(proc / "loadavg")
    try:
        return int(text.split()[3].split("/")[0]) if text else None
    except (IndexError, ValueError):
        return None


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_pressure(proc: Path = PROC) -> float | None:
    """``some avg10`` of /proc/pressure/cpu: % of the last 10 s some task waited for a CPU."""
    text = _read(proc / "pressure" / "cpu")
    for line in (text or "").splitlines():
        if line.startswith("some"):
            for part in line.split():
                if part.startswith("avg10="):
                    try:
                        return float(part[6:])
                    except ValueError:
                        return None
    return None


def frequency_mhz(sys_cpu: Path = SYS_CPU) -> float | None:
    """Mean current clock of the CPUs (cpufreq ``scaling_cur_freq``, kHz), where readable."""
    values = []
    for path in sorted(sys_cpu.glob("cpu[0-9]*/cpufreq/scaling_cur_freq")):
        text = _read(path)
        if text and text.isdigit():
            values.append(int(text) / 1e3)
    return round(sum(values) / len(values), 1) if values else None


def rate_verdict(cpu_share: float, spread: float) -> str:
    """``contended`` when the benchmark threads got less than their CPUs, else ``unstable``
    when the CPU-second rate itself varied, else ``clear``."""
    if cpu_share < CONTENDED_SHARE:
        return "contended"
    return "unstable" if spread > UNSTABLE_SPREAD else "clear"


def assess(score: RateStats, steal: float | None, run_queue: float | None) -> Contention:
    """The machine's state over the score measurement."""
    verdict = score.verdict
    if steal is not None and steal > STEAL_LIMIT:
        verdict = "contended"
    return Contention(
        verdict=verdict,
        free_share=round(min(1.0, score.wall_value / score.value), 4),
        steal_fraction=steal,
        run_queue=run_queue,
        load_average=load_average(),
        psi_cpu_some_avg10=cpu_pressure(),
        freq_mhz=frequency_mhz(),
    )

