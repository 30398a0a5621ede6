"""The ``flow="finn"`` residual graph (#13), checked without FINN: both inputs of every residual
Add carry one signed integer type at one scale (FINN's AddStreams takes nothing else), and the
requantizer that makes the identity shortcut signed leaves its values as they are. The FINN run
itself is ``bench/finn_check.py`` (``tests/test_export_finn.py``)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edge_sdk.export import BrevitasExportConfig, to_qonnx
from export_helpers import reference_model


def _residual_adds(model: onnx.ModelProto):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    for add in model.graph.node:
        if add.op_type == "Add" and all(i not in inits for i in add.input):
            quants = [producer[i] for i in add.input]
            yield add, [(q, {a.name: helper.get_attribute_value(a) for a in q.attribute},
                         [inits.get(p) for p in q.input[1:]]) for q in quants], producer


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finn_graph")
    model, x = reference_model("resnet8", n=72)
    out = {}
    for flow in ("finn", None):
        config = BrevitasExportConfig.for_flow(flow, weight_bits=4, act_bits=4, verify_samples=8)
        path = tmp / f"resnet8.{flow}.onnx"
        out[flow] = (path, to_qonnx(model, x[:64], path, config, eval_data=x[64:]), x[64:])
    return out


def test_both_inputs_of_each_residual_add_have_one_signed_type_and_scale(exports):
    path, report, _ = exports["finn"]
    model = onnx.load(path)
    adds = list(_residual_adds(model))
    assert len(adds) == 3 and report.max_abs_error_steps <= 1
    for add, inputs, _ in adds:
        assert all(q.op_type == "Quant" for q, _, _ in inputs), add.name
        (_, a0, p0), (_, a1, p1) = inputs
        assert a0["signed"] == a1["signed"] == 1, f"{add.name}: an unsigned input"
        assert float(p0[0][0]) == float(p1[0][0]), f"{add.name}: two scales"
        assert float(p0[2][0]) == float(p1[2][0]), f"{add.name}: two bit widths"


def test_identity_shortcut_requantizer_is_exact(exports):
    """The shortcut's signed requantizer (act_bits + 1 bits) reads the ReLU's unsigned act_bits
    quantizer at the same scale, so every value passes unchanged (checked by executing it)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from edge_sdk.export._compat import qonnx_ir_fix

    path, _, x = exports["finn"]
    model = onnx.load(path)
    shortcut = []
    for add, inputs, producer in _residual_adds(model):
        for q, attrs, params in inputs:
            src = producer.get(q.input[0])
            if src is not None and src.op_type == "Quant":  # a requantizer of a quantized tensor
                src_attrs = {a.name: helper.get_attribute_value(a) for a in src.attribute}
                src_params = {i: numpy_helper.to_array(t) for t in model.graph.initializer
                              for i in src.input[1:] if t.name == i}
                assert src_attrs["signed"] == 0
                assert float(src_params[src.input[1]][0]) == float(params[0][0])  # one scale
                assert float(params[2][0]) == float(src_params[src.input[3]][0]) + 1  # one more bit
                shortcut.append(q)
    assert len(shortcut) == 1  # resnet8: the first block's identity shortcut
    wrapped = ModelWrapper(model)
    with qonnx_ir_fix():
        for i in range(3):
            ctx = execute_onnx(wrapped, {wrapped.graph.input[0].name: x[i : i + 1]}, return_full_exec_context=True)
            q = shortcut[0]
            assert np.count_nonzero(ctx[q.input[0]]) > 0
            np.testing.assert_array_equal(ctx[q.output[0]], ctx[q.input[0]])


def test_generic_flow_keeps_brevitas_residual_quantizers(exports):
    path, report, _ = exports[None]
    model = onnx.load(path)
    signs = sorted(tuple(sorted(a["signed"] for _, a, _ in inputs)) for _, inputs, _ in _residual_adds(model))
    assert signs == [(0, 1), (1, 1), (1, 1)]  # the identity shortcut stays the ReLU's unsigned output
    assert not BrevitasExportConfig.for_flow("hls4ml").signed_residuals and not report.extra.get("flow_changes")
