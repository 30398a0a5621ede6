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
from edge_sdk.export import _ort
from edge_sdk.export._onnx_rewrite import (
    flatten_channels_last,
    pad_stem_channels,
    rewrite_for_ort_layout,
    rewrite_for_quantization,
    stem_space_to_depth,
)
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


# ------------------------------------------------------------------- layout rewrites (after quantization)


def _rgb_cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    ).eval()  # fmt: skip


def _quantized_without_layout_rewrites(model, x, tmp_path, name, **kw):
    path = tmp_path / f"{name}.onnx"
    report = to_int_onnx(model, x, path, layout_rewrites=False, measure_latency=False, **kw)
    assert not any("space-to-depth" in c or "channels-last" in c for c in report.extra["rewrites"])
    return onnx.load(path)


def _outputs(model, x):
    sess = _ort.make_session(model)
    return np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(x.shape[0])])


@pytest.mark.parametrize("case", ["grey_stride1", "rgb_stride2", "rgb_dynamic_batch"])
def test_layout_rewrites_keep_outputs_identical_and_integer_only(case, tmp_path):
    rng = np.random.default_rng(0)
    if case == "grey_stride1":
        model, x, kw = tiny_cnn().eval(), rng.random((40, 1, 8, 8), dtype=np.float32), {}
    else:
        model, x = _rgb_cnn(), rng.standard_normal((40, 3, 8, 8)).astype(np.float32)
        kw = {"batch_size": None} if case == "rgb_dynamic_batch" else {}
    before = _quantized_without_layout_rewrites(model, x[:32], tmp_path, case, **kw)
    after = onnx.ModelProto()
    after.CopyFrom(before)
    after, changes = rewrite_for_ort_layout(after, _ort.tensor_shapes(after, x[:1]))
    assert any("stem as space-to-depth x4" in c for c in changes), changes
    if case != "grey_stride1":  # tiny_cnn pools to 1x1 first; here Flatten sees 16 x 4 x 4
        assert any("flattens channels-last" in c for c in changes), changes
    assert check_integer_only(after).integer_only
    ops = [n.op_type for n in after.graph.node]
    assert "Pad" not in ops  # the channel padding of the stem is gone
    stem = next(n for n in after.graph.node if n.op_type == "QLinearConv")
    weight = next(i for i in after.graph.initializer if i.name == stem.input[3])
    c_out = 8 if case == "grey_stride1" else 16
    phases = 4 if case == "grey_stride1" else 2  # 4 pixels per block / stride
    assert list(weight.dims[:2]) == [phases * c_out, 4 if case == "grey_stride1" else 12]
    x_eval = rng.standard_normal((16, *x.shape[1:])).astype(np.float32)
    np.testing.assert_array_equal(_outputs(after, x_eval), _outputs(before, x_eval))
    if case == "rgb_dynamic_batch":
        run = lambda m: _ort.make_session(m).run(None, {"input": x_eval[:3]})[0]  # noqa: E731
        np.testing.assert_array_equal(run(after), run(before))


def test_space_to_depth_of_a_1d_stem_is_exact(tmp_path):
    model = models.create("cnn1d").eval()
    x = np.random.default_rng(0).standard_normal((40, 1, 40)).astype(np.float32)
    before = _quantized_without_layout_rewrites(model, x[:32], tmp_path, "cnn1d")
    after = onnx.ModelProto()
    after.CopyFrom(before)
    shapes = _ort.tensor_shapes(after, x[:1])
    after, none = stem_space_to_depth(after, shapes)  # 1-d stems are left alone by default
    assert none == []
    after, changes = stem_space_to_depth(after, shapes, ranks=(1,))
    assert changes and "x4" in changes[0]
    assert check_integer_only(after).integer_only
    np.testing.assert_array_equal(_outputs(after, x[32:]), _outputs(before, x[32:]))


def test_flatten_channels_last_is_left_alone_when_the_flattened_tensor_is_read_elsewhere(tmp_path):
    x = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)
    model = _quantized_without_layout_rewrites(_rgb_cnn(), x, tmp_path, "rgb")
    shapes = _ort.tensor_shapes(model, x[:1])
    flatten = next(n for n in model.graph.node if n.op_type == "Flatten")
    model.graph.output.append(onnx.ValueInfoProto(name=flatten.output[0]))  # its order is seen outside
    _, changes = flatten_channels_last(model, shapes)
    assert changes == []
    model.graph.output.pop()
    _, changes = flatten_channels_last(model, shapes)
    assert len(changes) == 1


def test_export_applies_layout_rewrites_with_the_same_predictions(tmp_path):
    x = np.random.default_rng(0).standard_normal((48, 3, 8, 8)).astype(np.float32)
    model = _rgb_cnn()
    on = to_int_onnx(model, x[:32], tmp_path / "on.onnx", eval_data=x[32:], layout_rewrites=True,
                     measure_latency=False)
    off = to_int_onnx(model, x[:32], tmp_path / "off.onnx", eval_data=x[32:], layout_rewrites=False,
                      measure_latency=False)
    assert on.integer_only and off.integer_only and on.warnings == []
    assert sum("space-to-depth" in c or "channels-last" in c for c in on.extra["rewrites"]) == 2
    assert on.max_abs_logit_error == off.max_abs_logit_error
    np.testing.assert_array_equal(_outputs(onnx.load(tmp_path / "on.onnx"), x[32:]),
                                  _outputs(onnx.load(tmp_path / "off.onnx"), x[32:]))


def test_a_layout_rewrite_that_changes_outputs_is_dropped_with_a_warning(tmp_path, monkeypatch):
    import edge_sdk.export.int_onnx as int_onnx

    def broken(model, shapes):  # stands in for a faulty rewrite: shifts the last layer's bias
        gemm = next(n for n in model.graph.node if n.op_type == "QGemm")
        bias = next(i for i in model.graph.initializer if i.name == gemm.input[6])
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 50, bias.name))
        return model, ["broken rewrite"]

    x = np.random.default_rng(0).standard_normal((48, 3, 8, 8)).astype(np.float32)
    off = to_int_onnx(_rgb_cnn(), x[:32], tmp_path / "off.onnx", eval_data=x[32:], layout_rewrites=False,
                      measure_latency=False)
    monkeypatch.setattr(int_onnx, "rewrite_for_ort_layout", broken)
    rep = to_int_onnx(_rgb_cnn(), x[:32], tmp_path / "m.onnx", eval_data=x[32:], layout_rewrites=True,
                      measure_latency=False)
    assert any("changed the outputs" in w for w in rep.warnings)
    assert "broken rewrite" not in rep.extra["rewrites"]
    np.testing.assert_array_equal(_outputs(onnx.load(tmp_path / "m.onnx"), x[32:]),
                                  _outputs(onnx.load(tmp_path / "off.onnx"), x[32:]))
    assert rep.max_abs_logit_error == off.max_abs_logit_error


def test_latency_helpers_time_both_sessions_the_same_way(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    to_int_onnx(_rgb_cnn(), x, tmp_path / "m.onnx", measure_latency=False)
    sess = _ort.make_session(str(tmp_path / "m.onnx"))
    for method in _ort.LATENCY_METHODS:
        (t,) = _ort.paired_latency_ms([sess], x[:1], method=method, min_rounds=3, min_seconds=0.0, warmup=1)
        assert t > 0
    *graphs, floor = _ort.call_floor_ms([sess, sess], x[:1], min_seconds=0.0)
    assert len(graphs) == 2 and floor > 0
    with pytest.raises(InvalidInputError, match="latency method"):
        _ort.paired_latency_ms([sess], x[:1], method="magic")
    nodes = _ort.profile_nodes(str(tmp_path / "m.onnx"), x[:1], runs=20, skip=5)
    assert {"QLinearConv", "QGemm"} <= {n["op_type"] for n in nodes}
    assert all(n["mean_us"] >= 0 for n in nodes)


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
