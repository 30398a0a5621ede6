"""`edge-sdk profile` and `edge-sdk hw` through the real entry point: output and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_sdk.cli import main
from edge_sdk.profiler import CapabilityReport


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_sdk.cli", *argv], capture_output=True, text=True, timeout=300)


def test_profile_quick_json_file_round_trips(tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["profile", "--quick", "--model", "cnn1d", "--ratios", "1,1/4", "--budget-mb", "512", "--json", str(out)])
    assert code == 0
    report = CapabilityReport.from_json(out.read_text())
    assert [s.ratio for s in report.model.sizes] == [1.0, 0.25]
    assert report.capacity.budget_mb == 512 and report.capacity.max_ratio == 1.0
    text = capsys.readouterr().out
    assert "model cnn1d, input 1x40, batch 8" in text and "capacity  score" in text


def test_profile_json_to_stdout_is_only_json():
    result = run_cli("profile", "--quick", "--no-model", "--threads", "1", "--json", "-")
    assert result.returncode == 0, result.stderr
    report = CapabilityReport.from_json(result.stdout)
    assert report.model is None and report.device.threads == 1


def test_profile_hw_estimate():
    result = run_cli("profile", "--hw", "raspberry-pi-5", "--model", "cnn1d", "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"]["estimated"] is True and report["device"]["source"] == "hw:raspberry-pi-5"
    assert all(size["train_step_latency"]["runs"] == 0 for size in report["model"]["sizes"])
    device = report["device"]
    if device["kernel_efficiency"] is not None:  # this machine's peak is known: a prediction, not a bound
        assert device["gflops_fp32"] < device["peak_gflops_fp32"]


def test_profile_validate_prints_rates_verdicts_and_rounds(tmp_path):
    out = tmp_path / "r.json"
    result = run_cli("profile", "--quick", "--model", "cnn1d", "--ratios", "1,1/4", "--validate",
                     "--validate-steps", "3", "--deadline", "60", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = CapabilityReport.from_json(out.read_text())
    assert report.schema_version == 2 and report.run is not None and report.run.deadline_seconds == 60
    assert [r.ratio for r in report.validation.rounds] == [1.0, 0.25]
    assert report.device.rates.fp32.verdict in result.stdout and "per CPU-s" in result.stdout
    assert "validation: real local rounds" in result.stdout
    assert all(f"warning: {w}" in result.stdout for w in report.warnings)


BAD_INPUT = [
    (["profile", "--model", "resnet99"], "valid names: cnn1d, mixer_tiny, resnet18, resnet8, vit_tiny"),
    (["profile", "--input-shape", "3,,32"], "malformed input shape"),
    (["profile", "--input-shape", "3,-1,32"], "malformed input shape"),
    (["profile", "--budget-ms", "fast"], "--budget-ms: 'fast' is not a number"),
    (["profile", "--budget-mb", "-4"], "--budget-mb"),
    (["profile", "--ratios", "1,2"], "outside (0, 1]"),
    (["profile", "--hw", "raspberry-pi-9"], "raspberry-pi-4"),
    (["hw", "show", "no-such-board"], "no-such-board"),
    (["profile", "--threads", "1000000"], "threads=1000000 is not accepted; expected an integer from 1 to"),
    (["profile", "--threads", "0"], "--threads: '0' must be at least 1"),
    (["profile", "--validate", "--hw", "raspberry-pi-5"], "--validate trains the profiled model on this device"),
    (["profile", "--validate", "--no-model"], "cannot go with --hw or --no-model"),
    (["profile", "--validate-steps", "20000", "--validate"], "--validate-steps 20000 is too many"),
    (["profile", "--deadline", "0"], "--deadline: '0' must be a positive finite number"),
    (["profile", "--batch-size", "100000"], "batch size 100000 is not accepted"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUT)
def test_bad_input_one_line_exit_2(argv, message):
    result = run_cli(*argv)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_unwritable_json_path_fails_before_work_and_writes_nothing(tmp_path):
    target = tmp_path / "missing-folder" / "report.json"
    result = run_cli("profile", "--quick", "--json", str(target))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not target.exists()


def test_json_path_that_is_a_directory(tmp_path):
    result = run_cli("profile", "--quick", "--no-model", "--json", str(tmp_path))
    assert result.returncode == 2 and "is a directory" in result.stderr


def test_failed_profile_keeps_existing_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("previous")
    result = run_cli("profile", "--hw", str(tmp_path / "corrupt.toml"), "--json", str(target))
    assert result.returncode == 2
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_corrupt_hardware_profile_toml(tmp_path):
    bad = tmp_path / "board.toml"
    bad.write_text('name = "board"\nkind = "cpu\n')
    result = run_cli("profile", "--hw", str(bad), "--no-model")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "board.toml" in line and len(line.splitlines()) == 1 and "Traceback" not in line


def test_hw_list_and_show():
    listing = run_cli("hw", "list")
    assert listing.returncode == 0 and "pynq-z2" in listing.stdout and "53,200 LUT" in listing.stdout
    shown = run_cli("hw", "show", "zcu104", "--json", "-")
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["fpga"]["dsp"] == 1728
