"""The machine a benchmark ran on, for the header of its result table."""

from __future__ import annotations

import os
import platform
import sys

import numpy
import torch


def machine_info() -> dict[str, object]:
    from edge_sdk.profiler.system import read_system_info

    info = read_system_info()
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        ort_version = None
    return {
        "cpu": info.cpu_model,
        "arch": info.arch,
        "logical_cpus": info.logical_cpus,
        "effective_cpus": info.effective_cpus,
        "isa_flags": info.isa_flags,
        "memory_gib": round(info.memory_total_bytes / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "onnxruntime": ort_version,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def machine_markdown(info: dict[str, object]) -> str:
    return (
        f"Machine: {info['cpu']} ({info['arch']}), {info['effective_cpus']} effective CPUs, "
        f"{info['memory_gib']} GiB, {info['os']}; Python {info['python']}, torch {info['torch']}, "
        f"onnxruntime {info['onnxruntime']}; load average at start {info['load_average_at_start']}."
    )
