"""Ctrl-C and SIGTERM at any moment: one line, exit 130 / 143, no temporary folder left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


def _start(args, tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.Popen([sys.executable, "-m", "edge_sdk", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_start_up_is_one_line(sig, code, word, tmp_path):
    proc = _start(["export", "--model", "resnet8", "--format", "int8-onnx", "--out", str(tmp_path / "m.onnx")],
                  tmp_path)
    time.sleep(0.8)  # still importing torch and the command modules
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    if proc.returncode == 2:  # pragma: no cover - the machine was too fast: the export ran out first
        pytest.skip("the command finished before the signal")
    assert proc.returncode == code and "Traceback" not in err and len(lines) == 1 and word in lines[0], err


def test_sigterm_during_export_removes_its_temporary_folder(tmp_path):
    out = tmp_path / "m.qonnx.onnx"
    proc = _start(["export", "--model", "resnet8", "--format", "qonnx", "--calib-synthetic", "256",
                   "--out", str(out)], tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.name.startswith("edge_sdk_") for p in tmp_path.iterdir()):
        time.sleep(0.05)  # wait until the export has made its temporary folder
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert not any(p.name.startswith("edge_sdk_") for p in tmp_path.iterdir()), list(tmp_path.iterdir())
    assert not out.exists()
