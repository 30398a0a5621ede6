"""Plans: fiarse masks (nested, exact sizes), plan bytes, mismatch and argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edge_sdk.errors import InvalidInputError, PlanMismatchError, SchemaError, UnknownNameError
from edge_sdk.submodel import FiarseSubmodel, SubmodelPlan, plan, plan_names
from edge_sdk.submodel.fiarse import _kth_largest_exact, _top_masks, maskable_names


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_strategies_and_argument_errors():
    assert plan_names()[:4] == ("fiarse", "fiarse-structured", "heterofl", "fedrolex")
    m = small_cnn()
    with pytest.raises(UnknownNameError, match="fiarse-structured"):
        plan("bogus", m, 0.5)
    for bad in (0, 0.0, -0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(InvalidInputError):
            plan("fiarse", m, bad)
    with pytest.raises(InvalidInputError, match="scope"):
        plan("fiarse", m, 0.5, scope="nope")
    with pytest.raises(InvalidInputError, match="example_input"):
        plan("heterofl", m, 0.5)  # no config.input_shape to fall back on


@pytest.mark.parametrize("budget", ["maskable", "all"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_fiarse_masks_are_nested_and_exact(scope, budget):
    m = small_cnn()
    total = n_params(m)
    names = set(maskable_names(m))
    # norm-layer parameters are never masked; conv/linear weights and biases are
    assert "1.weight" not in names and "0.weight" in names and "0.bias" in names
    maskable = sum(dict(m.named_parameters())[n].numel() for n in names)
    always = total - maskable
    ratios = [1.0, 0.5, 0.25, 1 / 16, 1 / 64]
    plans = [plan("fiarse", m, r, scope=scope, budget=budget) for r in ratios]
    for r, p in zip(ratios, plans):
        held_maskable = sum(int(mask.sum()) for mask in p.masks.values())
        held = always + held_maskable
        assert p.budget == budget
        assert p.kept_fraction == pytest.approx(held / total)
        assert p.maskable_fraction == pytest.approx(held_maskable / maskable)
        assert p.held_parameters == held
        if scope == "global" and budget == "all":  # exactly round(ratio * total), ties broken by position
            assert held == max(always, int(r * total + 0.5))
        elif scope == "global":  # the released rule: int(ratio * maskable) conv/linear elements
            assert held_maskable == int(r * maskable)
        elif budget == "all":
            assert abs(held - max(always, r * total)) <= len(names)
        else:
            assert abs(held_maskable - r * maskable) <= len(names)
    for big, small in zip(plans, plans[1:]):
        for name in big.masks:
            assert not (small.masks[name] & ~big.masks[name]).any(), name


def test_fiarse_budgets_differ_by_the_always_held_parameters():
    """At a small ratio the old budget lets the norm parameters eat the conv/linear share;
    the released one holds int(ratio x maskable) of them whatever the norm layers hold."""
    m = small_cnn()
    released, old = plan("fiarse", m, 1 / 16), plan("fiarse", m, 1 / 16, budget="all")
    maskable = sum(mask.numel() for mask in released.masks.values())
    assert sum(int(x.sum()) for x in released.masks.values()) == maskable // 16
    assert sum(int(x.sum()) for x in old.masks.values()) < maskable // 16
    assert old.kept_fraction < released.kept_fraction
    with pytest.raises(InvalidInputError, match="budget"):
        plan("fiarse", m, 0.5, budget="params")


def test_fiarse_plan_bytes_keep_the_budget_and_old_plans_decode_as_all():
    import json

    m = small_cnn()
    for budget in ("maskable", "all"):
        p = plan("fiarse", m, 0.25, budget=budget)
        q = SubmodelPlan.from_bytes(p.to_bytes())
        assert q.budget == budget and q.same_as(p)
    # a plan written before the budget field existed (header without it) decodes as "all"
    p = plan("fiarse", m, 0.25, budget="all")
    header = p._header()
    del header["budget"]
    p._header = lambda: header  # type: ignore[method-assign]
    q = SubmodelPlan.from_bytes(p.to_bytes())
    assert q.budget == "all" and q.same_as(p)
    assert json.dumps(header)  # the header stays plain JSON


def test_fiarse_keeps_the_largest_magnitudes_with_ties():
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -3.0, 0.5, 2.0]]))
    m = nn.Sequential(lin)
    p = plan("fiarse", m, 0.75)  # 3 of 4: |-3|, |2|, then the first of the tied 0.5s
    assert p.masks["0.weight"].tolist() == [[True, True, False, True]]


def test_fiarse_submodel_applies_mask_and_leaves_global_alone():
    m = small_cnn()
    p = plan("fiarse", m, 0.25)
    sub = p.extract(m)
    assert isinstance(sub, FiarseSubmodel)
    x = torch.randn(2, 3, 6, 6)
    m.eval()
    sub.eval()
    dense = sub.dense()
    assert torch.allclose(sub(x), dense(dense_input := x), atol=1e-6)
    assert not torch.allclose(sub(x), m(x))
    # extract copies: the global model's tensors are not shared
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(sub.model.parameters(), m.parameters()))
    del dense_input


@pytest.mark.parametrize("strategy", plan_names())
def test_plan_bytes_round_trip(strategy):
    m = small_cnn()
    x = torch.randn(2, 3, 6, 6)
    p = plan(strategy, m, 0.3, round=4, example_input=x)
    data = p.to_bytes()
    assert b"pickle" not in data[:8]
    q = SubmodelPlan.from_bytes(data)
    assert type(q) is type(p)
    assert (q.strategy, q.ratio, q.round, q.kept_fraction) == (p.strategy, p.ratio, p.round, p.kept_fraction)
    assert q.signature == p.signature
    assert q.held_shapes() == p.held_shapes()
    assert q.to_bytes() == data
    m.eval()
    a, b = p.extract(m).eval(), q.extract(m).eval()
    assert torch.equal(a(x), b(x))


def test_plan_refuses_other_model_and_bad_bytes():
    m = small_cnn()
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
    x = torch.randn(2, 3, 6, 6)
    for strategy in plan_names():
        p = plan(strategy, m, 0.5, example_input=x)
        with pytest.raises(PlanMismatchError, match="does not match"):
            p.extract(other)
    wider = nn.Sequential(*[mod for mod in small_cnn()])
    wider[8] = nn.Linear(8, 11)
    with pytest.raises(PlanMismatchError, match="8.weight"):
        plan("fiarse", m, 0.5).extract(wider)
    with pytest.raises(SchemaError):
        SubmodelPlan.from_bytes(b"not a plan at all")
    data = bytearray(plan("fiarse", m, 0.5).to_bytes())
    with pytest.raises(SchemaError):
        SubmodelPlan.from_bytes(bytes(data[:40]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fiarse_holds_the_top_magnitudes(dtype):
    m = small_cnn(seed=3).to(dtype)
    with torch.no_grad():  # duplicated values across tensors exercise the tie rule
        m[3].weight[0, :3].copy_(m[0].weight[0])
    names = maskable_names(m)
    params = dict(m.named_parameters())
    for ratio in (0.6, 0.2, 0.08):
        p = plan("fiarse", m, ratio)
        held = torch.cat([params[n].detach().abs().reshape(-1)[p.masks[n].reshape(-1)] for n in names])
        unheld = torch.cat([params[n].detach().abs().reshape(-1)[~p.masks[n].reshape(-1)] for n in names])
        assert held.min() >= unheld.max()
        assert p.thresholds[names[0]] == pytest.approx(float(held.min()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
def test_fiarse_threshold_sampled_band_equals_exact_selection(dtype, kind, caplog):
    """The fast path (sampled band) must give the exact k-th largest, ties and all."""
    caplog.set_level("DEBUG", logger="edge_sdk.submodel.fiarse")
    rng = np.random.default_rng(1)
    sizes = (300_000, 7, 120_000, 0, 1)
    arrays = [np.abs(rng.standard_normal(s)).astype(dtype) for s in sizes]
    if kind == "ties":  # few distinct values: every band boundary is a tie
        arrays = [np.round(a * 4) / 4 for a in arrays]
    elif kind == "zeros":  # most values zero, as in pruned or zero-initialised tensors
        arrays = [np.where(rng.random(a.size) < 0.9, 0, a).astype(dtype) for a in arrays]
    merged = np.sort(np.concatenate(arrays))[::-1]
    n = merged.size
    for k in (1, 2, n // 64, n // 16, n // 4, n // 2, n - 1, n):
        assert _top_masks(arrays, k)[1] == merged[k - 1], (kind, k)
        assert _kth_largest_exact(arrays, k) == merged[k - 1], (kind, k)
        signed = [a * np.where(rng.random(a.size) < 0.5, -1, 1).astype(dtype) for a in arrays]
        masks, tau = _top_masks(signed, k)
        held = np.concatenate([np.abs(v)[m.numpy()] for v, m in zip(signed, masks)])
        unheld = np.concatenate([np.abs(v)[~m.numpy()] for v, m in zip(signed, masks)])
        assert held.size == k and tau == merged[k - 1], (kind, k)
        assert unheld.size == 0 or held.min() >= unheld.max(), (kind, k)
        tied = np.concatenate([m.numpy()[np.abs(v) == tau] for v, m in zip(signed, masks)])
        assert not (~tied[:-1] & tied[1:]).any(), (kind, k)  # ties held in position order
    if kind == "normal":  # distinct values: the band never misses, the fast path answered
        assert "band missed" not in caplog.text
