"""aggregate(): per-element rules against hand-computed values, refusals, scatter-back."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edge_sdk.aggregation import aggregate, rule_names
from edge_sdk.errors import UnknownNameError, UpdateRejectedError
from edge_sdk.submodel import plan
from edge_sdk.training import Update, train_local


def tiny_linear() -> nn.Module:
    m = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[4.0, -3.0], [2.0, 1.0]]))
    return m


def test_rules_listed():
    assert {"fiarse", "fiarse-structured", "heterofl", "fedrolex", "fedra", "fedavg", "fedtsa"} <= set(rule_names())
    with pytest.raises(UnknownNameError, match="fedavg"):
        aggregate(tiny_linear(), [], "fedtsa-not-yet")


def test_fiarse_hand_computed():
    g = tiny_linear()
    half = plan("fiarse", g, 0.5)  # holds |4| and |-3|: row 0
    full = plan("fiarse", g, 1.0)
    a = Update("fiarse", half, {"0.weight": torch.tensor([10.0, 20.0])}, num_samples=10)
    b = Update("fiarse", full, {"0.weight": torch.tensor([30.0, 40.0, 50.0, 60.0])}, num_samples=30)
    aggregate(g, [a, b], "fiarse")
    expected = torch.tensor([[(10 * 10 + 30 * 30) / 40, (10 * 20 + 30 * 40) / 40], [50.0, 60.0]])
    assert torch.allclose(g[0].weight, expected)
    # elements nobody holds stay as they were
    g2 = tiny_linear()
    aggregate(g2, [a], "fiarse")
    assert torch.allclose(g2[0].weight.data, torch.tensor([[10.0, 20.0], [2.0, 1.0]]))


def test_structured_hand_computed():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    orig = copy.deepcopy(g)
    x = torch.randn(2, 4)
    small = plan("heterofl", g, 0.4, example_input=x)  # 7k+2 of 23 params: k = 1 hidden unit
    assert small.keep[0].tolist() == [0]
    assert small.kept_fraction == pytest.approx(9 / 23)
    big = plan("heterofl", g, 1.0, example_input=x)
    ua = {"0.weight": torch.full((1, 4), 1.0), "0.bias": torch.full((1,), 2.0),
          "2.weight": torch.full((2, 1), 3.0), "2.bias": torch.full((2,), 4.0)}
    ub = {"0.weight": torch.full((3, 4), 5.0), "0.bias": torch.full((3,), 6.0),
          "2.weight": torch.full((2, 3), 7.0), "2.bias": torch.full((2,), 8.0)}
    aggregate(g, [Update("heterofl", small, ua, 1), Update("heterofl", big, ub, 3)], "heterofl")
    w0 = torch.full((3, 4), 5.0)
    w0[0] = (1 * 1 + 3 * 5) / 4
    assert torch.allclose(g[0].weight.data, w0)
    assert g[0].bias.tolist() == pytest.approx([(2 + 18) / 4, 6.0, 6.0])
    w2 = torch.full((2, 3), 7.0)
    w2[:, 0] = (3 + 21) / 4
    assert torch.allclose(g[2].weight.data, w2)
    assert g[2].bias.tolist() == pytest.approx([(4 + 24) / 4] * 2)
    # only the small client: hidden units 1, 2 and their columns keep their values
    g = copy.deepcopy(orig)
    aggregate(g, [Update("heterofl", small, ua, 1)], "heterofl")
    assert torch.equal(g[0].weight[1:], orig[0].weight[1:]) and torch.equal(g[2].weight[:, 1:], orig[2].weight[:, 1:])


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


X = torch.randn(2, 3, 6, 6)


@pytest.mark.parametrize("strategy", ["fiarse", "fiarse-structured", "heterofl", "fedrolex"])
def test_extract_then_scatter_back_is_identity(strategy):
    g = cnn()
    ref = copy.deepcopy(g.state_dict())
    updates = []
    for r in (1 / 4, 1 / 2, 1.0):
        p = plan(strategy, g, r, round=2, example_input=X)
        sub = p.extract(g)
        updates.append(Update(strategy, p, p.collect(sub), num_samples=5))
    aggregate(g, updates, strategy)
    for name, t in g.state_dict().items():
        assert torch.equal(t, ref[name]), name


def _trained(strategy, g, ratio=0.5):
    p = plan(strategy, g, ratio, example_input=X)
    data = [(torch.randn(4, 3, 6, 6), torch.randint(0, 4, (4,)))]
    return train_local(p.extract(g), data, p, steps=1, lr=0.01)


@pytest.mark.parametrize("strategy", ["fiarse", "heterofl"])
def test_bad_updates_refused_global_untouched(strategy):
    g = cnn()
    ref = copy.deepcopy(g.state_dict())
    good = _trained(strategy, g)

    def refused(updates, match):
        with pytest.raises(UpdateRejectedError, match=match):
            aggregate(g, updates, strategy)
        for name, t in g.state_dict().items():
            assert torch.equal(t, ref[name]), name

    nan = copy.copy(good)
    nan.tensors = dict(good.tensors)
    key = next(k for k in nan.tensors if k.endswith("weight"))
    bad_t = nan.tensors[key].clone()
    bad_t.view(-1)[0] = float("nan")
    nan.tensors[key] = bad_t
    refused([good, nan], "NaN")
    inf = copy.copy(nan)
    inf.tensors = dict(nan.tensors)
    inf.tensors[key] = bad_t.nan_to_num(nan=float("inf"))
    refused([inf], "NaN or Inf")
    shape = copy.copy(good)
    shape.tensors = dict(good.tensors)
    shape.tensors[key] = torch.zeros(3)
    refused([good, shape], "shape")
    missing = copy.copy(good)
    missing.tensors = {k: v for k, v in good.tensors.items() if k != key}
    refused([missing], "missing")
    other = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(288, 4))
    foreign = _trained(strategy, other)
    refused([good, foreign], "does not match")
    wrong_rule = _trained("fedrolex" if strategy != "fedrolex" else "heterofl", g)
    refused([good, wrong_rule], "accepts updates of")
    zero = copy.copy(good)
    zero.num_samples = 0
    refused([zero], "num_samples")
    refused([], "non-empty")
    aggregate(g, [good], strategy)  # the good one alone is accepted
    assert not all(torch.equal(t, ref[n]) for n, t in g.state_dict().items())


def test_fedavg_weighted_mean():
    g = tiny_linear()
    a = Update("fedavg", None, {"0.weight": torch.zeros(2, 2)}, 1)
    b = Update("fedavg", None, {"0.weight": torch.full((2, 2), 4.0)}, 3)
    aggregate(g, [a, b], "fedavg")
    assert torch.allclose(g[0].weight.data, torch.full((2, 2), 3.0))
    with pytest.raises(UpdateRejectedError):
        aggregate(g, [Update("fedavg", None, {"0.weight": torch.zeros(3)}, 1)], "fedavg")
    assert torch.equal(g[0].weight.data, torch.full((2, 2), 3.0))
