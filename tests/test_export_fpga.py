"""Brevitas QONNX / QCDQ export and the FPGA resource estimate."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edge_sdk import hw_profiles, models
from edge_sdk.errors import HardwareProfileError, InvalidInputError, UnsupportedOpError
from edge_sdk.export import BrevitasExportConfig, estimate_fpga, to_qcdq, to_qonnx
from export_helpers import digits, tiny_cnn, train


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture(scope="module")
def trained(data):
    x, y = data
    torch.manual_seed(0)
    return train(tiny_cnn(), x[:1200], y[:1200])


# ----------------------------------------------------------------------- QONNX / QCDQ


def test_qonnx_w4a4_matches_brevitas_within_one_step(trained, data, tmp_path):
    x, y = data
    out = tmp_path / "w4a4.onnx"
    report = to_qonnx(trained, x[:128], out, BrevitasExportConfig(weight_bits=4, act_bits=4, verify_samples=6),
                      eval_data=(x[1200:1400], y[1200:1400]))
    assert report.format == "qonnx" and out.stat().st_size == report.file_bytes
    assert report.extra["verified_samples"] == 6
    assert report.max_abs_error_steps is not None and report.max_abs_error_steps <= 1.0 + 1e-4
    finn = report.extra["finn"]
    assert finn["zero_points_zero"] and finn["unsigned_after_relu"]
    assert finn["weight_scales"] == ["per-channel"] and 4 in finn["bit_widths"]
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert "Quant" in ops and "QuantizeLinear" not in ops
    assert report.accuracy_float > 0.7
    assert 0.0 <= report.accuracy_int <= 1.0 and report.weight_bits == 4 and report.act_bits == 4


def test_qonnx_power_of_two_per_tensor(trained, data, tmp_path):
    x, _ = data
    config = BrevitasExportConfig(weight_bits=8, act_bits=8, per_channel=False, pow2_scales=True, verify_samples=3)
    report = to_qonnx(trained, x[:64], tmp_path / "p2.onnx", config)
    finn = report.extra["finn"]
    assert finn["power_of_two_scales"] and finn["weight_scales"] == ["per-tensor"]
    assert report.max_abs_error_steps <= 1.0 + 1e-4


def test_short_qat_fine_tune_recovers_low_bit_accuracy(trained, data, tmp_path):
    x, y = data
    config = BrevitasExportConfig(weight_bits=3, act_bits=3, verify_samples=2)
    ptq = to_qonnx(trained, x[:128], tmp_path / "ptq.onnx", config, eval_data=(x[1200:], y[1200:]))
    qat = to_qonnx(trained, x[:128], tmp_path / "qat.onnx", replace(config, qat_epochs=3, qat_lr=5e-3),
                   eval_data=(x[1200:], y[1200:]), qat_data=(x[:1200], y[:1200]))
    assert qat.extra["qat_epochs"] == 3 and ptq.extra["qat_epochs"] == 0
    assert qat.accuracy_int > ptq.accuracy_int
    assert qat.max_abs_error_steps <= 1.0 + 1e-4  # the fine-tuned graph still matches Brevitas


def test_qcdq_runs_in_onnxruntime(trained, data, tmp_path):
    x, y = data
    out = tmp_path / "qcdq.onnx"
    report = to_qcdq(trained, x[:128], out, BrevitasExportConfig(weight_bits=8, act_bits=8),
                     eval_data=(x[1200:1400], y[1200:1400]))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.run(None, {sess.get_inputs()[0].name: x[:1]})[0].shape == (1, 10)
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert report.max_abs_error_steps <= 1.0 + 1e-4
    assert report.top1_agreement >= 0.95
    assert report.latency_ms_int8 > 0 and report.latency_ms_fp32 > 0


def test_bits_out_of_range_and_unsupported_layer(trained, tmp_path):
    x = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(InvalidInputError, match="weight_bits=9 is out of range for qcdq"):
        to_qcdq(trained, x, tmp_path / "a.onnx", BrevitasExportConfig(weight_bits=9))
    with pytest.raises(InvalidInputError, match="act_bits=1 is out of range for qonnx"):
        to_qonnx(trained, x, tmp_path / "a.onnx", BrevitasExportConfig(act_bits=1))
    vit = models.create("vit_tiny", width=0.25, depth=1)
    with pytest.raises(UnsupportedOpError, match=r"layer 'blocks\.0\.norm1' \(LayerNorm\)"):
        to_qonnx(vit, np.zeros((2, 3, 32, 32), np.float32), tmp_path / "v.onnx")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------- FPGA estimate


class _Fc(nn.Module):
    def __init__(self, n_in: int = 16, n_out: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(n_in, n_out, bias=False)

    def forward(self, x):
        return self.fc(x)


def test_estimate_of_a_hand_computable_layer():
    model = _Fc()
    est = estimate_fpga(model, "pynq-z2", weight_bits=4, act_bits=4, input_bits=4,
                        folding="minimal", input_shape=(16,))
    layer = est.layers[0]
    # MW=16, MH=8, PE=SIMD=1: 128 cycles; acc bits: a = log2(16)+4+4-1-1 = 10 -> 12
    assert (layer.mw, layer.mh, layer.pe, layer.simd, layer.cycles) == (16, 8, 1, 1, 128)
    assert layer.acc_bits == 12 and layer.mult_style == "lut"
    # LUT = 300 + 1.1*(mult 1*3*8 + adder 8*1 + acc 12) + LUTRAM weights 1*1*4*ceil(128/64)
    assert layer.lut == 357 and layer.bram18k == 0 and layer.dsp == 0
    assert est.macs == 128 and est.bops == 128 * 4 * 4 and est.weight_memory_bits == 512
    assert est.fits and est.needed["lut"] == 357 and est.available["lut"] == int(53200 * 0.7)
    full = estimate_fpga(model, "pynq-z2", weight_bits=4, act_bits=4, input_bits=4,
                         folding="full", input_shape=(16,))
    # PE=8, SIMD=16: 300 + 1.1*8*(16*3*8 + 8*31 + 12) + 8*16*4*ceil(1/64) = 6479.2
    assert full.layers[0].lut == 6480 and full.cycles_per_frame == 1


def test_bram_estimate_and_zero_weights():
    model = _Fc(256, 64)
    est = estimate_fpga(model, "pynq-z2", weight_bits=4, act_bits=4, input_bits=4,
                        folding="minimal", input_shape=(256,))
    # WMEM = 16384 words of 4 bits -> ceil(16384/4096) * ceil(4/4) RAMB18
    assert est.layers[0].bram18k == 4 and est.layers[0].lut < 400
    small = _Fc()
    with torch.no_grad():
        small.fc.weight[:, :8] = 0.0  # half the weights are zero (a FIARSE-like mask)
    dense = estimate_fpga(small, "pynq-z2", weight_bits=4, act_bits=4, input_bits=4,
                          folding="full", input_shape=(16,))
    skip = estimate_fpga(small, "pynq-z2", weight_bits=4, act_bits=4, input_bits=4,
                         folding="full", zero_weights="skip", input_shape=(16,))
    assert dense.sparsity == skip.sparsity == 0.5
    assert dense.layers[0].lut == 6480  # counted: zero weights cost like any other
    # skipped: mult 16*3*8*0.5 and weight LUTRAM 512*0.5 -> 300 + 1.1*8*(192+248+12) + 256
    assert skip.layers[0].lut == 4534
    assert skip.nonzero_macs == 64 and skip.nonzero_weight_memory_bits == 256
    assert any("zero weights: skip" in a for a in skip.assumptions)


def test_estimate_fits_and_budget_and_bad_target():
    cnn = models.create("cnn1d")
    fit = estimate_fpga(cnn, "pynq-z2", weight_bits=4, act_bits=4)
    assert fit.fits and fit.over_budget == [] and fit.fps > 0
    assert all(fit.needed[r] <= fit.available[r] for r in fit.needed)
    big = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))
    over = estimate_fpga(big, "spartan7-xc7s15", weight_bits=8, act_bits=8, folding="minimal",
                         input_shape=(2048,))
    assert not over.fits and "bram18k" in over.over_budget
    assert over.needed["bram18k"] > over.available["bram18k"] == int(20 * 0.8)
    with pytest.raises(HardwareProfileError, match="cpu profile"):
        estimate_fpga(cnn, "raspberry-pi-4")
    with pytest.raises(InvalidInputError, match="folding"):
        estimate_fpga(cnn, "pynq-z2", folding="fast")


def test_estimate_from_an_exported_onnx_matches_the_torch_model(trained, data, tmp_path):
    x, _ = data
    path = tmp_path / "q.onnx"
    to_qonnx(trained, x[:32], path, BrevitasExportConfig(weight_bits=4, act_bits=4, verify_samples=1))
    from_file = estimate_fpga(str(path), hw_profiles.load("pynq-z2"), weight_bits=4, act_bits=4,
                              folding="minimal")
    from_torch = estimate_fpga(trained, "pynq-z2", weight_bits=4, act_bits=4, folding="minimal",
                               input_shape=(1, 8, 8))
    assert from_file.macs == from_torch.macs > 0
    assert [(l.mw, l.mh, l.positions) for l in from_file.layers] == \
        [(l.mw, l.mh, l.positions) for l in from_torch.layers]
