"""hls4ml acceptance (#13): the ``flow="hls4ml"`` QONNX file of cnn1d and resnet8 converts with
hls4ml's documented QONNX intake, compiles its C simulation with g++, and ``predict`` matches
qonnx execution of the file within one output quantization step with the same argmax.

Needs the ``test`` extra (hls4ml) and g++; each model compiles for 20-90 s, so the tests are
marked slow."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from edge_sdk.export import BrevitasExportConfig, to_qonnx
from edge_sdk.export.fpga_export import _execute_qonnx
from export_helpers import hls4ml_model, reference_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("g++") is None, reason="hls4ml's C simulation needs g++ (apt-get install g++)"),
]

@pytest.mark.parametrize("name, io_type", [
    ("cnn1d", "io_parallel"),
    ("resnet8", "io_stream"),
])
def test_hls4ml_converts_compiles_and_matches_qonnx(name, io_type, tmp_path):
    pytest.importorskip("hls4ml", reason="hls4ml is in the test extra: pip install 'edge-fl-sdk[test]'")
    model, x = reference_model(name, n=96)
    config = BrevitasExportConfig.for_flow("hls4ml", weight_bits=6, act_bits=8, verify_samples=8)
    path = tmp_path / f"{name}.qonnx.onnx"
    report = to_qonnx(model, x[:64], path, config, eval_data=x[64:])
    hls = hls4ml_model(path, tmp_path / "hls", io_type)
    want = _execute_qonnx(onnx.load(path), x[64:])
    # the graph takes channels-first input (qonnx puts the Transpose to channels-last inside)
    got = np.asarray(hls.predict(np.ascontiguousarray(x[64:]))).reshape(want.shape)
    step = report.extra["output_step"]
    assert float(np.max(np.abs(got - want))) <= step * (1 + 1e-6)
    assert float(np.mean(got.argmax(1) == want.argmax(1))) == 1.0
