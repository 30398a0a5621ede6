"""`edge-sdk export`: success paths, and one clear line + exit 2 + nothing written on bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

import edge_sdk.cli as cli
from edge_sdk import models


@pytest.fixture()
def run(monkeypatch, capsys):
    if "edge_sdk.cli.export_cmd" not in cli._COMMAND_MODULES:
        monkeypatch.setattr(cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, "edge_sdk.cli.export_cmd"))

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["export", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_int8_export_prints_json_report(run, tmp_path):
    out = tmp_path / "cnn.onnx"
    code, stdout, err = run("--model", "cnn1d", "--format", "int8-onnx", "--calib-synthetic", "16",
                            "--require-integer-only", "--out", str(out), "--json", "-")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["report"]["integer_only"] is True and doc["report"]["format"] == "int8-onnx"
    assert doc["report"]["file_bytes"] == out.stat().st_size
    assert any("synthetic" in w for w in doc["report"]["warnings"])


def test_checkpoint_and_plan_export_a_smaller_dense_graph(run, tmp_path):
    from edge_sdk.export import save_checkpoint
    from edge_sdk.submodel import plan

    model = models.create("cnn1d")
    ckpt = tmp_path / "cnn1d.pt"
    save_checkpoint(model, ckpt)
    plan_path = tmp_path / "quarter.plan"
    plan_path.write_bytes(plan("heterofl", model, 0.25).to_bytes())
    full, sub = tmp_path / "full.onnx", tmp_path / "sub.onnx"
    code, stdout, err = run("--checkpoint", str(ckpt), "--format", "int8-onnx", "--calib-synthetic", "8",
                            "--out", str(full))
    assert code == 0, err and "exported cnn1d.pt" in stdout
    code, stdout, err = run("--checkpoint", str(ckpt), "--plan", str(plan_path), "--format", "int8-onnx",
                            "--calib-synthetic", "8", "--out", str(sub))
    assert code == 0, err
    assert "heterofl submodel" in stdout
    assert sub.stat().st_size < 0.5 * full.stat().st_size
    assert {n.op_type for n in onnx.load(sub).graph.node} >= {"QLinearConv"}


def test_target_picks_format_and_bits_that_fit(run, tmp_path):
    out, js = tmp_path / "pynq.onnx", tmp_path / "pynq.json"
    code, _, err = run("--model", "cnn1d", "--target", "pynq-z2", "--act-bits", "4",
                       "--calib-synthetic", "6", "--out", str(out), "--json", str(js))
    assert code == 0, err
    doc = json.loads(js.read_text())
    assert doc["report"]["format"] == "qonnx"  # pynq-z2's preferred format
    est = doc["fpga_estimate"]
    assert est["fits"] and est["act_bits"] == 4 and est["weight_bits"] == doc["report"]["weight_bits"]
    assert all(est["needed"][r] <= est["available"][r] for r in est["needed"])


def _assert_one_line_and_nothing_written(code, stdout, err, folder, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-sdk export: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]
    assert [f for f in os.listdir(folder) if f.endswith(".onnx") or f.endswith(".tmp")] == []


def test_unknown_target(run, tmp_path):
    res = run("--model", "cnn1d", "--target", "no-such-board", "--out", str(tmp_path / "m.onnx"))
    _assert_one_line_and_nothing_written(*res, tmp_path, "unknown hardware profile 'no-such-board'")


def test_bit_width_out_of_range(run, tmp_path):
    res = run("--model", "cnn1d", "--format", "qcdq", "--weight-bits", "9", "--out", str(tmp_path / "m.onnx"))
    _assert_one_line_and_nothing_written(*res, tmp_path, "--weight-bits 9 is out of range for qcdq")
    res = run("--model", "cnn1d", "--format", "int8-onnx", "--act-bits", "4", "--out", str(tmp_path / "m.onnx"))
    _assert_one_line_and_nothing_written(*res, tmp_path, "out of range for int8-onnx")


def test_unwritable_output(run, tmp_path):
    res = run("--model", "cnn1d", "--format", "int8-onnx", "--out", str(tmp_path / "nope" / "m.onnx"))
    _assert_one_line_and_nothing_written(*res, tmp_path, "cannot write", "does not exist")


def test_wrong_calibration_shape(run, tmp_path):
    calib = tmp_path / "calib.npy"
    np.save(calib, np.zeros((8, 3, 32, 32), np.float32))
    res = run("--model", "cnn1d", "--format", "int8-onnx", "--calib", str(calib), "--out", str(tmp_path / "m.onnx"))
    _assert_one_line_and_nothing_written(*res, tmp_path, "shape (8, 3, 32, 32)", "(1, 40)")


def test_unsupported_op_is_named_with_its_layer(run, tmp_path):
    res = run("--model", "vit_tiny", "--format", "qonnx", "--out", str(tmp_path / "m.onnx"))
    _assert_one_line_and_nothing_written(*res, tmp_path, "layer 'blocks.0.norm1' (LayerNorm)")


def test_nothing_fits_reports_needed_vs_available(run, tmp_path):
    res = run("--model", "resnet18", "--target", "spartan7-xc7s15", "--out", str(tmp_path / "m.onnx"))
    _assert_one_line_and_nothing_written(*res, tmp_path, "does not fit spartan7-xc7s15", "needed/available",
                                         "lut ", "bram18k ")


def test_require_integer_only_failure_writes_nothing(run, tmp_path):
    from edge_sdk.export import save_checkpoint

    ckpt = tmp_path / "vit.pt"
    save_checkpoint(models.create("vit_tiny", width=0.25, depth=1), ckpt)
    res = run("--checkpoint", str(ckpt), "--format", "int8-onnx", "--calib-synthetic", "2",
              "--require-integer-only", "--out", str(tmp_path / "m.onnx"))
    _assert_one_line_and_nothing_written(*res, tmp_path, "not integer-only")


def test_bad_checkpoint(run, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = run("--checkpoint", str(bad), "--format", "int8-onnx", "--out", str(tmp_path / "m.onnx"))
    _assert_one_line_and_nothing_written(*res, tmp_path, "checkpoint")


def test_qdq_graph_with_a_dynamic_batch_and_its_metadata(run, tmp_path):
    out = tmp_path / "cnn.qdq.onnx"
    code, stdout, err = run("--model", "cnn1d", "--format", "int8-onnx", "--quant-format", "qdq",
                            "--batch-size", "dynamic", "--calib-synthetic", "16", "--require-integer-only",
                            "--out", str(out), "--json", "-")
    assert code == 0, err
    report = json.loads(stdout)["report"]
    assert report["extra"]["quant_format"] == "qdq" and report["extra"]["batch_size"] is None
    model = onnx.load(out)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edge_sdk.model"] == "cnn1d (seed 0)" and meta["edge_sdk.batch_size"] == "dynamic"
    assert meta["edge_sdk.calibration_data"] == "synthetic standard-normal, seed 0, 16 samples"


def test_flow_is_named_in_the_report(run, tmp_path):
    out = tmp_path / "cnn.qonnx.onnx"
    code, stdout, err = run("--model", "cnn1d", "--format", "qonnx", "--flow", "hls4ml", "--calib-synthetic", "16",
                            "--out", str(out))
    assert code == 0, err
    assert "made for" in stdout and "hls4ml" in stdout


@pytest.mark.parametrize("argv, message", [
    (("--format", "int8-onnx", "--batch-size", "0"), "argument --batch-size: '0' is not a batch size"),
    (("--format", "int8-onnx", "--flow", "finn"), "--flow applies to --format qonnx, not int8-onnx"),
    (("--format", "qcdq", "--quant-format", "qdq"), "--quant-format applies to --format int8-onnx, not qcdq"),
    (("--format", "qonnx", "--batch-size", "4"), "--batch-size applies to --format int8-onnx, not qonnx"),
])
def test_format_options_given_to_the_wrong_format_are_refused(run, capsys, tmp_path, argv, message):
    out = tmp_path / "m.onnx"
    try:
        code, _, err = run("--model", "cnn1d", *argv, "--calib-synthetic", "8", "--out", str(out))
    except SystemExit as exc:  # argparse's own usage error (one line, exit 2)
        code, err = exc.code, capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not out.exists()
