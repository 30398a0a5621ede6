"""The export-format registry: every registered format is checked here with no test edit
(bit ranges, fit without a target, a tiny export whose report names the format), plus the
registry's own errors and the FPGA budget fit."""

from __future__ import annotations

import pytest
import torch

from edge_sdk import models
from edge_sdk.errors import BudgetExceededError, InvalidInputError, UnknownNameError
from edge_sdk.export.formats import ExportFormat, FitResult, format_names, get_format, register_format
from export_helpers import digits, tiny_cnn

FORMATS = format_names()
BUDGETED = [n for n in FORMATS if get_format(n).fpga_budget]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    x, _ = digits()
    model = tiny_cnn().eval()
    with torch.no_grad():
        model.train()(torch.from_numpy(x[:256]))  # non-trivial BatchNorm statistics
    return model.eval(), x


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("kind", ["weight", "act"])
def test_bit_range_is_validated(name, kind):
    fmt = get_format(name)
    low, high = fmt.bit_range(kind)
    assert 1 <= low <= high and fmt.check_bits(kind, low) == low and fmt.check_bits(kind, high) == high
    assert fmt.check_bits(kind, None) is None
    for bad in (low - 1, high + 1, True, 4.0):
        with pytest.raises(InvalidInputError, match=f"{kind}_bits={bad!r} is out of range for {name}"):
            fmt.check_bits(kind, bad)
    with pytest.raises(InvalidInputError, match=f"--{kind}-bits {high + 1} is out of range for {name}"):
        fmt.check_bits(kind, high + 1, labels={kind: f"--{kind}-bits"})


@pytest.mark.parametrize("name", FORMATS)
def test_fit_without_a_target_takes_the_defaults_or_the_given_bits(name, tiny):
    fmt = get_format(name)
    model, _ = tiny
    fit = fmt.fit(model, (1, 8, 8), None)
    assert (fit.format, fit.weight_bits, fit.act_bits, fit.estimate) == (name, *fmt.default_bits, None)
    assert fmt.check_bits("weight", fit.weight_bits) and fmt.check_bits("act", fit.act_bits)
    high = fmt.weight_range[1]
    assert fmt.fit(model, (1, 8, 8), None, weight_bits=high).weight_bits == high
    with pytest.raises(InvalidInputError, match=f"out of range for {name}"):
        fmt.fit(model, (1, 8, 8), None, weight_bits=high + 1)


@pytest.mark.parametrize("name", FORMATS)
def test_export_of_a_tiny_model_writes_a_file_naming_its_format(name, tiny, tmp_path):
    fmt = get_format(name)
    model, x = tiny
    fit = fmt.fit(model, (1, 8, 8), None)
    path = tmp_path / f"tiny{fmt.suffix}"
    report = fmt.export(model, x[:32], path, fit, eval_data=x[32:40], measure_latency=False)
    assert report.format == name and report.path == str(path)
    assert path.stat().st_size == report.file_bytes > 0
    assert report.eval_samples == 8 and report.top1_agreement >= 0.5


@pytest.mark.parametrize("name", FORMATS)
def test_export_refuses_a_foreign_fit_and_unknown_options(name, tiny, tmp_path):
    fmt = get_format(name)
    model, x = tiny
    other = next((n for n in FORMATS if n != name), "other")
    with pytest.raises(InvalidInputError, match=f"needs a FitResult from {name}"):
        fmt.export(model, x[:4], tmp_path / "m.onnx", FitResult(other, 8, 8))
    with pytest.raises(InvalidInputError, match="does not take no_such_option"):
        fmt.export(model, x[:4], tmp_path / "m.onnx", fmt.fit(model, (1, 8, 8), None), no_such_option=1)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="unknown export format 'onnx-fp4'; known: " + ", ".join(FORMATS)):
        get_format("onnx-fp4")


def test_a_registered_format_is_listed_and_bad_registrations_are_refused(monkeypatch):
    from edge_sdk.export.formats import _registry

    monkeypatch.setattr(_registry, "_FORMATS", dict(_registry._FORMATS))

    @register_format
    class Fp16(ExportFormat):
        name = "fp16-onnx"
        weight_range = act_range = (16, 16)
        default_bits = (16, 16)

    assert format_names()[-1] == "fp16-onnx" and isinstance(get_format("fp16-onnx"), Fp16)
    with pytest.raises(InvalidInputError, match="it uses 16 bits"):
        get_format("fp16-onnx").check_bits("weight", 8)
    with pytest.raises(InvalidInputError, match="already registered"):
        register_format(type("Other", (ExportFormat,), {"name": "qonnx", "weight_range": (2, 8),
                                                        "act_range": (2, 8), "default_bits": (8, 8)}))
    with pytest.raises(InvalidInputError, match="does not set default_bits"):
        register_format(type("Half", (ExportFormat,), {"name": "half", "weight_range": (2, 8), "act_range": (2, 8)}))


@pytest.mark.parametrize("name", BUDGETED)
def test_fpga_fit_lowers_weight_bits_until_the_estimate_fits(name):
    torch.manual_seed(0)
    model = models.create("cnn1d", width=0.5).eval()
    fmt = get_format(name)
    fit = fmt.fit(model, None, "pynq-z2")
    assert fit.estimate is not None and fit.estimate.fits and fit.target == "pynq-z2"
    assert (fit.estimate.weight_bits, fit.estimate.act_bits) == (fit.weight_bits, fit.act_bits)
    widest = max(b for b in fit.profile.fpga.weight_bits if b <= fmt.weight_range[1])
    assert fit.act_bits == max(b for b in fit.profile.fpga.act_bits if b <= fmt.act_range[1])
    if fit.weight_bits < widest:  # the next wider weight width was tried and does not fit
        with pytest.raises(BudgetExceededError, match=f"at W{fit.weight_bits + 1} with A{fit.act_bits}"):
            fmt.fit(model, None, "pynq-z2", weight_bits=fit.weight_bits + 1)
    with pytest.raises(BudgetExceededError, match="does not fit spartan7-xc7s15"):
        fmt.fit(model, None, "spartan7-xc7s15")
    with pytest.raises(InvalidInputError, match="weight_bits=9 is out of range for pynq-z2"):
        get_format("qonnx").fit(model, None, "pynq-z2", weight_bits=9)


def test_cpu_target_takes_the_defaults_without_an_estimate():
    model = models.create("cnn1d", width=0.25).eval()
    for name in FORMATS:
        fit = get_format(name).fit(model, None, "raspberry-pi-4")
        assert fit.estimate is None and (fit.weight_bits, fit.act_bits) == get_format(name).default_bits
        assert fit.target == "raspberry-pi-4"


def test_every_format_a_profile_may_prefer_is_registered():
    from edge_sdk import hw_profiles

    assert set(hw_profiles.FORMATS) <= set(FORMATS)
    for name in hw_profiles.names():
        assert hw_profiles.load(name).preferred_format in FORMATS
