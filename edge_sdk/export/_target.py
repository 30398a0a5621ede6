"""Resolving an export target (a hardware-profile name, a profile, or this host)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

__all__ = ["CpuTarget", "load_profile", "cpu_target"]

_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
_VNNI = ("avx512_vnni", "avx_vnni", "avxvnni")


@dataclass(frozen=True)
class CpuTarget:
    """What the int8 ONNX exporter needs to know about the CPU that will run the model."""

    name: str
    arch: str
    int8_dot_product: bool

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in _X86

    def activation_type(self) -> str:
        """uint8 activations on x86 (u8 x s8 kernels), int8 on ARM and others."""
        return "uint8" if self.is_x86 else "int8"

    def reduce_range(self) -> bool:
        """7-bit weights on x86 without VNNI, where u8 x s8 pairwise sums can saturate int16."""
        return self.is_x86 and not self.int8_dot_product


def load_profile(target: Any):
    """A :class:`HardwareProfile` from a name, a path or a profile (``None`` stays ``None``)."""
    if target is None:
        return None
    if hasattr(target, "kind") and hasattr(target, "preferred_format"):
        return target
    from edge_sdk import hw_profiles  # local import: the export package must load without it

    return hw_profiles.load(target)


def _host_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_target(profile: Any = None) -> CpuTarget:
    """The CPU of ``profile`` (its ARM cores for an FPGA SoC), or this host when ``None``."""
    if profile is not None and getattr(profile, "cpu", None) is not None:
        cpu = profile.cpu
        return CpuTarget(profile.name, cpu.arch, bool(cpu.int8_dot_product))
    if profile is not None:
        # an FPGA without cores or a profile without [cpu]: the int8 graph runs on a host CPU
        return cpu_target(None)
    flags = _host_flags()
    return CpuTarget("host", platform.machine().lower(), any(f in flags for f in _VNNI) or
                     bool(flags & {"asimddp", "i8mm"}))
