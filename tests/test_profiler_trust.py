"""Issue 14: a profiler you can trust on a busy device: CPU-time rates and contention
verdicts, the time budget, sanity warnings, validation against a real round, and a
hardened report decoder (issue 11)."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sdk.errors import EdgeSDKError, InvalidInputError, LimitExceededError, SchemaError, SchemaVersionError
from edge_sdk.profiler import contention, estimate, microbench, sanity
from edge_sdk.profiler.budget import Budget
from edge_sdk.profiler.device import check_threads
from edge_sdk.profiler.report import (
    MAX_REPORT_BYTES,
    Capacity,
    CapabilityReport,
    Contention,
    LatencyStats,
    MeasurementRun,
    ModelProfile,
    SizeCost,
)
from edge_sdk.profiler.validate import predicted_round_seconds, validate_report
from profiler_helpers import make_device as _device


def _size(ratio: float, median: float, cold: float | None = None) -> SizeCost:
    lat = LatencyStats(cold_ms=cold if cold is not None else median * 2, median_ms=median, p90_ms=median, runs=3)
    return SizeCost(ratio=ratio, kept_fraction=ratio, width=None, params=10, param_bytes=40, forward_flops=1,
                    train_step_flops=3, peak_train_memory_bytes=None, forward_latency=lat, train_step_latency=lat)


def _report(device=None, sizes=None, **kw) -> CapabilityReport:
    model = None if sizes is None else ModelProfile(model="cnn1d", input_shape=[1, 40], batch_size=4, sizes=sizes)
    return CapabilityReport(device_id="d", created_at="now", device=device or _device(),
                            capacity=Capacity(score=190.0), model=model, **kw)


# --- rates per CPU-second and their verdict --------------------------------------------------

def test_summarise_separates_hardware_rate_from_free_share():
    # two threads, each window 2 s of wall for 1 s of CPU: half the CPUs were taken by others
    windows = [microbench._Windows(wall=[2.0] * 4, cpu=[1.0] * 4, span=8.0) for _ in range(2)]
    stats = microbench.summarise(windows, work=10.0, cpus=2)
    assert stats.value == pytest.approx(20.0)  # 10 per CPU-second per thread, two threads
    assert stats.wall_value == pytest.approx(10.0)
    assert stats.cpu_share == pytest.approx(0.5)
    assert stats.verdict == "contended" and stats.windows == 8 and stats.spread == 0


def test_summarise_flags_unstable_rate_on_a_free_device():
    windows = [microbench._Windows(wall=[1.0, 1.5, 1.0, 1.5], cpu=[1.0, 1.5, 1.0, 1.5], span=5.0)]
    stats = microbench.summarise(windows, work=1.0, cpus=1)
    assert stats.cpu_share == pytest.approx(1.0) and stats.verdict == "unstable"


def test_rate_is_per_cpu_second_when_a_thread_competes():
    """A CPU-hungry Python thread in this process takes CPU (and the GIL) from the
    benchmark thread; its CPU-second rate must count only the CPU it got."""
    stop = time.monotonic() + 1.5

    def spin() -> None:
        while time.monotonic() < stop:
            pass

    busy = threading.Thread(target=spin, daemon=True)
    busy.start()
    stats = microbench.measure_rate([lambda: sum(range(20_000))], 20_000, seconds=0.5, cpus=1)
    busy.join()
    assert stats.value >= stats.wall_value > 0
    assert stats.cpu_share <= 1.05


def test_matmul_rate_has_statistics():
    stats = microbench.matmul_gflops(1, seconds=0.1)
    assert stats.value > 0 and stats.windows >= microbench.MIN_WINDOWS
    assert stats.verdict in ("clear", "contended", "unstable")


def test_kernel_failure_is_a_profiling_error():
    def broken() -> None:
        raise RuntimeError("boom")

    with pytest.raises(EdgeSDKError, match="boom"):
        microbench.measure_rate([broken], 1.0, seconds=0.1)


# --- contention probes ------------------------------------------------------------------------

def test_contention_probes_read_proc_and_sys(tmp_path):
    (tmp_path / "pressure").mkdir()
    (tmp_path / "stat").write_text("cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 1 2 3\n")
    (tmp_path / "loadavg").write_text("4.50 3.00 1.00 5/300 1234\n")
    (tmp_path / "pressure" / "cpu").write_text("some avg10=42.50 avg60=1.0 avg300=0.5 total=1\n")
    cpufreq = tmp_path / "cpu0" / "cpufreq"
    cpufreq.mkdir(parents=True)
    (cpufreq / "scaling_cur_freq").write_text("1800000\n")
    before = contention.cpu_ticks(tmp_path)
    assert before == contention.CpuTicks(total=1000, steal=50)
    after = contention.CpuTicks(total=1100, steal=70)
    assert contention.steal_fraction(before, after) == pytest.approx(0.2)
    assert contention.procs_running(tmp_path) == 5
    assert contention.cpu_pressure(tmp_path) == 42.5
    assert contention.frequency_mhz(tmp_path) == 1800.0


def test_contention_probes_absent_files_give_none(tmp_path):
    assert contention.cpu_ticks(tmp_path) is None
    assert contention.procs_running(tmp_path) is None
    assert contention.cpu_pressure(tmp_path) is None
    assert contention.frequency_mhz(tmp_path) is None


def test_steal_marks_device_contended_even_with_full_cpu_share():
    windows = [microbench._Windows(wall=[1.0] * 3, cpu=[1.0] * 3, span=3.0)]
    stats = microbench.summarise(windows, work=1.0, cpus=1)
    assert contention.assess(stats, steal=0.2, run_queue=0).verdict == "contended"
    assert contention.assess(stats, steal=0.0, run_queue=0).verdict == "clear"


# --- budget and bounds ------------------------------------------------------------------------

def test_budget_allows_less_near_the_deadline_and_records_cuts():
    budget = Budget(10.0, started=time.monotonic() - 9.0)
    assert 0 < budget.allow(5.0) <= 1.0
    assert budget.allow(5.0, keep=2.0) == 0
    assert microbench.budget_seconds(budget, 5.0, keep=0, what="x") < 5.0 and budget.cut_short == ["x"]
    assert Budget().allow(5.0) == 5.0


def test_command_budget_keeps_a_share_of_the_start_up_for_printing_and_exit():
    from edge_sdk.profiler.budget import FINISH_SHARE

    budget = Budget.for_command(11.0, started=time.monotonic() - 4.0)  # imports took 4 s
    assert budget.reserve == pytest.approx(FINISH_SHARE * 4.0, abs=0.05)
    assert budget.remaining() == pytest.approx(11.0 - 4.0 - FINISH_SHARE * 4.0, abs=0.05)
    assert budget.elapsed() == pytest.approx(4.0, abs=0.05)  # the report's run.seconds: from the process start
    assert Budget.for_command(None, started=time.monotonic() - 4.0).remaining() == math.inf


def test_profile_device_meets_a_tiny_budget_and_says_so():
    from edge_sdk.profiler import profile_device

    budget = Budget(0.5)
    device = profile_device(quick=True, threads=1, budget=budget)
    assert budget.cut_short and device.rates.fp32.windows >= 2


@pytest.mark.parametrize("threads", [0, 9, 1_000_000, True, 2.0])
def test_threads_bounded(threads):
    with pytest.raises(InvalidInputError, match="from 1 to 8"):
        check_threads(threads, 2)
    assert check_threads(None, 2) == 2 and check_threads(8, 2) == 8


# --- sanity checks ----------------------------------------------------------------------------

def test_sanity_flags_non_monotonic_latency_absurd_cold_call_and_scaling():
    device = _device(gflops_fp32_1t=100.0, gflops_fp32=500.0)  # 5x the 1-thread rate on 2 threads
    report = _report(device, sizes=[_size(1, 10.0), _size(0.25, 30.0), _size(1 / 16, 1.0, cold=100.0)])
    text = "\n".join(sanity.sanity_warnings(report))
    assert "not monotonic in size: 30.0 ms at size 1/4 > 10.0 ms at size 1" in text
    assert "cold call at size 1/16 took 100x" in text
    assert "scaling 5.0x from 1 to 2 threads" in text


def test_sanity_quiet_on_a_consistent_report():
    report = _report(sizes=[_size(1, 10.0), _size(0.25, 4.0), _size(1 / 16, 2.0)])
    assert sanity.sanity_warnings(report) == []


def test_sanity_reports_contention_and_cuts():
    device = _device(contention=Contention(verdict="contended", free_share=0.25))
    report = _report(device, run=MeasurementRun(quick=True, seconds=11.0, deadline_seconds=12.0,
                                                cut_short=["latency at size 1"], confidence="low"))
    report.capacity = Capacity(score=190.0, free_share=0.25, available_score=47.5)
    text = "\n".join(sanity.sanity_warnings(report))
    assert "25% of 2 CPUs free" in text and "47.5 was available" in text
    assert "12 s deadline: latency at size 1" in text


# --- estimates are predictions ----------------------------------------------------------------

def test_estimate_applies_measured_efficiency():
    assert estimate.local_peak_gflops(2, {"avx2", "fma"}, "Intel", 2000.0) == 128.0
    assert estimate.local_peak_gflops(4, {"asimd"}, "A76", 2400.0) == pytest.approx(153.6)
    assert estimate.local_peak_gflops(2, {"avx2"}, "x", None) is None
    device = estimate.with_efficiency(_device(gflops_fp32=48.0, gflops_fp32_1t=12.0), (30.0, 60.0))
    assert device.gflops_fp32 == 24.0 and device.peak_gflops_fp32 == 48.0 and device.kernel_efficiency == 0.5
    measured = ModelProfile(model="m", input_shape=[1], batch_size=1, sizes=[_size(1, 1.0)])  # 3 FLOP in 1 ms
    eff = estimate.kernel_efficiencies(measured, 0.3e-5)  # peak 3000 FLOP/s: 1 ms for 3 FLOP is 100%
    assert eff[1] == pytest.approx(1.0)
    predicted = estimate.estimated_model_profile(measured, device, {1: 0.5})
    assert predicted.sizes[0].train_step_latency.median_ms == pytest.approx(3 / (24e9 * 0.5) * 1e3)


# --- validation against a real round ----------------------------------------------------------

def test_prediction_is_cold_step_plus_warm_steps():
    assert predicted_round_seconds(_size(1, 10.0, cold=50.0), 5) == pytest.approx((50 + 4 * 10) / 1e3)


def test_validate_trains_each_size_and_compares():
    report = _report(sizes=[_size(1, 5.0), _size(0.25, 2.0)])
    report.device.threads = 1
    validation = validate_report(report, steps=2)
    assert [r.ratio for r in validation.rounds] == [1, 0.25]
    for r in validation.rounds:
        assert r.measured_s > 0 and r.error == pytest.approx(r.measured_s / r.predicted_s - 1, abs=1e-2)
    CapabilityReport.from_dict(dataclasses.asdict(dataclasses.replace(report, validation=validation)))


def test_validate_refuses_estimates_and_bad_steps():
    with pytest.raises(InvalidInputError, match="estimated"):
        validate_report(_report(_device(estimated=True), sizes=[_size(1, 1.0)]))
    with pytest.raises(InvalidInputError, match="steps"):
        validate_report(_report(sizes=[_size(1, 1.0)]), steps=0)


# --- hardened decoding (issue 11) -------------------------------------------------------------

def _good() -> dict:
    return json.loads(_report(sizes=[_size(1, 1.0)]).to_json())


def test_version_1_document_still_reads():
    data = _good()
    data["schema_version"] = 1
    for key in ("run", "warnings", "validation"):
        data.pop(key)
    for key in ("rates", "contention", "peak_gflops_fp32", "kernel_efficiency"):
        data["device"].pop(key)
    report = CapabilityReport.from_dict(data)
    assert report.schema_version == 1 and report.device.rates is None


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schema_version",), True, "schema_version: True is not supported"),
        (("device", "gflops_fp32"), True, r"device.gflops_fp32 must be a finite number in \[0, 1e\+18\], got True"),
        (("device", "threads"), 2.5, r"device.threads must be an integer in \[1, "),
        (("device", "threads"), 0, "device.threads must be an integer .* got 0"),
        (("device", "memory_total_bytes"), -1, "memory_total_bytes must be an integer .* got -1"),
        (("device", "cpu_model"), {}, "device.cpu_model must be a non-empty string"),
        (("device", "isa_flags"), ["avx", 3], r"isa_flags\[1\] must be a non-empty string"),
        (("device", "estimated"), 1, "device.estimated must be true or false, got 1"),
        (("capacity", "score"), 1e300, "capacity.score must be a finite number .* got 1e\\+300"),
        (("model", "sizes", 0, "ratio"), 1.5, r"sizes\[0\].ratio must be a finite number in \(0, 1\], got 1.5"),
        (("model", "sizes", 0, "train_step_latency"), [], "train_step_latency must be a JSON object, got \\[\\]"),
        (("model", "batch_size"), "8", "model.batch_size must be an integer"),
        (("device", "extra"), 1, "device: unknown field 'extra'"),
        (("device", "rates"), {"fp32": None}, "device.rates: field 'fp32_1t' is missing"),
    ],
)
def test_decoder_names_the_bad_field(path, value, message):
    data = _good()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SchemaError, match=message):
        CapabilityReport.from_dict(data)


def test_from_json_bounds_size_nesting_and_constants():
    with pytest.raises(LimitExceededError, match="at most 4194304"):
        CapabilityReport.from_json(" " * (MAX_REPORT_BYTES + 1))
    with pytest.raises(LimitExceededError, match="deeper than"):
        CapabilityReport.from_json("[" * 200_000 + "]" * 200_000)
    deep = _good()
    deep["warnings"] = [[[[[[[["x"]]]]]]]]
    with pytest.raises(LimitExceededError, match="deeper than 8"):
        CapabilityReport.from_json(json.dumps(deep))
    text = json.dumps(_good()).replace('"score": 190.0', '"score": NaN')
    with pytest.raises(SchemaError, match="capacity.score must be a finite number"):
        CapabilityReport.from_json(text)
    with pytest.raises(SchemaError, match="not UTF-8"):
        CapabilityReport.from_json(b"\xff\xfe{")
    with pytest.raises(SchemaError, match="duplicate key"):
        CapabilityReport.from_json('{"schema_version": 2, "schema_version": 2}')
    with pytest.raises(SchemaVersionError):
        CapabilityReport.from_json("{}")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_json, st.sampled_from(["device", "capacity", "model", "run", "validation", "warnings", "schema_version"]))
def test_fuzzed_fields_raise_only_schema_errors(value, key):
    data = _good()
    data[key] = value
    try:
        CapabilityReport.from_dict(data)
    except SchemaError:
        pass
