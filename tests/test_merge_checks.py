"""The merge path's checks (issue #11) and defences: duplicates, dtypes, bounds, assigned
plans, overflow, sample-count policy, per-tier outliers, attacks; over every strategy."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from edge_sdk import submodel
from edge_sdk.aggregation.robust_merge import MergeSettings
from edge_sdk.aggregation.weights import sample_weights
from edge_sdk.attacks import attack_names, choose_attackers, make_attack
from edge_sdk.errors import InvalidInputError, UnknownNameError, UpdateRejectedError
from edge_sdk.strategies import create_strategy, strategy_class, strategy_names
from edge_sdk.training import Update


def _full(values, samples=1):
    return Update("fedavg", None, {"0.weight": torch.tensor([values], dtype=torch.float32)}, samples)


def _model(values=(0.0, 0.0)):
    m = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([values]))
    return m


def test_duplicates_count_once():
    a, b = _full([1.0, 1.0]), _full([3.0, 3.0])
    copy_of_b = dataclasses.replace(b, tensors={k: v.clone() for k, v in b.tensors.items()})
    m = _model()
    s = create_strategy("fedavg")
    s.merge(m, [a, b, b, copy_of_b])
    assert torch.allclose(m[0].weight, torch.tensor([[2.0, 2.0]]))
    assert s.last_report["merge"]["duplicates"] == [2, 3]


@pytest.mark.parametrize("merge", [MergeSettings(), MergeSettings(rule="median")])
def test_dtype_mismatch_refused_model_kept(merge):
    m = _model()
    bad = Update("fedavg", None, {"0.weight": torch.ones(1, 2, dtype=torch.float64)}, 1)
    with pytest.raises(UpdateRejectedError, match="float64"):
        create_strategy("fedavg", merge=merge).merge(m, [_full([1.0, 1.0]), bad])
    assert torch.equal(m[0].weight, torch.zeros(1, 2))


def test_values_beyond_the_bound_refused():
    m = _model((1.0, -2.0))
    with pytest.raises(UpdateRejectedError, match="bound"):
        create_strategy("fedavg").merge(m, [_full([1.0, 1.0]), _full([1e6, 0.0])])
    assert torch.equal(m[0].weight, torch.tensor([[1.0, -2.0]]))


def test_overflow_keeps_the_model_and_names_the_update():
    m = _model()
    plan = submodel.plan("fiarse", m, 1.0)
    ups = [Update("fiarse", plan, {"0.weight": torch.tensor([3e38, 1.0])}, 5),
           Update("fiarse", plan, {"0.weight": torch.tensor([2e38, 1.0])}, 6)]
    s = create_strategy("fiarse", merge=MergeSettings(value_bound=1e39))  # sum_i n_i * change_i overflows
    with pytest.raises(UpdateRejectedError, match="overflow.*update 0"):
        s.merge(m, ups)
    assert torch.equal(m[0].weight, torch.zeros(1, 2))


def test_only_the_assigned_plan_is_merged():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(8, 4))
    p_half, p_quarter = submodel.plan("fiarse", g, 0.5), submodel.plan("fiarse", g, 0.25)
    state = g.state_dict()
    u = Update("fiarse", p_half, {n: p_half.gather(n, state[n]).clone() for n in p_half.held_shapes()}, 1)
    s = create_strategy("fiarse")
    s.merge(copy.deepcopy(g), [u], assigned=[p_half])
    with pytest.raises(UpdateRejectedError, match="assigned"):
        s.merge(g, [u], assigned=[p_quarter])
    with pytest.raises(UpdateRejectedError, match="assigned plans"):
        s.merge(g, [u], assigned=[])


def test_sample_policies():
    counts = [10, 20, 30, 1_000_000]
    assert sample_weights(counts, "trust").tolist() == counts
    assert sample_weights(counts, "equal").tolist() == [1, 1, 1, 1]
    assert sample_weights(counts, "cap:2").tolist() == [10, 20, 30, 50]  # 2 x the median 25
    with pytest.raises(InvalidInputError):
        MergeSettings(sample_weights="cap:0")
    assert MergeSettings().policy() == "trust" and MergeSettings(rule="median").policy() == "cap:4"


def test_inflated_sample_count_capped_under_robust_default():
    ups = [_full([1.0, 1.0], 10), _full([1.0, 1.0], 11), _full([1.0, 1.0], 12), _full([-9.0, -9.0], 10**9)]
    plain, capped = _model(), _model()
    create_strategy("fedavg").merge(plain, ups)
    s = create_strategy("fedavg", merge=MergeSettings(rule="clipped-mean:1e6", outlier_norm=0, outlier_cosine=-1))
    s.merge(capped, ups)
    assert float(plain[0].weight.detach()[0, 0]) < -8.9  # the liar owns the plain mean
    # capped at 4 x the median count (11.5): weights 10, 11, 12, 46
    assert float(capped[0].weight.detach()[0, 0]) == pytest.approx((10 + 11 + 12 - 9 * 46) / (10 + 11 + 12 + 46))
    assert s.last_report["merge"]["down_weighted"][0]["update"] == 3


def test_outliers_refused_per_tier_and_listed():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(1, 50, generator=gen)
    honest = [base + 0.1 * torch.randn(1, 50, generator=gen) for _ in range(4)]
    ups = [Update("fedavg", None, {"0.weight": h}, 10) for h in honest]
    ups += [Update("fedavg", None, {"0.weight": -base}, 10), Update("fedavg", None, {"0.weight": 10 * base}, 10)]
    m = nn.Sequential(nn.Linear(50, 1, bias=False))
    with torch.no_grad():
        m[0].weight.zero_()
    s = create_strategy("fedavg", merge=MergeSettings(rule="median"))
    s.merge(m, ups)
    merge = s.last_report["merge"]
    refused = {r["update"]: r["reason"] for r in merge["refused"]}
    assert set(refused) == {4, 5} and "cosine" in refused[4] and "norm" in refused[5]
    assert not [r for r in merge["down_weighted"] if "factor" in r]
    assert torch.allclose(m[0].weight, torch.stack(honest).median(0).values * 0 + m[0].weight)  # merged finite
    # a tier of two is not checked
    s.merge(copy.deepcopy(m), ups[:1] + ups[4:5])
    assert s.last_report["merge"]["refused"] == []


def test_attackers_spread_across_tiers_and_seeded():
    tier_of = [c % 4 for c in range(20)]
    a = choose_attackers(tier_of, 0.2, 5)
    assert len(a) == 4 and sorted(tier_of[c] for c in a) == [0, 1, 2, 3]
    assert a == choose_attackers(tier_of, 0.2, 5)
    assert len(choose_attackers(tier_of, 0.1, 5)) == 2
    assert len({tier_of[c] for c in choose_attackers(tier_of, 0.1, 5)}) == 2


@pytest.mark.parametrize("name", attack_names())
def test_attacks_change_what_they_say(name):
    attack = make_attack(name)
    u = _full([2.0, 4.0], 7)
    start = {"0.weight": torch.tensor([[1.0, 1.0]])}
    out = attack.apply(u, start, torch.Generator().manual_seed(0))
    delta = out.tensors["0.weight"] - start["0.weight"]
    expected = {"none": [[1.0, 3.0]], "sign-flip": [[-1.0, -3.0]], "scale": [[10.0, 30.0]],
                "samples": [[1.0, 3.0]]}.get(name)
    if expected is not None:
        assert torch.allclose(delta, torch.tensor(expected))
    assert out.num_samples == (10**9 if name == "samples" else 7)
    with pytest.raises(UnknownNameError):
        make_attack("label-flip")


@pytest.mark.parametrize("strategy", [n for n in strategy_names(available_only=True) if n != "fedra"])
@pytest.mark.parametrize("rule", ["median", "clipped-mean"])
def test_every_strategy_simulates_a_robust_merge_under_attack(strategy, rule):
    from edge_sdk.simulation import SimulationConfig, run_simulation

    cfg = SimulationConfig(strategy=strategy, clients=6, tiers="1,1/4", rounds=1, local_steps=1, batch_size=16,
                           robust=rule, attack="sign-flip", attackers=0.34, seed=1)
    doc = json.loads(run_simulation(cfg).to_json())
    assert doc["merge"]["rule"] == rule and doc["attack"]["attack"] == "sign-flip"
    assert len(doc["attack"]["clients"]) == 2
    merge = doc["rounds"][0]["merge"]
    assert merge["rule"] == rule and isinstance(merge["refused"], list) and merge["merged"] >= 4
    assert np.isfinite(doc["final_average"])


def test_fedra_robust_merge():
    from edge_sdk.simulation import SimulationConfig, check_config, run_simulation

    cfg = SimulationConfig(strategy="fedra", model="vit_tiny", model_options={"width": 0.25, "depth": 2},
                           dataset="digits", clients=4, tiers="1,1/2", rounds=1, local_steps=1, batch_size=8,
                           robust="trimmed-mean", seed=0)
    try:
        check_config(cfg)
    except InvalidInputError as exc:  # pragma: no cover - a build without the model
        pytest.skip(str(exc))
    res = run_simulation(cfg)
    assert res.rounds[0].merge["rule"] == "trimmed-mean"


def test_dp_simulation_logs_epsilon():
    from edge_sdk.simulation import SimulationConfig, run_simulation

    res = run_simulation(SimulationConfig(strategy="heterofl", clients=4, tiers="1,1/4", rounds=2, local_steps=1,
                                          dp_clip=1.0, dp_noise=1.0))
    doc = res.to_dict()
    assert doc["privacy"]["epsilon"] > 0 and doc["rounds"][1]["merge"]["privacy"]["rounds_accounted"] == 2
    assert doc["merge"]["sample_weights"] == "equal"


def test_cli_bad_merge_input_exits_2(capsys):
    from edge_sdk.cli import main

    for argv in (["--robust", "krum"], ["--robust", "median", "--dp-clip", "1", "--dp-noise", "1"],
                 ["--attack", "sign-flip"], ["--attack", "scale:x", "--attackers", "0.2"], ["--dp-mode", "local",
                                                                                          "--dp-clip", "1"]):
        assert main(["simulate", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0]


def test_flower_run_config_keys():
    from edge_sdk.flower.config import RunSettings

    s = RunSettings.from_config({"robust": "trimmed-mean:0.1", "sample-weights": "cap:3", "outlier-norm": 4.0})
    assert s.robust == "trimmed-mean:0.1" and s.merge_settings().outliers()[0] == 4.0
    s = RunSettings.from_config({"dp-clip": 2.0, "dp-noise": 0.5, "dp-mode": "client", "dp-delta": 1e-6})
    assert s.merge_settings().dp.mode == "client" and s.merge_settings().dp.delta == 1e-6
    with pytest.raises(InvalidInputError):
        RunSettings.from_config({"robust": "median", "dp-clip": 1.0, "dp-noise": 1.0})
    ms = RunSettings.from_config({"robust": "median"}).merge_settings()
    assert ms.merge_rule.name == "median" and ms.dp is None
    assert strategy_class("heterofl")


def test_cosine_check_on_a_tier_holding_part_of_the_model():
    """The tier's reference is its median over the coordinates it holds (unheld ones are 0,
    not +inf), so a flipped change shows its real cosine."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    p = submodel.plan("heterofl", m, 0.5, example_input=torch.randn(1, 6))
    state = m.state_dict()
    g = torch.Generator().manual_seed(0)
    base = {n: torch.randn(s, generator=g) for n, s in p.held_shapes().items()}
    ups = [Update("heterofl", p, {n: p.gather(n, state[n]) + (-1.0 if i == 4 else 1.0)
                                  * (base[n] + 0.3 * torch.randn(base[n].shape, generator=g)) for n in base}, 10 + i)
           for i in range(5)]
    s = create_strategy("heterofl", merge=MergeSettings(rule="median"))
    s.merge(m, ups)
    (refused,) = s.last_report["merge"]["refused"]
    assert refused["update"] == 4 and refused["cosine"] < -0.5


def test_absent_attackers_send_nothing_and_nobody_else_is_affected():
    """attack="absent": the attackers' updates are never merged (the ideal-defence reference)."""
    from edge_sdk.flower.config import NodeSettings
    from edge_sdk.simulation import SimulationConfig, run_simulation

    cfg = dict(strategy="heterofl", clients=6, tiers="1,1/4", rounds=2, local_steps=1, batch_size=16, seed=1)
    doc = json.loads(run_simulation(SimulationConfig(**cfg, attack="absent", attackers=0.34)).to_json())
    attackers = doc["attack"]["clients"]
    assert len(attackers) == 2 and not make_attack("absent").sends_update
    for rnd in doc["rounds"]:
        assert rnd["merge"]["updates"] == 4 and rnd["clients"] == 6  # sampled, but only 4 sent
    with pytest.raises(InvalidInputError, match="absent.*Flower"):
        NodeSettings.from_config({"attack": "absent"})
    assert NodeSettings.from_config({"attack": "sign-flip"}).attack == "sign-flip"
