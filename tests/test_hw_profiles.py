"""Hardware profiles: shipped data, the schema-checked loader and the `hw` CLI commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import pytest

from edge_sdk import hw_profiles
from edge_sdk.cli import hw_cmd
from edge_sdk.errors import HardwareProfileError, OutputError, UnknownNameError

SHIPPED = {
    "raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "x86-gateway-j6412", "stm32h743",
    "pynq-z2", "ultra96-v2", "zcu104", "spartan7-xc7s15",
}

USER_CPU = """\
name = "my-board"
kind = "cpu"
vendor = "Acme"
description = "A test board."
preferred_format = "int8-onnx"

[cpu]
model = "Acme A1"
cores = 4
clock_ghz = 2.0
arch = "aarch64"
isa_features = ["asimd", "asimddp"]
memory_mb = 2048
memory_bandwidth_gbs = 10.0
fp32_flops_per_cycle = 8
nominal_gflops_fp32 = 64.0
nominal_int8_gops = 256.0

[sources]
"cpu.cores" = "Acme A1 datasheet, table 1"
"""

USER_FPGA = """\
name = "my-fpga"
kind = "fpga"
vendor = "Acme"
description = "A test FPGA."
preferred_format = "qonnx"

[fpga]
part = "xc7a35t"
lut = 20800
ff = 41600
bram18k = 100
uram = 0
dsp = 90
clock_mhz = 100
weight_bits = [4, 2, 8]
act_bits = [2, 4]

[fpga.utilisation_limit]
lut = 0.5
ff = 0.5
bram18k = 0.75
uram = 1.0
dsp = 0.9
"""


def _write(tmp_path: Path, text: str, name: str = "board.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------ shipped data


def test_names_are_the_shipped_devices_sorted():
    listed = hw_profiles.names()
    assert listed == sorted(listed)
    assert set(listed) == SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_profile_loads_and_cites_every_field(name):
    profile = hw_profiles.load(name)
    assert profile.name == name
    assert profile.path.endswith(f"{name}.toml")
    assert profile.sources, "a shipped profile must cite its sources"
    sections = {"cpu": profile.cpu, "mcu": profile.mcu, "fpga": profile.fpga}
    for section, spec in sections.items():
        if spec is None:
            continue
        for field in dataclasses.fields(spec):
            if getattr(spec, field.name) is None:
                continue
            key = f"{section}.{field.name}"
            assert key in profile.sources or section in profile.sources, f"{name}: {key} uncited"
    # kind decides which sections exist
    if profile.kind in ("cpu", "mcu"):
        assert profile.cpu is not None and profile.fpga is None
    if profile.kind == "mcu":
        assert profile.mcu is not None
    if profile.kind == "fpga":
        assert profile.fpga is not None and profile.mcu is None
        assert profile.preferred_format == "qonnx"
    else:
        assert profile.preferred_format == "int8-onnx"


@pytest.mark.parametrize("name", sorted(SHIPPED - {"spartan7-xc7s15"}))
def test_derived_numbers_say_so_and_add_up(name):
    cpu = hw_profiles.load(name).cpu
    sources = hw_profiles.load(name).sources
    for key in ("cpu.nominal_gflops_fp32", "cpu.nominal_int8_gops"):
        assert "derived" in sources[key].lower()
    assert cpu.nominal_gflops_fp32 == pytest.approx(
        cpu.cores * cpu.clock_ghz * cpu.fp32_flops_per_cycle, rel=1e-3)
    assert cpu.nominal_int8_gops == pytest.approx(
        cpu.cores * cpu.clock_ghz * cpu.int8_ops_per_cycle, rel=1e-3)


@pytest.mark.parametrize("name, part, lut, ff, bram18k, uram, dsp", [
    ("pynq-z2", "xc7z020clg400-1", 53200, 106400, 280, 0, 220),
    ("ultra96-v2", "xczu3eg-sbva484-1-i", 70560, 141120, 432, 0, 360),
    ("zcu104", "xczu7ev-ffvc1156-2-e", 230400, 460800, 624, 96, 1728),
    ("spartan7-xc7s15", "xc7s15ftgb196-1", 8000, 16000, 20, 0, 20),
])
def test_fpga_datasheet_values(name, part, lut, ff, bram18k, uram, dsp):
    fpga = hw_profiles.load(name).fpga
    assert (fpga.part, fpga.lut, fpga.ff, fpga.bram18k, fpga.uram, fpga.dsp) == (
        part, lut, ff, bram18k, uram, dsp)
    assert 2 in fpga.weight_bits and 8 in fpga.weight_bits and 16 not in fpga.weight_bits


def test_cpu_datasheet_values():
    pi4, pi5 = hw_profiles.load("raspberry-pi-4").cpu, hw_profiles.load("raspberry-pi-5").cpu
    assert (pi4.cores, pi4.clock_ghz, pi4.arch) == (4, 1.8, "aarch64")
    assert (pi5.cores, pi5.clock_ghz) == (4, 2.4)
    assert pi5.int8_dot_product and pi5.has("asimddp") and not pi4.int8_dot_product
    nano = hw_profiles.load("jetson-nano").cpu
    assert (nano.cores, nano.clock_ghz, nano.memory_mb, nano.memory_bandwidth_gbs) == (
        4, 1.43, 4096, 25.6)
    gateway = hw_profiles.load("x86-gateway-j6412").cpu
    assert gateway.arch == "x86_64" and not gateway.has("avx2") and gateway.has("SSE4_2")
    mcu = hw_profiles.load("stm32h743")
    assert (mcu.mcu.sram_kb, mcu.mcu.flash_kb, mcu.cpu.clock_ghz, mcu.cpu.arch) == (
        1056, 2048, 0.48, "armv7e-m")
    zynq = hw_profiles.load("pynq-z2").cpu
    assert (zynq.cores, zynq.clock_ghz, zynq.memory_mb) == (2, 0.65, 512)


def test_budget_is_total_times_limit_rounded_down():
    fpga = hw_profiles.load("pynq-z2").fpga
    assert fpga.usable("lut") == 37240  # 53,200 x 0.7
    assert fpga.usable("dsp") == 176  # 220 x 0.8
    assert fpga.usable("bram") == fpga.usable("bram18k") == 224
    budget = fpga.budget()
    assert set(budget) == set(hw_profiles.RESOURCES)
    for resource, usable in budget.items():
        limit = getattr(fpga.utilisation_limit, resource)
        assert usable == math.floor(fpga.total(resource) * limit + 1e-6) <= fpga.total(resource)
    assert hw_profiles.load("zcu104").fpga.usable("uram") == 76  # 96 x 0.8
    with pytest.raises(KeyError):
        fpga.usable("luts")
    assert fpga.supports(4, 4) and not fpga.supports(1, 4) and not fpga.supports(4, 16)


def test_export_only_targets():
    assert hw_profiles.load("stm32h743").export_only
    assert hw_profiles.load("spartan7-xc7s15").export_only
    assert hw_profiles.load("spartan7-xc7s15").cpu is None
    assert not hw_profiles.load("pynq-z2").export_only
    assert not hw_profiles.load("raspberry-pi-4").export_only


def test_profiles_are_frozen_and_to_dict_is_json():
    profile = hw_profiles.load("zcu104")
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.cpu.cores = 8  # type: ignore[misc]
    doc = json.loads(json.dumps(profile.to_dict()))
    assert doc["fpga"]["lut"] == 230400
    assert doc["fpga"]["budget"]["dsp"] == 1382
    assert doc["fpga"]["weight_bits"] == [2, 3, 4, 5, 6, 7, 8]
    assert doc["cpu"]["isa_features"] == ["asimd"]
    assert doc["mcu"] is None and doc["sources"]["fpga.lut"].startswith("AMD DS891")


# ------------------------------------------------------------------------ user files


def test_user_file_loads_from_a_path(tmp_path):
    path = _write(tmp_path, USER_CPU)
    for arg in (path, str(path)):
        profile = hw_profiles.load(arg)
        assert profile.name == "my-board" and profile.cpu.cores == 4
        assert profile.cpu.int8_dot_product
        assert profile.cpu.int8_ops_per_cycle is None  # optional
        assert profile.path == str(path.resolve())
        assert profile.sources == {"cpu.cores": "Acme A1 datasheet, table 1"}


def test_user_fpga_file_sorts_bit_widths_and_uses_its_limits(tmp_path):
    profile = hw_profiles.load(_write(tmp_path, USER_FPGA, "fpga.toml"))
    assert profile.cpu is None and profile.export_only
    assert profile.fpga.weight_bits == (2, 4, 8)
    assert profile.fpga.usable("lut") == 10400 and profile.fpga.usable("dsp") == 81


def _error(tmp_path: Path, text: str, name: str = "jetson.toml") -> str:
    with pytest.raises(HardwareProfileError) as info:
        hw_profiles.load(_write(tmp_path, text, name))
    message = str(info.value)
    assert name in message and "\n" not in message
    return message


def test_corrupt_toml_names_file_and_position(tmp_path):
    message = _error(tmp_path, USER_CPU.replace('cores = 4', 'cores = = 4'))
    assert "not valid TOML" in message and "line 9" in message


def test_missing_field_is_named(tmp_path):
    message = _error(tmp_path, USER_CPU.replace("cores = 4\n", ""))
    assert "[cpu].cores is missing" in message


def test_wrong_type_is_named_with_the_value(tmp_path):
    message = _error(tmp_path, USER_CPU.replace("cores = 4", 'cores = "four"'))
    assert message.endswith("jetson.toml: [cpu].cores must be a positive integer, got 'four'")


@pytest.mark.parametrize("old, new, expected", [
    ("memory_mb = 2048", "memory_mb = -1", "[cpu].memory_mb must be a positive number, got -1"),
    ("cores = 4", "cores = true", "[cpu].cores must be a positive integer, got True"),
    ("cores = 4", "cores = 2.5", "[cpu].cores must be a positive integer"),
    ('kind = "cpu"', 'kind = "gpu"', "kind must be one of 'cpu', 'mcu', 'fpga', got 'gpu'"),
    ('preferred_format = "int8-onnx"', 'preferred_format = "tflite"', "preferred_format must be"),
    ('arch = "aarch64"', "arch = 64", "[cpu].arch must be a lowercase architecture name"),
    ('isa_features = ["asimd", "asimddp"]', 'isa_features = "asimd"', "[cpu].isa_features"),
    ("[sources]", "[gpu]\ncores = 1\n\n[sources]", "[gpu] is not a known section; accepted here: schema_version, name"),
    ("cores = 4", "cores = 4\nthreads = 8", "[cpu].threads is not a known field"),
    ("nominal_gflops_fp32 = 64.0", "nominal_gflops_fp32 = 99.0",
     "[cpu].nominal_gflops_fp32 = 99 does not match cores x clock_ghz x fp32_flops_per_cycle"),
    ('"cpu.cores" =', '"cpu.coress" =', "does not name a field"),
    ('name = "my-board"', 'name = "my-board"\nschema_version = 2', "schema_version is 2"),
    ("[cpu]", "[mcu]\nsram_kb = 1\nflash_kb = 1\n\n[cpu]",
     "[mcu] section is only allowed when kind = 'mcu' (kind is 'cpu')"),
])
def test_bad_cpu_fields_are_named(tmp_path, old, new, expected):
    assert old in USER_CPU
    assert expected in _error(tmp_path, USER_CPU.replace(old, new, 1))


@pytest.mark.parametrize("old, new, expected", [
    ("lut = 0.5", "lut = 1.5", "[fpga.utilisation_limit].lut must be a fraction in (0, 1]"),
    ("dsp = 90", "dsp = -90", "[fpga].dsp must be a positive integer, got -90"),
    ("uram = 0\n", "", "[fpga].uram is missing"),
    ("act_bits = [2, 4]", "act_bits = []", "[fpga].act_bits must be a non-empty list"),
    ("weight_bits = [4, 2, 8]", "weight_bits = [0, 4]", "[fpga].weight_bits"),
    ("\n[fpga.utilisation_limit]\nlut = 0.5\nff = 0.5\nbram18k = 0.75\nuram = 1.0\ndsp = 0.9\n",
     "", "[fpga.utilisation_limit] section is missing (required)"),
    ('kind = "fpga"', 'kind = "cpu"', "[cpu] section is missing (required when kind = 'cpu')"),
])
def test_bad_fpga_fields_are_named(tmp_path, old, new, expected):
    assert old in USER_FPGA
    assert expected in _error(tmp_path, USER_FPGA.replace(old, new, 1), "fpga.toml")


def test_mcu_kind_requires_the_mcu_section(tmp_path):
    text = USER_CPU.replace('kind = "cpu"', 'kind = "mcu"')
    assert _error(tmp_path, text).endswith(
        "jetson.toml: [mcu] section is missing (required when kind = 'mcu')")


def test_missing_file_and_unknown_name():
    with pytest.raises(HardwareProfileError, match="nowhere.toml: no such file"):
        hw_profiles.load("/nowhere/nowhere.toml")
    with pytest.raises(UnknownNameError) as info:
        hw_profiles.load("jetson-nanoo")
    message = str(info.value)
    assert "jetson-nanoo" in message
    for name in SHIPPED:
        assert name in message


def test_shipped_names_are_case_insensitive():
    assert hw_profiles.load("PYNQ-Z2").name == "pynq-z2"


# ------------------------------------------------------------------------ CLI


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge-sdk")
    sub = parser.add_subparsers(dest="command")
    hw_cmd.register(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_list_table(capsys):
    assert _run(["hw", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "kind", "cpu", "fabric", "memory", "format"]
    assert len(lines) == 2 + len(SHIPPED)
    pynq = next(line for line in lines if line.startswith("pynq-z2"))
    assert "2 x 0.65 GHz armv7l" in pynq and "53,200 LUT / 220 DSP" in pynq
    assert "512 MB" in pynq and pynq.rstrip().endswith("qonnx")
    mcu = next(line for line in lines if line.startswith("stm32h743"))
    assert "1,056 KB SRAM" in mcu and "int8-onnx" in mcu


def test_cli_list_json(capsys, tmp_path):
    assert _run(["hw", "list", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in doc["profiles"]] == hw_profiles.names()
    zcu = next(p for p in doc["profiles"] if p["name"] == "zcu104")
    assert (zcu["lut"], zcu["dsp"], zcu["cores"], zcu["export_only"]) == (230400, 1728, 4, False)
    dest = tmp_path / "list.json"
    assert _run(["hw", "list", "--json", str(dest)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(dest.read_text()) == doc


def test_cli_show_text(capsys):
    assert _run(["hw", "show", "pynq-z2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pynq-z2  (fpga, TUL / AMD Xilinx)")
    assert "xc7z020clg400-1" in out and "37,240" in out and "2..8" in out
    assert "nominal fp32          5.2 GFLOP/s (derived)" in out
    assert "fpga.lut: AMD DS190" in out


def test_cli_show_json_is_the_full_profile(capsys, tmp_path):
    assert _run(["hw", "show", "stm32h743", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == json.loads(json.dumps(hw_profiles.load("stm32h743").to_dict()))
    assert doc["mcu"] == {"sram_kb": 1056, "flash_kb": 2048} and doc["export_only"] is True
    user = _write(tmp_path, USER_CPU)
    dest = tmp_path / "out.json"
    assert _run(["hw", "show", str(user), "--json", str(dest)]) == 0
    assert json.loads(dest.read_text())["name"] == "my-board"


def test_cli_show_errors_leave_no_file(tmp_path):
    with pytest.raises(UnknownNameError, match="shipped profiles"):
        _run(["hw", "show", "nope"])
    bad = _write(tmp_path, "name = ", "bad.toml")
    dest = tmp_path / "out.json"
    with pytest.raises(HardwareProfileError, match="bad.toml: not valid TOML"):
        _run(["hw", "show", str(bad), "--json", str(dest)])
    assert not dest.exists()
    with pytest.raises(OutputError):
        _run(["hw", "show", "pynq-z2", "--json", str(tmp_path / "missing" / "out.json")])
