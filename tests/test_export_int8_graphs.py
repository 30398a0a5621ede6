"""int8 ONNX graphs other runtimes take (#13): the QDQ graph of standard ops (run in OpenVINO),
the batch axis, integer arithmetic from the graph input on, and what every file says about
itself (producer, version, doc string, metadata, only the opset domains used)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_sdk.errors import InvalidInputError
from edge_sdk.export import _ort, check_integer_only, to_int_onnx
from edge_sdk.export._input_quant import quantize_input_first
from edge_sdk.export._metadata import read_metadata
from export_helpers import reference_model

MODELS = ["cnn1d", "resnet8"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{(model, quant_format): (path, report, eval samples)} for cnn1d and resnet8."""
    tmp = tmp_path_factory.mktemp("int8")
    out = {}
    for name in MODELS:
        model, x = reference_model(name)
        for fmt in ("qoperator", "qdq"):
            path = tmp / f"{name}.{fmt}.onnx"
            report = to_int_onnx(model, x[:64], path, eval_data=x[64:], quant_format=fmt,
                                 metadata={"model": name, "plan": "none", "kept_fraction": 1.0},
                                 measure_latency=False)
            out[name, fmt] = (path, report, x[64:])
    return out


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fmt", ["qoperator", "qdq"])
def test_graph_is_integer_from_its_input(exported, name, fmt):
    path, report, _ = exported[name, fmt]
    model = onnx.load(path)
    check = check_integer_only(model)
    assert report.integer_only and check.integer_only, check.float_ops
    assert check.style == fmt and report.extra["quant_format"] == fmt
    readers = [n.op_type for n in model.graph.node if "input" in n.input]
    assert readers == ["QuantizeLinear"]  # no float Pad / Reshape / Transpose before it


@pytest.mark.parametrize("name", MODELS)
def test_qdq_graph_uses_standard_ops_only(exported, name):
    model = onnx.load(exported[name, "qdq"][0])
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert [o.domain for o in model.opset_import] == [""]
    ops = {n.op_type for n in model.graph.node}
    assert "Conv" in ops and not any(op.startswith(("QLinear", "QGemm")) for op in ops)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fmt", ["qoperator", "qdq"])
def test_every_file_says_what_it_is(exported, name, fmt):
    model = onnx.load(exported[name, fmt][0])
    assert model.producer_name == "edge-sdk" and model.producer_version and model.model_version >= 1
    assert name in model.doc_string and fmt in model.doc_string
    meta = read_metadata(model)
    assert meta["model"] == name and meta["plan"] == "none" and meta["kept_fraction"] == "1"
    assert meta["quant_format"] == fmt and meta["weight_bits"] == "8" and meta["act_bits"] == "8"
    assert meta["calibration"].startswith("minmax, 64 samples") and meta["batch_size"] == "1"
    used = {n.domain or "" for n in model.graph.node}
    assert {o.domain for o in model.opset_import} == used | {""}


@pytest.mark.parametrize("name", MODELS)
def test_qdq_graph_matches_the_qoperator_graph_in_onnxruntime(exported, name):
    _, op_report, x = exported[name, "qoperator"]
    _, qdq_report, _ = exported[name, "qdq"]
    assert qdq_report.top1_agreement >= 0.95 and op_report.top1_agreement >= 0.95


@pytest.mark.parametrize("name", MODELS)
def test_openvino_runs_the_qdq_graph_like_onnxruntime(exported, name):
    ov = pytest.importorskip("openvino", reason="OpenVINO is in the test extra: pip install 'edge-fl-sdk[test]'")
    path, _, x = exported[name, "qdq"]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU")
    got = np.concatenate([np.asarray(compiled(x[i : i + 1])[0]) for i in range(x.shape[0])])
    want = _ort.run(_ort.make_session(str(path)), x)
    assert got.shape == want.shape
    assert float(np.mean(got.argmax(1) == want.argmax(1))) == 1.0


@pytest.mark.parametrize("batch", [None, 4])
def test_batch_size_fixed_or_dynamic(batch, tmp_path):
    model, x = reference_model("cnn1d", n=40)
    path = tmp_path / "m.onnx"
    report = to_int_onnx(model, x[:32], path, batch_size=batch, quant_format="qdq", measure_latency=False)
    dim = onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0]
    assert (dim.dim_param != "") if batch is None else (dim.dim_value == batch)
    assert report.extra["batch_size"] == batch and report.integer_only
    out = _ort.make_session(str(path)).run(None, {"input": x[:4]})[0]
    assert out.shape == (4, 10)
    assert read_metadata(onnx.load(path))["batch_size"] == ("dynamic" if batch is None else "4")


def test_bad_quant_format_is_refused_before_any_work(tmp_path):
    model, x = reference_model("cnn1d", n=8)
    with pytest.raises(InvalidInputError, match="quant_format='qcdq' is not accepted; expected one of qoperator, qdq"):
        to_int_onnx(model, x, tmp_path / "m.onnx", quant_format="qcdq")
    assert not (tmp_path / "m.onnx").exists()


def _pad_then_quantize() -> onnx.ModelProto:
    """input -> Pad (channels, float) -> QuantizeLinear -> DequantizeLinear -> output."""
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["padded"], name="stem_pad", mode="constant"),
        helper.make_node("QuantizeLinear", ["padded", "s", "z"], ["q"], name="in_q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["logits"], name="out_dq"),
    ]
    inits = [numpy_helper.from_array(np.array([0, 0, 0, 0, 1, 0], np.int64), "pads"),
             numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_checker_reports_a_float_op_before_the_first_quantizer_and_the_rewrite_removes_it():
    model = _pad_then_quantize()
    report = check_integer_only(model)
    assert not report.integer_only and "stem_pad" in [op.name for op in report.float_ops]
    x = np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32)
    want = _ort.make_session(model).run(None, {"input": x})[0]
    moved, changes = quantize_input_first(model)
    assert changes and check_integer_only(moved).integer_only
    assert [n.op_type for n in moved.graph.node] == ["QuantizeLinear", "Pad", "DequantizeLinear"]
    np.testing.assert_array_equal(_ort.make_session(moved).run(None, {"input": x})[0], want)
