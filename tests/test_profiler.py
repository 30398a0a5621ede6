"""Profiler: OS facts, microbenchmarks, model cost, capacity and the report schema."""

from __future__ import annotations

import copy
import subprocess
import sys
import json
import time
import types

import pytest
import torch

from edge_sdk import models, submodel
from edge_sdk.errors import InvalidInputError, SchemaError, SchemaVersionError
from edge_sdk.models.analytic import analytic_flops
from edge_sdk.profiler import (
    CapabilityReport,
    LatencyStats,
    ModelProfile,
    SizeCost,
    compute_capacity,
    count_flops,
    profile_device,
    profile_model,
)
from edge_sdk.profiler import estimate, system
from edge_sdk.profiler.latency import measure_latency
from edge_sdk.profiler.reporting import build_report
from profiler_helpers import make_device as _device


def _size(ratio: float, step_ms: float, peak_mb: float) -> SizeCost:
    lat = LatencyStats(cold_ms=step_ms * 2, median_ms=step_ms, p90_ms=step_ms * 1.1, runs=5)
    return SizeCost(ratio=ratio, kept_fraction=ratio, width=ratio**0.5, params=int(1000 * ratio), param_bytes=int(4000 * ratio),
                    forward_flops=100, train_step_flops=300, peak_train_memory_bytes=int(peak_mb * 2**20),
                    forward_latency=lat, train_step_latency=lat)


# --- OS facts -------------------------------------------------------------------------------

def test_cgroup_v2_quota_and_memory_limit(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "memory.max").write_text(str(3 * 2**30))
    assert system.cgroup_cpu_quota(tmp_path) == pytest.approx(1.5)
    assert system.cgroup_memory_limit(tmp_path) == 3 * 2**30
    assert system.effective_cpu_count(tmp_path) == min(2, len(__import__("os").sched_getaffinity(0)))


def test_cgroup_v2_unlimited(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert system.cgroup_cpu_quota(tmp_path) is None
    assert system.cgroup_memory_limit(tmp_path) is None


def test_cgroup_v1_quota_and_limit(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "memory").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(2**62))  # v1's "no limit"
    assert system.cgroup_cpu_quota(tmp_path) == pytest.approx(0.5)
    assert system.effective_cpu_count(tmp_path) == 1
    assert system.cgroup_memory_limit(tmp_path) is None


def test_memory_limit_caps_total(tmp_path):
    (tmp_path / "memory.max").write_text(str(2**30))
    (tmp_path / "memory.current").write_text(str(2**28))
    info = system.read_system_info(cgroup_root=tmp_path)
    assert info.memory_total_bytes == 2**30
    assert info.memory_available_bytes <= 2**30 - 2**28


def test_arm_cpuinfo_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 asimddp i8mm\n"
                       "CPU part\t: 0xd0b\nHardware\t: BCM2712\n")
    info = system.read_system_info(cgroup_root=tmp_path, cpuinfo=cpuinfo)
    assert info.isa_flags == ["asimd", "asimddp", "i8mm"]
    assert info.cpu_model == "BCM2712"


# --- measurements ---------------------------------------------------------------------------

def test_profile_device_quick_measures_positive_rates():
    device = profile_device(quick=True, threads=1)
    assert device.threads == 1
    assert device.gflops_fp32_1t > 0 and device.gflops_fp32 == device.gflops_fp32_1t
    assert device.rates.fp32.value == device.gflops_fp32 and device.rates.fp32.wall_value <= device.gflops_fp32
    assert device.contention is not None and 0 <= device.contention.free_share <= 1
    assert device.int8_gops is not None and device.int8_gops > 0
    assert device.memory_bandwidth_gbs > 0
    assert 1 <= device.effective_cpus <= device.logical_cpus
    assert 0 < device.memory_available_bytes <= device.memory_total_bytes


def test_measure_latency_keeps_cold_call_apart():
    calls = []

    def call():
        calls.append(1)
        if len(calls) == 1:
            torch.randn(256, 256) @ torch.randn(256, 256)

    stats = measure_latency(call, runs=4, max_seconds=5)
    assert stats.runs == 4 and len(calls) == 6  # cold + warm-up + 4 timed
    assert stats.p90_ms >= stats.median_ms > 0


def test_profile_model_sizes_match_analytic_flops_and_leave_model_untouched():
    model = models.create("cnn1d")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = torch.randn(4, 1, 40)
    profile = profile_model(model, batch, ratios=[1, 0.25], quick=True)
    assert [s.ratio for s in profile.sizes] == [1.0, 0.25]
    full, quarter = profile.sizes
    assert full.params == sum(p.numel() for p in model.parameters())
    assert full.forward_flops == analytic_flops(model, 4)
    assert full.train_step_flops == analytic_flops(model, 4, backward=True)
    # a smaller size is the submodel a device trains: the HeteroFL extraction, not a rebuild
    plan = submodel.plan("heterofl", model, 0.25)
    small = plan.extract(model)
    assert quarter.params == sum(p.numel() for p in small.parameters()) < full.params
    assert quarter.forward_flops == count_flops(small, batch)
    assert quarter.train_step_flops == count_flops(small, batch, backward=True)
    assert quarter.width == pytest.approx(plan.width)
    assert quarter.peak_train_memory_bytes < full.peak_train_memory_bytes
    assert full.peak_train_memory_bytes >= 3 * full.param_bytes  # params + grads + momentum
    assert full.train_step_latency.runs >= 3
    assert profile.layers and sum(layer.forward_flops for layer in profile.layers) == full.forward_flops
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_count_flops_same_under_no_grad_and_eval():
    model = models.create("vit_tiny", width=0.25, depth=2)
    x = torch.randn(2, 3, 32, 32)
    train_mode = count_flops(model, x), count_flops(model, x, backward=True)
    model.eval()
    with torch.no_grad():
        assert (count_flops(model, x), count_flops(model, x, backward=True)) == train_mode
    assert not model.training and not torch.is_grad_enabled() is False


def test_profile_model_rejects_bad_ratios():
    with pytest.raises(InvalidInputError, match="outside"):
        profile_model(models.create("cnn1d"), torch.randn(2, 1, 40), ratios=[1.5])


# --- capacity -------------------------------------------------------------------------------

def test_capacity_picks_largest_size_within_budgets():
    profile = ModelProfile(model="m", input_shape=[1], batch_size=8,
                           sizes=[_size(1, 400, 300), _size(0.25, 120, 90), _size(1 / 16, 30, 20)])
    device = _device()
    assert compute_capacity(device, profile).max_ratio == 1
    assert compute_capacity(device, profile, budget_ms=150).max_ratio == 0.25
    assert compute_capacity(device, profile, budget_ms=150, budget_mb=50).max_ratio == 1 / 16
    assert compute_capacity(device, profile, budget_ms=10).max_ratio is None
    small_memory = _device(memory_available_bytes=100 * 2**20)
    assert compute_capacity(small_memory, profile).max_ratio == 0.25
    assert compute_capacity(device, profile).score == device.gflops_fp32


def test_capacity_rejects_non_positive_budget():
    with pytest.raises(InvalidInputError, match="budget_ms"):
        compute_capacity(_device(), None, budget_ms=0)


# --- estimated reports ----------------------------------------------------------------------

def _hw(kind="cpu"):
    cpu = types.SimpleNamespace(cores=4, arch="aarch64", isa_features=["neon"], memory_mb=4096,
                                memory_bandwidth_gbs=4.0, nominal_gflops_fp32=48.0, nominal_int8_gops=96.0)
    return types.SimpleNamespace(name="board", kind=kind, vendor="V", description="Board", cpu=cpu)


def test_estimated_device_and_latencies():
    device = estimate.estimated_device(_hw())
    assert device.estimated and device.source == "hw:board"
    assert device.gflops_fp32 == 48.0 and device.effective_cpus == 4
    measured = ModelProfile(model="m", input_shape=[1], batch_size=8, sizes=[_size(1, 1, 1)])
    estimated = estimate.estimated_model_profile(measured, device)
    step = estimated.sizes[0].train_step_latency
    assert step.runs == 0
    assert step.median_ms == pytest.approx(300 / 48e9 * 1e3, rel=1e-3)


def test_estimate_refuses_microcontroller():
    with pytest.raises(InvalidInputError, match="export-only"):
        estimate.estimated_device(_hw(kind="mcu"))


# --- report schema --------------------------------------------------------------------------

def test_report_round_trip_and_schema_checks():
    report = build_report(model="cnn1d", ratios=[1, 0.25], batch_size=4, quick=True, threads=1)
    text = report.to_json()
    assert CapabilityReport.from_json(text) == report
    data = json.loads(text)
    assert data["schema_version"] == 2 and data["model"]["sizes"][1]["ratio"] == 0.25
    data["schema_version"] = 99
    with pytest.raises(SchemaVersionError, match="schema_version: 99"):
        CapabilityReport.from_dict(data)
    data["schema_version"] = 2
    del data["device"]["gflops_fp32"]
    with pytest.raises(SchemaError, match="device.*gflops_fp32"):
        CapabilityReport.from_dict(data)
    with pytest.raises(SchemaError, match="not valid JSON"):
        CapabilityReport.from_json("{oops")


def test_build_report_rejects_input_shape_of_wrong_rank():
    with pytest.raises(InvalidInputError, match="dimensions"):
        build_report(model="resnet8", input_shape=(3, 32), quick=True)


def test_atomic_write_gives_normal_permissions_and_keeps_existing_mode(tmp_path):
    import os
    import stat

    from edge_sdk._io import atomic_write_text

    fresh = tmp_path / "new.json"
    atomic_write_text(fresh, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o640)
    atomic_write_text(kept, "new")
    assert kept.read_text() == "new" and stat.S_IMODE(kept.stat().st_mode) == 0o640


@pytest.mark.parametrize("name", ["resnet8", "mixer_tiny"])
def test_peak_training_memory_agrees_with_torch_memtracker(name):
    from torch.distributed._tools.mem_tracker import MemTracker

    from edge_sdk.profiler.memory import peak_training_memory

    model = models.create(name, width=0.5)
    x = torch.randn(4, *models.spec(name).input_shape)
    ours = peak_training_memory(model, x)
    work = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(work.parameters(), lr=1e-3, momentum=0.9)
    y = torch.randint(0, 10, (4,))

    def step():  # train_local's step, with torch.optim.SGD
        optimizer.zero_grad(set_to_none=True)
        out = work(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        optimizer.step()
        float(loss.detach())
        int((out.detach().argmax(1) == y).sum())

    step()
    tracker = MemTracker()
    tracker.track_external(work, optimizer)
    with tracker:
        step()
    theirs = max(d.get("Total", 0) for d in tracker.get_tracker_snapshot("peak").values())
    assert ours == theirs  # equal on every reference model, sizes 1 and 1/16 (checked with torch 2.13)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    assert ours > 3 * params  # parameters, gradients, momentum, and the activations on top


def test_peak_tracker_counts_live_storages_once_and_drops_freed_ones():
    from edge_sdk.profiler.memory import PeakTracker

    kept = torch.zeros(1000)  # 4,000 bytes alive from the start
    with PeakTracker([kept, kept[10:]]) as tracker:  # a view of the same storage counts once
        a = torch.ones(2000)  # +8,000
        b = a * 2  # +8,000: peak 20,000
        del a, b
        c = torch.ones(500)  # the two above are gone: 4,000 + 2,000
    assert tracker.peak == 20_000 and tracker.current == 6_000
    del c


def test_latency_mean_sees_the_stalls_the_median_does_not():
    calls = []

    def call():
        calls.append(1)
        if len(calls) % 4 == 0:  # every fourth call stalls, as a preempted thread does
            time.sleep(0.04)

    stats = measure_latency(call, runs=12, max_seconds=5)
    assert stats.median_ms < 5 and stats.mean_ms > 8  # 3 of 12 timed calls took 40 ms
    size = SizeCost(ratio=1.0, kept_fraction=1.0, width=None, params=1, param_bytes=4, forward_flops=1,
                    train_step_flops=3, peak_train_memory_bytes=None, forward_latency=None, train_step_latency=stats)
    from edge_sdk.profiler.validate import predicted_round_seconds

    assert predicted_round_seconds(size, 11) == pytest.approx((stats.cold_ms + 10 * stats.mean_ms) / 1e3)


@pytest.mark.parametrize("name", models.names())
def test_flop_counts_equal_torch_flop_counter_mode(name):
    from torch.utils import flop_counter

    from edge_sdk.profiler import flops

    model = models.create(name, width=0.5)
    x = torch.randn(2, *models.spec(name).input_shape)
    for backward in (False, True):
        counter = flop_counter.FlopCounterMode(display=False, custom_mapping=flops._CPU_ATTENTION_FORMULAS)
        with flops._counting_state(model), counter:
            out = model(x)
            if backward:
                flops._training_loss(out).backward()
        assert count_flops(model, x, backward=backward) == counter.get_total_flops() > 0
        if not backward:
            ours = flops.flop_breakdown(model, x)
            assert ours.per_module == flops._self_counts(model, counter.get_flop_counts())
            assert sum(ours.per_module.values()) == ours.total


def test_quick_profile_imports_neither_dynamo_nor_other_commands():
    # torch.optim optimizers and torch's dispatch modes import dynamo on first use (1.1 s of CPU)
    code = (
        "import sys\n"
        "from edge_sdk.cli import main\n"
        "assert main(['profile', '--quick', '--model', 'cnn1d', '--ratios', '1,1/4', '--deadline', '60', '--json', '-']) == 0\n"
        "loaded = [m for m in ('torch._dynamo', 'sympy', 'edge_sdk.strategies', 'edge_sdk.export') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = CapabilityReport.from_json(result.stdout)
    assert all(s.peak_train_memory_bytes for s in report.model.sizes)
    assert report.model.sizes[0].train_step_latency.mean_ms > 0
