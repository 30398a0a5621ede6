"""The hardware-profile schema: frozen dataclasses and the checks that build them.

A profile is a TOML document (see ``data/*.toml`` for the shipped ones)::

    schema_version = 1            # optional, 1 is the only version
    name = "pynq-z2"
    kind = "fpga"                 # "cpu" | "mcu" | "fpga"
    vendor = "..."
    description = "..."
    preferred_format = "qonnx"    # "int8-onnx" | "qonnx" | "qcdq"

    [cpu]                         # required for cpu and mcu, optional for fpga (its ARM cores)
    model, cores, clock_ghz, arch, isa_features, memory_mb, memory_bandwidth_gbs,
    nominal_gflops_fp32, nominal_int8_gops,
    fp32_flops_per_cycle, int8_ops_per_cycle     # optional; when given they must agree
                                                 # with the nominal numbers
    [mcu]                         # required for mcu, forbidden otherwise
    sram_kb, flash_kb
    [fpga]                        # required for fpga, forbidden otherwise
    part, lut, ff, bram18k, uram, dsp, clock_mhz, weight_bits, act_bits
    [fpga.utilisation_limit]
    lut, ff, bram18k, uram, dsp   # fractions in (0, 1]
    [sources]                     # optional: "cpu.cores" = "datasheet, section ..."

``isa_features`` uses the flag names Linux prints in ``/proc/cpuinfo`` so that an estimated
report and a measured one speak the same words: on aarch64 NEON is ``asimd``, the int8 dot
product ``asimddp``, int8 matrix multiply ``i8mm``; on 32-bit ARM NEON is ``neon``; on x86
``ssse3``, ``sse4_2``, ``avx2``, ``fma``, ``avx512_vnni``, ``avx_vnni``; on a
microcontroller ``dsp`` (the Armv7E-M SIMD MACs), ``fpu_sp``/``fpu_dp``, ``helium`` (MVE).

Every check failure raises :class:`HardwareProfileError` naming the file and the field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from edge_sdk._decode import show as _show
from edge_sdk.errors import HardwareProfileError

SCHEMA_VERSION = 1
KINDS = ("cpu", "mcu", "fpga")
FORMATS = ("int8-onnx", "qonnx", "qcdq")
RESOURCES = ("lut", "ff", "bram18k", "uram", "dsp")
# ISA flags that give a CPU an int8 dot-product / multiply-accumulate instruction.
INT8_DOT_FEATURES = frozenset({"asimddp", "i8mm", "avx512_vnni", "avx_vnni", "helium"})

_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
_REL_TOLERANCE = 0.01  # nominal numbers must agree with cores x clock x per-cycle within 1%


@dataclass(frozen=True)
class CpuSpec:
    """The general-purpose cores of a device (for an FPGA SoC: its ARM cores).

    ``nominal_*`` are derived peak numbers (cores x clock x ops per cycle), never measured
    rates; ``memory_bandwidth_gbs`` is the theoretical peak of the memory interface.
    """

    model: str
    cores: int
    clock_ghz: float
    arch: str
    isa_features: tuple[str, ...]
    memory_mb: float
    memory_bandwidth_gbs: float
    nominal_gflops_fp32: float
    nominal_int8_gops: float
    fp32_flops_per_cycle: float | None = None
    int8_ops_per_cycle: float | None = None

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_mb * 1024 * 1024)

    def has(self, feature: str) -> bool:
        """True when the ISA feature (a /proc/cpuinfo flag name) is listed."""
        return feature.lower() in self.isa_features

    @property
    def int8_dot_product(self) -> bool:
        """True when the cores have an int8 dot-product instruction (SDOT, VNNI, MVE...)."""
        return any(f in INT8_DOT_FEATURES for f in self.isa_features)


@dataclass(frozen=True)
class McuSpec:
    """On-chip memories of a microcontroller (an export-only target)."""

    sram_kb: int
    flash_kb: int


@dataclass(frozen=True)
class UtilisationLimit:
    """The fraction of each fabric resource a design should plan to use (a rule of thumb
    leaving room for routing, the shell and timing closure; not a datasheet value)."""

    lut: float
    ff: float
    bram18k: float
    uram: float
    dsp: float


@dataclass(frozen=True)
class FpgaSpec:
    """Programmable-logic resources of an FPGA part and what our flows target on it."""

    part: str
    lut: int
    ff: int
    bram18k: int
    uram: int
    dsp: int
    utilisation_limit: UtilisationLimit
    clock_mhz: float
    weight_bits: tuple[int, ...]
    act_bits: tuple[int, ...]

    def total(self, resource: str) -> int:
        """The part's total count of ``resource`` (one of :data:`RESOURCES`)."""
        return int(getattr(self, _resource(resource)))

    def usable(self, resource: str) -> int:
        """Total x utilisation limit, rounded down: what a design may plan to use."""
        name = _resource(resource)
        # the epsilon keeps e.g. 0.7 x 230400 = 161279.99999... from losing one unit
        return math.floor(getattr(self, name) * getattr(self.utilisation_limit, name) + 1e-6)

    def budget(self) -> dict[str, int]:
        """The usable count of every resource."""
        return {r: self.usable(r) for r in RESOURCES}

    def supports(self, weight_bits: int, act_bits: int) -> bool:
        """True when both bit widths are among the supported ones."""
        return weight_bits in self.weight_bits and act_bits in self.act_bits


@dataclass(frozen=True)
class HardwareProfile:
    """One device (or device class): what it has and what export format suits it."""

    name: str
    kind: str
    vendor: str
    description: str
    preferred_format: str
    cpu: CpuSpec | None
    fpga: FpgaSpec | None
    mcu: McuSpec | None
    sources: dict[str, str] = field(default_factory=dict)
    path: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def export_only(self) -> bool:
        """True when the device cannot train (a microcontroller, or an FPGA without cores)."""
        return self.kind == "mcu" or self.cpu is None

    def to_dict(self) -> dict[str, Any]:
        """The full profile as JSON-ready built-in types (tuples become lists)."""
        doc: dict[str, Any] = {
            "schema_version": self.schema_version,
            "name": self.name,
            "kind": self.kind,
            "vendor": self.vendor,
            "description": self.description,
            "preferred_format": self.preferred_format,
            "export_only": self.export_only,
            "cpu": None,
            "mcu": None,
            "fpga": None,
            "sources": dict(self.sources),
            "path": self.path,
        }
        if self.cpu is not None:
            cpu = _plain(self.cpu)
            cpu["int8_dot_product"] = self.cpu.int8_dot_product
            doc["cpu"] = cpu
        if self.mcu is not None:
            doc["mcu"] = _plain(self.mcu)
        if self.fpga is not None:
            fpga = _plain(self.fpga)
            fpga["utilisation_limit"] = _plain(self.fpga.utilisation_limit)
            fpga["budget"] = self.fpga.budget()
            doc["fpga"] = fpga
        return doc


def _plain(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _resource(resource: str) -> str:
    name = resource.lower()
    if name == "bram":
        name = "bram18k"
    if name not in RESOURCES:
        raise KeyError(f"unknown FPGA resource {resource!r}; known: {', '.join(RESOURCES)}")
    return name


# ----------------------------------------------------------------------------- checking


class _Table:
    """Reads the fields of one TOML table, each with a type check, and rejects the rest."""

    def __init__(self, label: str, where: str, table: Any) -> None:
        self.label = label  # the file, as shown in messages
        self.where = where  # "" for the top level, else "[cpu]" / "[fpga.utilisation_limit]"
        if not isinstance(table, dict):
            raise self.error_for(None, f"must be a table, got {_show(table)}")
        self.table = table
        self.seen: set[str] = set()

    def error_for(self, key: str | None, message: str) -> HardwareProfileError:
        if key is None:
            place = self.where or "document"
        else:
            place = f"{self.where}.{key}" if self.where else key
        return HardwareProfileError(f"{self.label}: {place} {message}")

    def _get(self, key: str, required: bool) -> Any:
        self.seen.add(key)
        if key not in self.table:
            if required:
                raise self.error_for(key, "is missing (required)")
            return None
        return self.table[key]

    def _check(self, key: str, required: bool, test: Callable[[Any], bool], what: str) -> Any:
        value = self._get(key, required)
        if value is None:
            return None
        if not test(value):
            raise self.error_for(key, f"must be {what}, got {_show(value)}")
        return value

    def text(self, key: str, required: bool = True) -> str | None:
        return self._check(key, required, lambda v: isinstance(v, str) and v.strip() != "",
                           "a non-empty string")

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        return self._check(key, True, lambda v: v in options,
                           "one of " + ", ".join(repr(o) for o in options))

    def pos_int(self, key: str, required: bool = True) -> int | None:
        return self._check(key, required, lambda v: _is_int(v) and v > 0, "a positive integer")

    def nonneg_int(self, key: str, required: bool = True) -> int | None:
        return self._check(key, required, lambda v: _is_int(v) and v >= 0,
                           "a non-negative integer")

    def pos_number(self, key: str, required: bool = True) -> float | None:
        value = self._check(key, required, lambda v: _is_number(v) and v > 0, "a positive number")
        return None if value is None else float(value)

    def fraction(self, key: str) -> float:
        return float(self._check(key, True, lambda v: _is_number(v) and 0 < v <= 1,
                                 "a fraction in (0, 1]"))

    def tokens(self, key: str) -> tuple[str, ...]:
        value = self._check(
            key, True,
            lambda v: isinstance(v, list) and all(isinstance(t, str) and _TOKEN.match(t) for t in v),
            "a list of lowercase flag names (e.g. [\"asimd\", \"asimddp\"])")
        return tuple(dict.fromkeys(value))

    def bit_widths(self, key: str) -> tuple[int, ...]:
        value = self._check(
            key, True,
            lambda v: isinstance(v, list) and len(v) > 0
            and all(_is_int(b) and 1 <= b <= 32 for b in v),
            "a non-empty list of integers between 1 and 32")
        return tuple(sorted(set(value)))

    def sub(self, key: str, required: bool, why: str = "") -> "_Table | None":
        where = f"[{key}]" if not self.where else f"[{self.where.strip('[]')}.{key}]"
        self.seen.add(key)
        if key not in self.table:
            if required:
                raise HardwareProfileError(
                    f"{self.label}: {where} section is missing (required{why})")
            return None
        return _Table(self.label, where, self.table[key])

    def finish(self, accepted: tuple[str, ...]) -> None:
        unknown = [k for k in self.table if k not in self.seen]
        if unknown:
            key = unknown[0]
            if isinstance(self.table[key], dict):
                where = f"[{key}]" if not self.where else f"[{self.where.strip('[]')}.{key}]"
                raise HardwareProfileError(
                    f"{self.label}: {where} is not a known section; accepted here: "
                    f"{', '.join(accepted)}")
            raise self.error_for(key, f"is not a known field; accepted here: {', '.join(accepted)}")


_TOP_FIELDS = ("schema_version", "name", "kind", "vendor", "description", "preferred_format",
               "cpu", "mcu", "fpga", "sources")
_CPU_FIELDS = ("model", "cores", "clock_ghz", "arch", "isa_features", "memory_mb",
               "memory_bandwidth_gbs", "nominal_gflops_fp32", "nominal_int8_gops",
               "fp32_flops_per_cycle", "int8_ops_per_cycle")
_MCU_FIELDS = ("sram_kb", "flash_kb")
_FPGA_FIELDS = ("part", "lut", "ff", "bram18k", "uram", "dsp", "utilisation_limit",
                "clock_mhz", "weight_bits", "act_bits")
_SECTION_FIELDS = {"cpu": _CPU_FIELDS, "mcu": _MCU_FIELDS, "fpga": _FPGA_FIELDS,
                   "fpga.utilisation_limit": RESOURCES}


def profile_from_mapping(doc: Mapping[str, Any], *, label: str, path: str = "") -> HardwareProfile:
    """Check a parsed TOML document and build the :class:`HardwareProfile` it describes.

    ``label`` names the file in error messages; ``path`` is recorded on the profile.
    """
    top = _Table(label, "", dict(doc))
    version = top._check("schema_version", False, _is_int, "an integer")
    if version is not None and version != SCHEMA_VERSION:
        raise top.error_for("schema_version",
                            f"is {version}; this release reads version {SCHEMA_VERSION}")
    name = top.text("name")
    kind = top.choice("kind", KINDS)
    vendor = top.text("vendor")
    description = top.text("description")
    from edge_sdk.export.formats import format_names  # registered export formats (no heavy imports)

    preferred_format = top.choice("preferred_format", format_names())

    why = f" when kind = {kind!r}"
    cpu_table = top.sub("cpu", required=kind in ("cpu", "mcu"), why=why)
    mcu_table = top.sub("mcu", required=kind == "mcu", why=why)
    fpga_table = top.sub("fpga", required=kind == "fpga", why=why)
    for section, table in (("mcu", mcu_table), ("fpga", fpga_table)):
        if table is not None and kind != section:
            raise HardwareProfileError(
                f"{label}: [{section}] section is only allowed when kind = {section!r} "
                f"(kind is {kind!r})")

    cpu = _cpu(cpu_table) if cpu_table is not None else None
    mcu = _mcu(mcu_table) if mcu_table is not None else None
    fpga = _fpga(fpga_table) if fpga_table is not None else None
    sources = _sources(top.sub("sources", required=False), label)
    top.finish(_TOP_FIELDS)
    return HardwareProfile(
        name=name, kind=kind, vendor=vendor, description=description,
        preferred_format=preferred_format, cpu=cpu, fpga=fpga, mcu=mcu,
        sources=sources, path=path, schema_version=SCHEMA_VERSION,
    )


def _cpu(t: _Table) -> CpuSpec:
    spec = CpuSpec(
        model=t.text("model"),
        cores=t.pos_int("cores"),
        clock_ghz=t.pos_number("clock_ghz"),
        arch=t._check("arch", True, lambda v: isinstance(v, str) and bool(_TOKEN.match(v)),
                      "a lowercase architecture name (e.g. \"aarch64\", \"x86_64\")"),
        isa_features=t.tokens("isa_features"),
        memory_mb=t.pos_number("memory_mb"),
        memory_bandwidth_gbs=t.pos_number("memory_bandwidth_gbs"),
        nominal_gflops_fp32=t.pos_number("nominal_gflops_fp32"),
        nominal_int8_gops=t.pos_number("nominal_int8_gops"),
        fp32_flops_per_cycle=t.pos_number("fp32_flops_per_cycle", required=False),
        int8_ops_per_cycle=t.pos_number("int8_ops_per_cycle", required=False),
    )
    t.finish(_CPU_FIELDS)
    for nominal, per_cycle in (("nominal_gflops_fp32", "fp32_flops_per_cycle"),
                               ("nominal_int8_gops", "int8_ops_per_cycle")):
        rate = getattr(spec, per_cycle)
        if rate is None:
            continue
        expected = spec.cores * spec.clock_ghz * rate
        given = getattr(spec, nominal)
        if abs(given - expected) > _REL_TOLERANCE * expected:
            raise t.error_for(
                nominal, f"= {given:g} does not match cores x clock_ghz x {per_cycle} = "
                f"{spec.cores} x {spec.clock_ghz:g} x {rate:g} = {expected:g}")
    return spec


def _mcu(t: _Table) -> McuSpec:
    spec = McuSpec(sram_kb=t.pos_int("sram_kb"), flash_kb=t.pos_int("flash_kb"))
    t.finish(_MCU_FIELDS)
    return spec


def _fpga(t: _Table) -> FpgaSpec:
    part = t.text("part")
    counts = {r: (t.nonneg_int(r) if r == "uram" else t.pos_int(r)) for r in RESOURCES}
    limits_table = t.sub("utilisation_limit", required=True)
    limits = UtilisationLimit(**{r: limits_table.fraction(r) for r in RESOURCES})
    limits_table.finish(RESOURCES)
    spec = FpgaSpec(
        part=part, utilisation_limit=limits, clock_mhz=t.pos_number("clock_mhz"),
        weight_bits=t.bit_widths("weight_bits"), act_bits=t.bit_widths("act_bits"), **counts,
    )
    t.finish(_FPGA_FIELDS)
    return spec


def _sources(t: _Table | None, label: str) -> dict[str, str]:
    if t is None:
        return {}
    out: dict[str, str] = {}
    for key, value in t.table.items():
        t.seen.add(key)
        if not _names_a_field(key):
            raise t.error_for(
                repr(key), "does not name a field; use a top-level field, a section "
                "(\"cpu\", \"fpga\", \"mcu\", \"fpga.utilisation_limit\") or \"section.field\"")
        if not isinstance(value, str) or not value.strip():
            raise t.error_for(repr(key), f"must be a non-empty citation string, got {_show(value)}")
        out[key] = value.strip()
    return out


def _names_a_field(key: str) -> bool:
    if key in _TOP_FIELDS or key in _SECTION_FIELDS:
        return True
    section, _, name = key.rpartition(".")
    return section in _SECTION_FIELDS and name in _SECTION_FIELDS[section]


_MAX_INT = 2**53  # larger integers are not a count of anything on a device
_MAX_NUMBER = 1e15  # larger (or non-finite) numbers are not a clock, size or rate of a device


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _MAX_INT


def _is_number(value: Any) -> bool:
    """A finite int or float no larger than 1e15 (an int too large for a float is refused,
    not converted: math.isfinite would raise OverflowError on it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return abs(value) <= _MAX_NUMBER
    return math.isfinite(value) and abs(value) <= _MAX_NUMBER
