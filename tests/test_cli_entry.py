"""The command's entry points: `python -m edge_sdk` and `python -m edge_sdk.cli` run `edge-sdk`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["edge_sdk", "edge_sdk.cli"])
def test_python_dash_m_runs_the_command(module):
    out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("edge-sdk ")


def test_help_names_the_flow_and_what_extract_writes():
    env = dict(os.environ, COLUMNS="400")  # argparse wraps at hyphens otherwise
    out = subprocess.run([sys.executable, "-m", "edge_sdk", "--help"], capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "write the plan file" in text and "(and the submodel)" not in text
    assert "edge-fl-sdk" in text
