"""QONNX presets for the FPGA flows (#13): what each file holds for its tool, the power-of-two
per-channel quantizer, quantized zeros counted as sparsity, and the FPGA estimate's counts
against qonnx's own ``inference_cost``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_sdk.errors import InvalidInputError
from edge_sdk.export import BrevitasExportConfig, estimate_fpga, to_qcdq, to_qonnx
from edge_sdk.export._metadata import read_metadata
from edge_sdk.export.config import FLOWS
from export_helpers import reference_model


def _quant_nodes(model: onnx.ModelProto):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Quant":
            yield n, [inits.get(i) for i in n.input[1:]]


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    """{(model, flow): (path, report)} at W4A8 (a bit width FINN and hls4ml both take)."""
    tmp = tmp_path_factory.mktemp("flows")
    out = {}
    for name in ("cnn1d", "resnet8"):
        model, x = reference_model(name)
        for flow in (None, *FLOWS):
            config = BrevitasExportConfig.for_flow(flow, weight_bits=4, act_bits=8, verify_samples=8)
            path = tmp / f"{name}.{flow}.qonnx.onnx"
            out[name, flow] = (path, to_qonnx(model, x[:64], path, config, eval_data=x[64:],
                                              metadata={"model": name}))
    return out


@pytest.mark.parametrize("name", ["cnn1d", "resnet8"])
def test_finn_file_has_float_biases_vector_parameters_and_2d_convolutions(flows, name):
    path, report = flows[name, "finn"]
    model = onnx.load(path)
    assert report.flow == "finn" and read_metadata(model)["flow"] == "finn"
    for node, params in _quant_nodes(model):
        assert all(p is not None and p.ndim >= 1 for p in params), f"{node.name}: a 0-d parameter"
        bits = int(params[2].reshape(-1)[0])
        # 8-bit activations; a residual Add's requantizers have one bit more (signed_residuals)
        assert bits <= 9, f"{node.name}: a {bits}-bit Quant (a bias Quant)"
    assert len(model.graph.input[0].type.tensor_type.shape.dim) == 4  # 1-d signals as (N, C, L, 1)
    # no signed requantizer between the last ReLU and the classifier
    last = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul", "Conv")][-1]  # cnn1d's is a Conv
    producer = {o: n for n in model.graph.node for o in n.output}
    src = producer[last.input[0]]
    while src.op_type in ("Flatten", "Reshape", "Transpose", "GlobalAveragePool", "Quant"):
        if src.op_type == "Quant":
            signed = next(a.i for a in src.attribute if a.name == "signed")
            assert signed == 0, f"{src.name} is a signed requantizer before the classifier"
        src = producer[src.input[0]]
    assert report.max_abs_error_steps <= 1


@pytest.mark.parametrize("name", ["cnn1d", "resnet8"])
def test_hls4ml_file_has_per_tensor_power_of_two_scales_and_no_global_pool(flows, name):
    path, report = flows[name, "hls4ml"]
    model = onnx.load(path)
    finn = report.extra["finn"]
    assert report.flow == "hls4ml" and finn["weight_scales"] == ["per-tensor"] and finn["power_of_two_scales"]
    assert "GlobalAveragePool" not in {n.op_type for n in model.graph.node}
    assert report.max_abs_error_steps <= 1


def test_generic_file_is_marked_generic(flows):
    path, report = flows["cnn1d", None]
    assert report.flow is None and ("made for", "generic QONNX") in report.summary_rows()
    assert "flow" not in read_metadata(onnx.load(path))


def test_power_of_two_per_channel_scales(tmp_path):
    model, x = reference_model("cnn1d", n=48)
    config = BrevitasExportConfig(weight_bits=6, act_bits=8, per_channel=True, pow2_scales=True)
    report = to_qonnx(model, x[:32], tmp_path / "m.onnx", config, eval_data=x[32:])
    assert report.extra["finn"]["power_of_two_scales"] and report.extra["finn"]["weight_scales"] == ["per-channel"]


def test_flow_is_refused_for_qcdq_and_unknown_flows(tmp_path):
    model, x = reference_model("cnn1d", n=8)
    with pytest.raises(InvalidInputError, match="flow='finn' applies to QONNX"):
        to_qcdq(model, x, tmp_path / "m.onnx", BrevitasExportConfig(flow="finn"))
    with pytest.raises(InvalidInputError, match="flow='vivado' is not accepted"):
        BrevitasExportConfig.for_flow("vivado")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bits, low", [(6, 0.005), (4, 0.03)])
def test_weights_rounded_to_zero_count_as_sparsity(tmp_path, bits, low):
    model, x = reference_model("resnet8", n=48)
    report = to_qonnx(model, x[:32], tmp_path / "m.onnx", BrevitasExportConfig(weight_bits=bits, act_bits=8),
                      eval_data=x[32:])
    assert report.extra["float_weight_sparsity"] == 0.0 and report.sparsity > low
    estimate = estimate_fpga(tmp_path / "m.onnx", "zcu104", weight_bits=bits, act_bits=8)
    assert estimate.sparsity == pytest.approx(report.sparsity, abs=1e-3)


@pytest.mark.parametrize("name", ["cnn1d", "resnet8"])
def test_fpga_estimate_agrees_with_qonnx_inference_cost(flows, name):
    inference_cost = pytest.importorskip("qonnx.util.inference_cost").inference_cost
    from edge_sdk.export._compat import qonnx_ir_fix

    path, _ = flows[name, None]
    estimate = estimate_fpga(path, "zcu104", weight_bits=4, act_bits=8)
    with qonnx_ir_fix():
        dense = inference_cost(str(path), discount_sparsity=False)["total_cost"]
        sparse = inference_cost(str(path), discount_sparsity=True)["total_cost"]
    assert estimate.macs == dense["total_macs"]
    assert estimate.weights == dense["total_mem_w_elems"]
    assert estimate.weight_memory_bits == dense["total_mem_w_bits"]
    assert estimate.weights - estimate.zero_weights_count == sparse["total_mem_w_elems"]
    assert estimate.nonzero_macs == pytest.approx(sparse["total_macs"], rel=1e-3)
