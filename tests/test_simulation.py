"""Single-process federated simulation: the loop, its JSON log, determinism, the CLI."""

from __future__ import annotations

import argparse
import json
import math
import sys

import pytest
import torch

from edge_sdk import simulation
from edge_sdk.errors import (
    EdgeSDKError,
    InvalidInputError,
    MissingDependencyError,
    OutputError,
    UnknownNameError,
)
from edge_sdk.simulation import SimulationConfig, parse_tiers, run_simulation
from edge_sdk.strategies import compatible_models

TINY = dict(dataset="mnist1d", model="cnn1d", clients=4, tiers="1,1/4", alpha=0.5, rounds=2,
            local_steps=2, batch_size=16, model_options={"width": 0.5})


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _log_without_times(result) -> dict:
    doc = result.to_dict()
    doc.pop("wall_time_s")
    for r in doc["rounds"]:
        r.pop("seconds")
        # the update header carries the timing metric, so its size jitters by a few bytes
        r.pop("index_bytes")
        if r.get("merge"):
            r["merge"].pop("seconds")  # the merge's own timing
    return doc


def test_parse_tiers_keeps_text_and_values():
    labels, values = parse_tiers("1, 1/4,1/16 ,0.015625")
    assert labels == ("1", "1/4", "1/16", "0.015625")
    assert [float(v) for v in values] == [1.0, 0.25, 0.0625, 0.015625]
    assert parse_tiers([1, 0.5])[0] == ("1", "0.5")
    for bad in ("0", "2", "1,a", "1,,1/4", "1,1/4,1/4", "-1/4", "1/0", ""):
        with pytest.raises(InvalidInputError):
            parse_tiers(bad)


@pytest.mark.parametrize("strategy", ["fedavg", "fiarse", "heterofl", "fedrolex", "fiarse-structured"])
def test_tiny_run_log_has_the_specified_shape(strategy):
    seen = []
    result = run_simulation(SimulationConfig(strategy=strategy, **TINY), progress=seen.append)
    doc = json.loads(result.to_json())
    assert set(doc) >= {"config", "rounds", "final", "final_average", "local_accuracy", "wall_time_s"}
    assert doc["config"]["strategy"] == strategy and doc["config"]["tiers"] == ["1", "1/4"]
    assert [r["round"] for r in doc["rounds"]] == [1, 2] and [m.round for m in seen] == [1, 2]
    for r in doc["rounds"]:
        assert math.isfinite(r["train_loss"]) and 0 <= r["client_accuracy"] <= 1
        assert r["clients"] == 4 and r["upload_bytes"] > 0
        assert set(r["global_accuracy"]) == {"1", "1/4"}
    assert list(doc["final"]) == ["1", "1/4"]
    assert all(0.0 <= v <= 1.0 for v in doc["final"].values())
    assert doc["final"] == doc["rounds"][-1]["global_accuracy"]
    assert doc["final_average"] == pytest.approx(sum(doc["final"].values()) / 2)
    assert 0.0 <= doc["local_accuracy"] <= 1.0
    assert doc["clients_per_tier"] == {"1": 2, "1/4": 2}
    if strategy == "fedavg":
        full = sum(t.numel() * t.element_size() for t in result.global_model.state_dict().values())
        assert doc["rounds"][0]["upload_bytes"] == 4 * full
        # everyone trains (and is evaluated with) the full model
        assert doc["kept_fraction"] == {"1": 1.0, "1/4": 1.0}
        assert doc["final"]["1"] == doc["final"]["1/4"]
    else:
        assert doc["kept_fraction"]["1"] == pytest.approx(1.0)
        assert 0.15 < doc["kept_fraction"]["1/4"] < 0.4
        # the two size-1/4 clients upload about a quarter of what a full-model client would
        full = sum(t.numel() * t.element_size() for t in result.global_model.state_dict().values())
        assert 2 * full < doc["rounds"][0]["upload_bytes"] < 3 * full


def test_fedra_runs_on_a_block_model_and_keeps_block_fractions():
    cfg = SimulationConfig(
        strategy="fedra", dataset="digits", model="vit_tiny", clients=4, tiers="1,1/2", alpha=1.0,
        rounds=2, local_steps=2, batch_size=16, strategy_options={"lora_rank": 2},
        model_options={"width": 0.25, "depth": 4, "patch_size": 4},
    )
    result = run_simulation(cfg)
    doc = result.to_dict()
    assert list(doc["final"]) == ["1", "1/2"] and all(0 <= v <= 1 for v in doc["final"].values())
    # half the blocks (plus embeddings and head) at size 1/2; all of them at size 1
    assert doc["kept_fraction"]["1"] == pytest.approx(1.0)
    assert 0.4 < doc["kept_fraction"]["1/2"] < 0.8
    # clients upload adapters and head only: far less than the model
    full = sum(p.numel() for p in result.global_model.parameters()) * 4
    assert doc["rounds"][0]["upload_bytes"] < 4 * full * 0.5
    assert any("lora" in name for name, _ in result.global_model.named_parameters())


def test_training_learns_something():
    cfg = SimulationConfig(strategy="fiarse", **{**TINY, "rounds": 6, "local_steps": 10, "batch_size": 32})
    result = run_simulation(cfg)
    assert min(result.final.values()) > 0.25  # 10 classes: chance is 0.1
    assert result.rounds[-1].train_loss < result.rounds[0].train_loss - 0.3
    assert result.final["1"] > result.rounds[0].global_accuracy["1"]


def test_deterministic_for_a_seed_and_leaves_caller_rng_alone():
    cfg = SimulationConfig(strategy="fiarse", **TINY)
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    a = run_simulation(cfg)
    assert torch.equal(torch.rand(3), expected_next)
    b = run_simulation(SimulationConfig(strategy="fiarse", **TINY))
    assert _log_without_times(a) == _log_without_times(b)
    assert all(abs(x.index_bytes - y.index_bytes) < 64 for x, y in zip(a.rounds, b.rounds))
    for (ka, va), (kb, vb) in zip(a.global_model.state_dict().items(), b.global_model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = run_simulation(SimulationConfig(strategy="fiarse", **{**TINY, "seed": 1, "data_seed": 0}))
    assert _log_without_times(c)["rounds"] != _log_without_times(a)["rounds"]


@pytest.mark.parametrize(
    "change, error, text",
    [
        ({"strategy": "fedprox"}, UnknownNameError, "fiarse-structured"),
        ({"dataset": "cifar10"}, UnknownNameError, "mnist1d"),
        ({"model": "resnet1000"}, UnknownNameError, "cnn1d"),
        ({"tiers": "1,3/2"}, InvalidInputError, "(0, 1]"),
        ({"tiers": "1,1/4,1/16,1/64,1/128"}, InvalidInputError, "fewer than the 5 tiers"),
        ({"rounds": 0}, InvalidInputError, "rounds"),
        ({"alpha": -1.0}, InvalidInputError, "alpha"),
        ({"strategy_options": {"gradient": "soft"}}, InvalidInputError, "surrogate"),
        ({"strategy_options": {"lora_rank": 2}}, InvalidInputError, "unknown option"),
        ({"client_fraction": 0.0}, InvalidInputError, "client_fraction"),
    ],
)
def test_bad_config_is_refused_before_running(change, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        run_simulation(SimulationConfig(**{**TINY, **change}))


def test_model_and_dataset_must_fit_and_fedra_needs_blocks():
    with pytest.raises(InvalidInputError, match="1-d signals"):
        run_simulation(SimulationConfig(**{**TINY, "model": "resnet8", "model_options": {}}))
    with pytest.raises(InvalidInputError, match="blocks"):
        run_simulation(SimulationConfig(strategy="fedra", **TINY))
    assert "vit_tiny" in compatible_models("fedra") and "cnn1d" not in compatible_models("fedra")


def test_plot_writes_a_png_and_names_the_extra_when_matplotlib_is_missing(tmp_path, monkeypatch):
    result = run_simulation(SimulationConfig(strategy="heterofl", **{**TINY, "rounds": 1}))
    out = tmp_path / "acc.png"
    simulation.plot_history(result, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "acc.png"]  # no temp file left
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingDependencyError, match=r'edge-fl-sdk\[plot\]'):
        simulation.plot_history(result, str(tmp_path / "other.png"))


# ---- CLI ------------------------------------------------------------------------------------


def _cli(argv):
    from edge_sdk.cli import simulate_cmd

    parser = argparse.ArgumentParser(prog="edge-sdk")
    sub = parser.add_subparsers(dest="command")
    simulate_cmd.register(sub)
    args = parser.parse_args(["simulate", *argv])
    return args.handler(args)


CLI_TINY = ["--dataset", "mnist1d", "--model", "cnn1d", "--clients", "4", "--tiers", "1,1/4",
            "--alpha", "0.5", "--rounds", "2", "--local-steps", "2", "--batch-size", "16", "--seed", "0"]


def test_cli_runs_prints_progress_and_summary_and_writes_json(tmp_path, capsys):
    out = tmp_path / "log.json"
    png = tmp_path / "acc.png"
    assert _cli(["--strategy", "heterofl", *CLI_TINY, "--json", str(out), "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("round ")]
    assert len(progress) == 2 and progress[0].startswith("round 1/2")
    assert "global acc" in captured.out and "1/4" in captured.out and "average" in captured.out
    doc = json.loads(out.read_text())
    assert doc["config"]["strategy"] == "heterofl" and doc["config"]["alpha"] == 0.5
    assert list(doc["final"]) == ["1", "1/4"] and len(doc["rounds"]) == 2


def test_cli_json_to_stdout_stays_pure_json(capsys):
    assert _cli(["--strategy", "fedavg", *CLI_TINY[:-4], "--rounds", "1", "--seed", "0", "--json", "-"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["config"]["rounds"] == 1
    assert "global acc" in captured.err


@pytest.mark.parametrize(
    "extra, error",
    [
        (["--strategy", "nope"], UnknownNameError),
        (["--dataset", "imagenet"], UnknownNameError),
        (["--model", "nope"], UnknownNameError),
        (["--tiers", "1,0"], InvalidInputError),
        (["--tiers", "1,1/4,1/16,1/64", "--clients", "3"], InvalidInputError),
        (["--strategy", "fedra"], InvalidInputError),
        (["--json", "/nonexistent-dir/x.json"], OutputError),
        (["--plot", "/nonexistent-dir/x.png"], OutputError),
        (["--plot", "x.svg"], InvalidInputError),
        (["--lr", "nan"], InvalidInputError),
        (["--width", "-1"], InvalidInputError),
        (["--bn-stats", "running"], InvalidInputError),
    ],
)
def test_cli_bad_values_fail_before_running(extra, error, monkeypatch):
    def boom(*a, **k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("run_simulation must not start on bad input")

    monkeypatch.setattr(simulation, "run_simulation", boom)
    base = list(CLI_TINY)
    with pytest.raises(error) as info:
        _cli(base + extra)
    assert isinstance(info.value, EdgeSDKError) and "\n" not in str(info.value)


def test_fedtsa_stage1_only_matches_heterofl_and_proxy_is_held_out(monkeypatch):
    none = run_simulation(SimulationConfig(strategy="fedtsa", server_data="none", **TINY))
    het = run_simulation(SimulationConfig(strategy="heterofl", **TINY))
    a, b = none.global_model.state_dict(), het.global_model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    # proxy: the server's slice is taken out of the training data before the client split
    sizes = []
    real_split = simulation._datasets.dirichlet_split
    monkeypatch.setattr(simulation._datasets, "dirichlet_split",
                        lambda labels, *a, **k: sizes.append(len(labels)) or real_split(labels, *a, **k))
    proxy = run_simulation(SimulationConfig(strategy="fedtsa", server_data="proxy", server_holdout=0.1,
                                            strategy_options={"steps": 3, "batch_size": 32}, **TINY))
    assert sizes == [3600]
    p = proxy.global_model.state_dict()
    assert not all(torch.allclose(p[k].float(), a[k].float(), atol=1e-5) for k in a)


def test_cli_fedtsa_deepinversion_runs_and_bad_server_data_refused(capsys):
    assert _cli(["--strategy", "fedtsa", *CLI_TINY, "--server-data", "deepinversion", "--distill-steps", "2",
                 "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["strategy"] == "fedtsa" and doc["config"]["server_data"] == "deepinversion"
    with pytest.raises(InvalidInputError, match="server_data"):
        _cli(["--strategy", "fedtsa", *CLI_TINY, "--server-data", "diffusion"])


def test_test_batch_bn_normalises_each_batch_by_its_own_statistics():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with torch.no_grad():  # running statistics far from any batch's
        model[1].running_mean.fill_(5.0)
        model[1].running_var.fill_(9.0)
    model.eval()
    copy_ = simulation._batch_statistics_copy(model)
    x = torch.randn(20, 3) * 2 + 1
    h = model[0](x)
    expect = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + model[1].eps)
    expect = expect * model[1].weight + model[1].bias
    assert torch.allclose(copy_(x), expect, atol=1e-5)
    assert not torch.allclose(model(x), expect, atol=1e-2)  # the original still uses running stats
    assert model[1].running_mean is not None and float(model[1].running_mean[0]) == 5.0  # left alone
    before = copy_(x[:10])
    assert not torch.allclose(before, copy_(x)[:10], atol=1e-3)  # depends on the batch it is in


def test_final_accuracy_is_reported_under_every_bn_mode():
    cfg = SimulationConfig(strategy="heterofl", **TINY)
    result = run_simulation(cfg)
    doc = result.to_dict()
    assert set(doc["final_by_bn_stats"]) == set(simulation.BN_STATS)
    assert doc["final_by_bn_stats"]["recompute"] == doc["final"]
    static = run_simulation(SimulationConfig(strategy="heterofl", bn_stats="test-batch", **TINY))
    # the same run (BN mode only changes evaluation) evaluated with test-batch BN from the start
    assert static.final == pytest.approx(doc["final_by_bn_stats"]["test-batch"])
    assert static.final_by_bn_stats["recompute"] == pytest.approx(doc["final"])
