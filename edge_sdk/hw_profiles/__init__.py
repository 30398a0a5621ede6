"""Hardware profiles: one TOML file per real device, each value cited to its datasheet.

``names()`` lists the shipped profiles; ``load(name_or_path)`` returns a checked
:class:`HardwareProfile` for a shipped name or for a user's own ``.toml`` file. The profiler
reads ``profile.cpu`` to estimate the report a device would send; the export helpers read
``profile.fpga`` (budgets, bit widths) and ``profile.preferred_format``.
"""

from __future__ import annotations

from edge_sdk.hw_profiles.loader import load, load_file, names
from edge_sdk.hw_profiles.schema import (
    FORMATS,
    KINDS,
    RESOURCES,
    SCHEMA_VERSION,
    CpuSpec,
    FpgaSpec,
    HardwareProfile,
    McuSpec,
    UtilisationLimit,
)

__all__ = [
    "names",
    "load",
    "load_file",
    "HardwareProfile",
    "CpuSpec",
    "FpgaSpec",
    "McuSpec",
    "UtilisationLimit",
    "KINDS",
    "FORMATS",
    "RESOURCES",
    "SCHEMA_VERSION",
]
