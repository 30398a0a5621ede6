"""Integer-only ONNX export (onnxruntime static quantization) and the integer-only checker."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edge_sdk import models
from edge_sdk.errors import InvalidInputError, OutputError, UnsupportedOpError, VerificationError
from edge_sdk.export import check_integer_only, to_int_onnx
from edge_sdk.export._onnx_rewrite import pad_stem_channels, rewrite_for_quantization
from export_helpers import digits as load_digits_xy
from export_helpers import tiny_cnn, train


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits_xy()
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="module")
def trained_cnn(digits):
    torch.manual_seed(0)
    x, y, _, _ = digits
    return train(tiny_cnn(), x, y)


# ------------------------------------------------------------------- integer-only checker


def _model(nodes, inits=(), out_type=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", out_type, [1, 4])],
        initializer=list(inits),
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


_QPARAMS = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "z")]


def test_checker_flags_a_float_op_between_quantize_and_dequantize():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="in_q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"], name="mid_dq"),
        helper.make_node("Sigmoid", ["xf"], ["h"], name="layer3/act"),
        helper.make_node("QuantizeLinear", ["h", "s", "z"], ["hq"], name="mid_q"),
        helper.make_node("DequantizeLinear", ["hq", "s", "z"], ["y"], name="out_dq"),
    ]
    report = check_integer_only(_model(nodes, _QPARAMS))
    assert not report.integer_only
    flagged = {(op.name, op.op_type) for op in report.float_ops}
    assert ("layer3/act", "Sigmoid") in flagged
    assert ("mid_dq", "DequantizeLinear") in flagged and ("mid_q", "QuantizeLinear") in flagged
    assert {op.name for op in report.boundary} == {"in_q", "out_dq"}


def test_checker_passes_an_integer_graph_and_fails_a_float_graph():
    integer = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="in_q"),
        helper.make_node("Transpose", ["xq"], ["t"], name="t", perm=[0, 1]),
        helper.make_node("DequantizeLinear", ["t", "s", "z"], ["y"], name="out_dq"),
    ]
    assert check_integer_only(_model(integer, _QPARAMS)).integer_only
    float_graph = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    report = check_integer_only(_model(float_graph))
    assert not report.integer_only and [op.op_type for op in report.float_ops] == ["Relu"]


# ------------------------------------------------------------------- int8 export


def test_small_cnn_exports_integer_only_with_high_agreement(trained_cnn, digits, tmp_path):
    x, _, xt, yt = digits
    out = tmp_path / "cnn.onnx"
    report = to_int_onnx(trained_cnn, x[:128], out, eval_data=(xt, yt), measure_latency=False)
    assert report.integer_only and report.float_ops == []
    assert report.top1_agreement >= 0.97
    assert report.accuracy_float > 0.8
    assert report.accuracy_float - report.accuracy_int <= 0.03
    assert report.file_bytes == out.stat().st_size < report.fp32_file_bytes
    assert report.activation_type in ("uint8", "int8") and report.per_channel
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops
    # the written file runs in onnxruntime and gives the reported predictions
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": xt[:1]})[0]
    assert got.shape == (1, 10)
    assert sorted(os.listdir(tmp_path)) == ["cnn.onnx"]  # no temporary file left behind
    doc = report.to_dict()
    assert doc["size_ratio"] == pytest.approx(report.file_bytes / report.fp32_file_bytes)


def test_mlp_exports_integer_only_and_caller_model_is_untouched(tmp_path):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    report = to_int_onnx(mlp, x, tmp_path / "mlp.onnx", measure_latency=False)
    assert report.integer_only
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    assert mlp.training is False


def test_latency_is_measured_for_both_graphs(trained_cnn, digits, tmp_path):
    x = digits[0]
    report = to_int_onnx(trained_cnn, x[:32], tmp_path / "m.onnx", threads=1)
    assert report.latency_ms_int8 > 0 and report.latency_ms_fp32 > 0 and report.threads == 1
    assert report.latency_ratio == pytest.approx(report.latency_ms_int8 / report.latency_ms_fp32)


def test_vit_reports_float_ops_and_integer_friendly_variant_is_integer_only(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    vit = models.create("vit_tiny", width=0.25, depth=1).eval()
    report = to_int_onnx(vit, x, tmp_path / "vit.onnx", measure_latency=False)
    assert not report.integer_only
    kinds = report.extra["float_op_types"]
    assert "LayerNormalization" in kinds and "Erf" in kinds
    friendly = models.create("vit_tiny", width=0.25, depth=1, norm="batchnorm", act="relu").eval()
    report = to_int_onnx(friendly, x, tmp_path / "vit_int.onnx", measure_latency=False)
    assert report.integer_only, report.float_ops
    assert any("BatchNormalization -> Mul+Add" in c for c in report.extra["rewrites"])


def test_require_integer_only_refuses_and_writes_nothing(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    vit = models.create("vit_tiny", width=0.25, depth=1).eval()
    out = tmp_path / "vit.onnx"
    with pytest.raises(VerificationError, match="LayerNormalization"):
        to_int_onnx(vit, x, out, require_integer_only=True, measure_latency=False)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_rewrites_are_exact(tmp_path):
    from edge_sdk.export._torch_onnx import export_float_onnx
    from edge_sdk.export.int_onnx import _preprocess

    torch.manual_seed(0)
    vit = models.create("vit_tiny", width=0.25, depth=1, norm="batchnorm", act="relu")
    vit.train()
    with torch.no_grad():
        vit(torch.randn(8, 3, 32, 32))  # non-trivial BatchNorm statistics
    vit.eval()
    x = torch.randn(1, 3, 32, 32)
    path = str(tmp_path / "v.onnx")
    export_float_onnx(vit, x, path)
    _preprocess(path, path)  # shape inference + constant folding, as the exporter does
    original = onnx.load(path)
    rewritten, changes = rewrite_for_quantization(onnx.load(path))
    rewritten, padded = pad_stem_channels(rewritten)
    assert changes and padded
    ops = {n.op_type for n in rewritten.graph.node}
    assert "BatchNormalization" not in ops and "Gather" not in ops
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, {"input": x.numpy()})[0]  # noqa: E731
    np.testing.assert_allclose(run(rewritten), run(original), atol=1e-5)


# ------------------------------------------------------------------- bad input


class _Fft(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()


def test_unsupported_op_is_named_with_its_layer(tmp_path):
    model = nn.Sequential(nn.Linear(8, 8), _Fft()).eval()
    x = np.zeros((4, 8), np.float32)
    with pytest.raises(UnsupportedOpError) as info:
        to_int_onnx(model, x, tmp_path / "m.onnx", measure_latency=False)
    message = str(info.value)
    assert "layer '1'" in message and "aten::fft_rfft" in message and "\n" not in message
    assert not (tmp_path / "m.onnx").exists()


def test_wrong_calibration_shape_is_refused(trained_cnn, tmp_path):
    cnn = models.create("cnn1d").eval()
    with pytest.raises(InvalidInputError, match=r"shape \(4, 3, 32\).*\(1, 40\)"):
        to_int_onnx(cnn, np.zeros((4, 3, 32), np.float32), tmp_path / "m.onnx")
    with pytest.raises(InvalidInputError, match="do not fit the model"):
        to_int_onnx(trained_cnn, np.zeros((4, 3, 8, 8), np.float32), tmp_path / "m.onnx")
    with pytest.raises(InvalidInputError, match="NaN"):
        to_int_onnx(cnn, np.full((4, 1, 40), np.nan, np.float32), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_bad_options_and_unwritable_output(trained_cnn, tmp_path):
    x = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(InvalidInputError, match="activation_type"):
        to_int_onnx(trained_cnn, x, tmp_path / "m.onnx", activation_type="int4")
    with pytest.raises(InvalidInputError, match="calibration_method"):
        to_int_onnx(trained_cnn, x, tmp_path / "m.onnx", calibration_method="mse")
    with pytest.raises(OutputError, match="does not exist"):
        to_int_onnx(trained_cnn, x, tmp_path / "missing" / "m.onnx")
