"""FINN acceptance (#13): ``bench/finn_check.py`` on a FINN checkout the user has.

FINN is not on the package index, so this runs only when ``EDGE_SDK_FINN_SRC`` names a FINN
checkout (and ``EDGE_SDK_QONNX_SRC`` the qonnx checkout at the commit FINN pins, unless it is
at ``$EDGE_SDK_FINN_SRC/deps/qonnx``); the script builds FINN's own environment once
(``EDGE_SDK_FINN_VENV``) and takes minutes, so the test is marked slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("EDGE_SDK_FINN_SRC"),
                       reason="set EDGE_SDK_FINN_SRC to a FINN checkout to run bench/finn_check.py"),
]


@pytest.fixture(scope="module")
def finn_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("finn") / "finn_check"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "finn_check.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return json.loads(out.with_suffix(".json").read_text())


@pytest.mark.parametrize("name", ["cnn1d", "resnet8"])
def test_finn_takes_the_model_into_one_dataflow_partition(finn_check, name):
    res = finn_check["results"][name]
    assert not res.get("error"), res.get("error")
    for step in res["steps"]:
        assert step["diff_steps"] <= 1e-3, f"{name} after {step['step']}: {step['diff_steps']} steps"
    assert [s["step"] for s in res["steps"]] == ["ConvertQONNXtoFINN", "Streamline", "convert_to_hw_layers"]
    assert res["partitions"] == 1 and finn_check["pass"][name]
    # every layer in HW; only the input quantizer, the layout change and the output scale on the host
    assert res["hw_layers"].get("MVAU", 0) >= 4
    assert {"MultiThreshold", "Transpose", "Mul"} >= set(res["non_hw_nodes"]) - {"Add", "Flatten"}


def test_finn_streams_the_residual_adds_of_resnet8(finn_check):
    res = finn_check["results"]["resnet8"]
    assert res["recipe"] == "resnet"
    # three BasicBlocks: each Add as AddStreams, each fork as DuplicateStreams, the pool as GlobalAccPool
    assert res["hw_layers"].get("AddStreams") == 3 and res["hw_layers"].get("DuplicateStreams") == 3
    assert res["hw_layers"].get("GlobalAccPool") == 1
    assert "Add" not in res["non_hw_nodes"] and "GlobalAveragePool" not in res["non_hw_nodes"]
