"""What the operating system says about this device: CPUs, memory limits, CPU model, ISA flags.

``os.cpu_count()`` and psutil ignore CPU affinity and cgroup quotas, so the effective CPU
count is ``min(len(sched_getaffinity), ceil(quota / period))``; the memory limit is the
cgroup's (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) when it is below physical memory.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import psutil

# ISA features that decide int8/fp32 kernel speed, as /proc/cpuinfo spells them.
INT8_RELEVANT_FLAGS = (
    # x86
    "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_tile",
    # Arm (aarch64 "Features" line)
    "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16", "asimdhp",
    # 32-bit Arm
    "neon", "vfpv4",
)

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number


@dataclass(frozen=True)
class SystemInfo:
    cpu_model: str
    arch: str
    logical_cpus: int
    effective_cpus: int
    isa_flags: list[str]
    memory_total_bytes: int
    memory_available_bytes: int
    memory_limit_bytes: int | None


def read_system_info(cgroup_root: Path = _CGROUP_ROOT, cpuinfo: Path = Path("/proc/cpuinfo")) -> SystemInfo:
    """Read CPU and memory facts from the OS (Linux first; portable fallbacks elsewhere)."""
    logical = os.cpu_count() or 1
    limit = cgroup_memory_limit(cgroup_root)
    vm = psutil.virtual_memory()
    total = vm.total if limit is None else min(vm.total, limit)
    available = vm.available
    if limit is not None:
        available = min(available, max(0, limit - _cgroup_memory_usage(cgroup_root)))
    model, flags = _cpu_model_and_flags(cpuinfo)
    return SystemInfo(
        cpu_model=model,
        arch=platform.machine() or "unknown",
        logical_cpus=logical,
        effective_cpus=effective_cpu_count(cgroup_root),
        isa_flags=flags,
        memory_total_bytes=int(total),
        memory_available_bytes=int(available),
        memory_limit_bytes=limit,
    )


def effective_cpu_count(cgroup_root: Path = _CGROUP_ROOT) -> int:
    """CPUs this process may really use: affinity mask, then the cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(cgroup_root: Path = _CGROUP_ROOT) -> float | None:
    """The cgroup CPU quota in CPUs (quota / period), or None when unlimited or unknown."""
    v2 = _read(cgroup_root / "cpu.max")
    if v2:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                return int(parts[0]) / int(parts[1])
            except (ValueError, ZeroDivisionError):
                return None
        return None
    quota = _read(cgroup_root / "cpu" / "cpu.cfs_quota_us") or _read(cgroup_root / "cpu,cpuacct" / "cpu.cfs_quota_us")
    period = _read(cgroup_root / "cpu" / "cpu.cfs_period_us") or _read(cgroup_root / "cpu,cpuacct" / "cpu.cfs_period_us")
    try:
        if quota and period and int(quota) > 0:
            return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        pass
    return None


def cgroup_memory_limit(cgroup_root: Path = _CGROUP_ROOT) -> int | None:
    """The cgroup memory limit in bytes (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), or None."""
    for path in (cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"):
        text = _read(path)
        if not text or text == "max":
            continue
        try:
            value = int(text)
        except ValueError:
            continue
        if 0 < value < _UNLIMITED:
            return value
    return None


def _cgroup_memory_usage(cgroup_root: Path) -> int:
    for path in (cgroup_root / "memory.current", cgroup_root / "memory" / "memory.usage_in_bytes"):
        text = _read(path)
        if text and text.isdigit():
            return int(text)
    return 0


def clock_mhz(cpuinfo: Path = Path("/proc/cpuinfo"), sys_cpu: Path = Path("/sys/devices/system/cpu")) -> float | None:
    """The CPU's clock in MHz: cpufreq's maximum where readable, else /proc/cpuinfo's
    ``cpu MHz`` (x86 VMs report the nominal clock there), else None."""
    text = _read(sys_cpu / "cpu0" / "cpufreq" / "cpuinfo_max_freq")
    if text and text.isdigit():
        return int(text) / 1e3
    for line in (_read(cpuinfo) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "cpu mhz":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """Every ISA flag /proc/cpuinfo lists for the first CPU (empty where unreadable)."""
    return _cpu_model_and_all_flags(cpuinfo)[1]


def _cpu_model_and_flags(cpuinfo: Path) -> tuple[str, list[str]]:
    model, flags = _cpu_model_and_all_flags(cpuinfo)
    return model, [f for f in INT8_RELEVANT_FLAGS if f in flags]


def _cpu_model_and_all_flags(cpuinfo: Path) -> tuple[str, set[str]]:
    model = ""
    flags: set[str] = set()
    text = _read(cpuinfo) or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        value = value.strip()
        if not model and key in ("model name", "hardware", "cpu model", "processor") and value and not value.isdigit():
            model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not model:
        model = platform.processor() or platform.machine() or "unknown"
    return model, flags


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
