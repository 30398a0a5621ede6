"""Robust merge rules over heterogeneous submodels: hand-computed cases, coverage, checks.

Parametrized over the merge-rule registry where the property is generic, so a new rule is
tested with no edit here."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from edge_sdk import submodel
from edge_sdk.aggregation.robust import MergeRule, merge_rule, merge_rule_names
from edge_sdk.aggregation.robust_merge import MergeSettings
from edge_sdk.errors import InvalidInputError, UnknownNameError, UpdateRejectedError
from edge_sdk.strategies import create_strategy
from edge_sdk.training import Update

OFF = dict(outlier_norm=0, outlier_cosine=-1)


def _model() -> nn.Module:
    """One 4-element weight with magnitudes 4 > 3 > 2 > 1: FIARSE's plan at ratio r holds
    the top int(4r) of them, so plans at 1, 1/2, 1/4 nest and overlap."""
    m = nn.Sequential(nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0]]))
    return m


# changes per client; coordinates a client's plan does not hold are ignored
CHANGES = {  # ratio, change over the 4 coordinates
    "A": (1.0, [1.0, 2.0, 3.0, 4.0]),
    "B": (1.0, [2.0, 4.0, 6.0, -38.0]),
    "C": (1.0, [3.0, 0.0, 9.0, 1.0]),
    "D": (0.5, [10.0, -26.0]),
    "E": (0.25, [-5.0]),
}


def _fiarse_updates(model: nn.Module, samples: int = 1) -> tuple[list[Update], list]:
    updates, plans = [], []
    cache = {}
    for ratio, change in CHANGES.values():
        plan = cache.setdefault(ratio, submodel.plan("fiarse", model, ratio))
        held = plan.gather("0.weight", model.state_dict()["0.weight"])
        assert held.numel() == len(change)
        updates.append(Update("fiarse", plan, {"0.weight": held + torch.tensor(change)}, samples))
        plans.append(plan)
    return updates, plans


def _merged_change(rule: str, **kw) -> list[float]:
    model = _model()
    before = model[0].weight.detach().clone()
    updates, plans = _fiarse_updates(model)
    strategy = create_strategy("fiarse", merge=MergeSettings(rule=rule, **{**OFF, **kw}))
    strategy.merge(model, updates, assigned=plans)
    return (model[0].weight.detach() - before).reshape(-1).tolist()


# the clipped-mean bound: 3x the median over clients of ||change|| / sqrt(held fraction)
NORMS = {"A": math.sqrt(30), "B": math.sqrt(1500), "C": math.sqrt(91), "D": math.sqrt(776), "E": 5.0}
FRAC = {"A": 1.0, "B": 1.0, "C": 1.0, "D": 0.5, "E": 0.25}
BOUND = 3 * float(np.median([NORMS[k] / math.sqrt(FRAC[k]) for k in NORMS]))  # = 30 (E: 5 / 0.5, times 3)
CLIP = {k: min(1.0, BOUND * math.sqrt(FRAC[k]) / NORMS[k]) for k in NORMS}


def _clipped(k: str, j: int) -> float:
    return CHANGES[k][1][j] * CLIP[k]


def test_bound_is_thirty():
    assert BOUND == pytest.approx(30.0)


def test_plain_mean_hand_computed():
    got = _merged_change("none")
    assert got == pytest.approx([(1 + 2 + 3 + 10 - 5) / 5, (2 + 4 + 0 - 26) / 4, (3 + 6 + 9) / 3, (4 - 38 + 1) / 3])


def test_median_hand_computed():
    # holders: coord 0 all five, coord 1 A-D (even count: mean of the middle two), coords 2-3 A-C
    assert _merged_change("median") == pytest.approx([2.0, (0 + 2) / 2, 6.0, 1.0])


def test_trimmed_mean_hand_computed_with_fallback():
    # beta 0.25 needs ceil(1/0.25) = 4 holders: coords 0, 1 trim one per side; 2, 3 fall back
    got = _merged_change("trimmed-mean:0.25")
    fb2 = sum(_clipped(k, 2) for k in "ABC") / 3
    fb3 = sum(_clipped(k, 3) for k in "ABC") / 3
    assert got == pytest.approx([(1 + 2 + 3) / 3, (0 + 2) / 2, fb2, fb3])


def test_clipped_mean_hand_computed():
    got = _merged_change("clipped-mean")
    assert CLIP["A"] == 1 and CLIP["C"] == 1 and CLIP["E"] == 1 and CLIP["B"] < 1 and CLIP["D"] < 1
    expected = [sum(_clipped(k, 0) for k in "ABCDE") / 5, sum(_clipped(k, 1) for k in "ABCD") / 4,
                sum(_clipped(k, 2) for k in "ABC") / 3, sum(_clipped(k, 3) for k in "ABC") / 3]
    assert got == pytest.approx(expected)


def test_clipped_mean_explicit_bound_scales_with_held_fraction():
    # bound 4: a full client is judged against 4, a 1/4 client against 4 * sqrt(1/4) = 2
    got = _merged_change("clipped-mean:4")
    e = CHANGES["E"][1][0] * min(1.0, 2.0 / 5.0)
    full = {k: 4.0 / NORMS[k] for k in "ABC"}
    d = min(1.0, 4.0 * math.sqrt(0.5) / NORMS["D"])
    assert got[0] == pytest.approx((1 * full["A"] + 2 * full["B"] + 3 * full["C"] + 10 * d + e) / 5)


def test_median_over_structured_slices():
    """HeteroFL slices: each coordinate's median runs over exactly the clients whose index map
    holds it (checked against each plan's own gather of the global positions)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(1, 3)
    ratios = [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    plans = {r: submodel.plan("heterofl", model, r, example_input=x) for r in set(ratios)}
    state = model.state_dict()
    gen = torch.Generator().manual_seed(1)
    updates = []
    for r in ratios:
        p = plans[r]
        updates.append(Update("heterofl", p, {n: p.gather(n, state[n]) + torch.randn(s, generator=gen)
                                              for n, s in p.held_shapes().items()}, 1))
    expected = {}
    for name, t in state.items():
        pos = torch.arange(t.numel()).reshape(t.shape)
        cols: dict[int, list[float]] = {}
        for u in updates:
            idx = u.plan.gather(name, pos).reshape(-1)
            delta = (u.tensors[name] - u.plan.gather(name, t)).reshape(-1)
            for i, d in zip(idx.tolist(), delta.tolist()):
                cols.setdefault(i, []).append(d)
        flat = t.reshape(-1).clone()
        for i, vals in cols.items():
            flat[i] += float(np.median(vals)) if len(vals) >= 3 else float("nan")
        expected[name] = (flat, {i for i, v in cols.items() if len(v) >= 3})
    merged = copy.deepcopy(model)
    create_strategy("heterofl", merge=MergeSettings(rule="median", **OFF)).merge(merged, updates)
    for name, (flat, checked) in expected.items():
        got = merged.state_dict()[name].reshape(-1)
        idx = sorted(checked)
        assert torch.allclose(got[idx], flat[idx], atol=1e-5), name


@pytest.mark.parametrize("rule", merge_rule_names())
def test_unheld_coordinates_unchanged(rule):
    model = _model()
    before = model[0].weight.detach().clone()
    updates, plans = _fiarse_updates(model)
    keep = [i for i, (r, _) in enumerate(CHANGES.values()) if r < 1]  # D and E hold coords 0, 1 only
    create_strategy("fiarse", merge=MergeSettings(rule=rule, **OFF)).merge(
        model, [updates[i] for i in keep], assigned=[plans[i] for i in keep])
    assert torch.equal(model[0].weight.detach()[0, 2:], before[0, 2:])


@pytest.mark.parametrize("rule", merge_rule_names())
def test_rule_generic_properties(rule):
    """Identical changes merge to that change; columns are independent; chunks agree."""
    r = merge_rule(rule)
    assert isinstance(r, MergeRule) and merge_rule(r.spec).spec == r.spec
    gen = torch.Generator().manual_seed(0)
    same = torch.full((7, 5), 0.25)
    assert torch.allclose(r.combine(same, torch.ones(7, dtype=torch.float64)), torch.full((5,), 0.25))
    values = torch.randn(9, 6, generator=gen)
    values[7:, 2:] = float("nan")  # two clients hold only the first two coordinates
    w = torch.ones(9, dtype=torch.float64)
    whole = r.combine(values, w)
    for j in range(6):
        assert torch.allclose(r.combine(values[:, j:j + 1], w), whole[j:j + 1], atol=1e-6)


def test_rule_specs_refused():
    with pytest.raises(UnknownNameError):
        merge_rule("krum")
    for bad in ("trimmed-mean:0.5", "trimmed-mean:x", "clipped-mean:-1", "median:3"):
        with pytest.raises(InvalidInputError):
            merge_rule(bad)


def _tiered_updates(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(4, 6)
    ratios = [1.0] * 4 + [0.5] * 4 + [0.25] * 3
    plans = {r: submodel.plan("heterofl", model, r, example_input=x) for r in set(ratios)}
    state = model.state_dict()
    gen = torch.Generator().manual_seed(seed + 1)
    common = {n: torch.randn(t.shape, generator=gen) for n, t in state.items() if t.is_floating_point()}
    updates = []
    for k, r in enumerate(ratios):
        p = plans[r]
        tensors = {}
        for n, s in p.held_shapes().items():
            t = p.gather(n, state[n]).clone()
            if t.is_floating_point():
                t += p.gather(n, common[n]) * (-1.0 if k in (1, 5) else 1.0) + 0.5 * torch.randn(s, generator=gen)
            tensors[n] = t
        updates.append(Update("heterofl", p, tensors, 10 + k))
    return model, updates, [u.plan for u in updates]


@pytest.mark.parametrize("rule", merge_rule_names())
def test_dense_classes_equal_the_nan_stack(rule, monkeypatch):
    """The class blocks (few distinct plans) and the NaN stack give the same merge, outlier
    checks and report included: a rule only ever sees each coordinate's holders."""
    from edge_sdk.aggregation import coverage

    model, updates, plans = _tiered_updates()
    results = []
    for groups in (coverage.MAX_GROUPS, 0):
        monkeypatch.setattr(coverage, "MAX_GROUPS", groups)
        m = copy.deepcopy(model)
        s = create_strategy("heterofl", merge=MergeSettings(rule=rule, outlier_norm=3, outlier_cosine=0))
        s.merge(m, updates, assigned=plans)
        results.append((m.state_dict(), s.last_report["merge"]))
    (a, ra), (b, rb) = results
    for name in a:
        assert torch.allclose(a[name].double(), b[name].double(), atol=1e-5), name
    assert {r["update"] for r in ra["refused"]} == {r["update"] for r in rb["refused"]} == {1, 5}  # the flipped
    assert ra["fallback_fraction"] == pytest.approx(rb["fallback_fraction"])


def test_blocks_cover_each_held_coordinate_once_with_its_holders():
    from edge_sdk.aggregation.coverage import Coverage

    model, updates, _ = _tiered_updates()
    state = model.state_dict()
    cov = Coverage(updates, state)
    assert cov.groups is not None and len(cov.groups) == 3
    for name, t in state.items():
        if not t.is_floating_point():
            continue
        stack = cov.stack(name)
        seen = torch.zeros(t.numel(), dtype=torch.int64)
        for b in cov.blocks(name):
            cols = torch.arange(t.numel()) if b.cols is None else b.cols
            seen[cols] += 1
            assert b.dense
            holders = ~torch.isnan(stack[:, cols])
            assert bool(holders[b.rows].all()) and int(holders.sum()) == len(b.rows) * cols.numel()
            assert torch.equal(b.values, stack[b.rows][:, cols])
        assert torch.equal(seen > 0, (~torch.isnan(stack)).any(0)) and int(seen.max()) == 1
