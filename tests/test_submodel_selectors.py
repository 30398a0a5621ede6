"""Channel selectors: every registered selector on every reference model, and the registry itself.

Parametrized over ``selector_names()`` and ``models.names()``: a new selector or model is
tested here with no edit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_sdk import models
from edge_sdk.errors import InvalidInputError, UnknownNameError
from edge_sdk.submodel import ChannelSelector, SubmodelPlan, plan, plan_names, register_selector, selector_names
from edge_sdk.submodel import selectors
from edge_sdk.submodel.selectors import get_selector
from edge_sdk.submodel.structured import STRUCTURED_STRATEGIES, StructuredPlan
from submodel_helpers import check_equivalent

RATIOS = (1.0, 1 / 4, 1 / 16, 1 / 64)


def _small(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create(name, width=0.25, depth=min(2, models.spec(name).default_depth))


def _check_keep(p: StructuredPlan) -> None:
    assert len(p.keep) == len(p.leaf_sizes)
    for k, size in zip(p.keep, p.leaf_sizes):
        assert k.dtype == np.int64 and 1 <= len(k) <= size
        assert np.all(np.diff(k) > 0) and k[0] >= 0 and k[-1] < size  # sorted, distinct, in range
    if p.ratio == 1.0:
        assert [len(k) for k in p.keep] == p.leaf_sizes


def _check_round_trip(p: StructuredPlan, m: torch.nn.Module, x: torch.Tensor) -> None:
    q = SubmodelPlan.from_bytes(p.to_bytes())
    assert isinstance(q, StructuredPlan) and q.strategy == p.strategy and q.same_as(p)
    assert q.to_bytes() == p.to_bytes()
    assert all(np.array_equal(a, b) for a, b in zip(p.keep, q.keep))
    with torch.no_grad():
        assert torch.equal(p.extract(m).eval()(x), q.extract(m).eval()(x))


def _layer_norm_sliced(m: torch.nn.Module, p: StructuredPlan) -> bool:
    return any(isinstance(mod, torch.nn.LayerNorm) and any(i is not None for i in p.index_map[f"{n}.weight"])
               for n, mod in m.named_modules())


@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("strategy", selector_names())
def test_every_selector_on_every_reference_model(strategy, name):
    m = _small(name)
    x = torch.randn(2, *models.spec(name).input_shape)
    counts = None
    for ratio in RATIOS:
        p = plan(strategy, m, ratio, round=3, example_input=x)
        sub = p.extract(m)
        state = m.state_dict()
        for n, t in sub.state_dict().items():  # the submodel holds exactly the kept slices
            assert torch.equal(t, p.gather(n, state[n])), n
        if not _layer_norm_sliced(m, p):
            # submodel == global model with unheld channels zeroed; not under a LayerNorm over
            # pruned channels, whose mean and variance then run over fewer channels
            check_equivalent(m, x, ratio, strategy, round=3)
        _check_keep(p)
        _check_round_trip(p, m, x)
        # every selector gets the same counts (the width search does not depend on it)
        same = plan("heterofl", m, ratio, round=3, example_input=x)
        assert [len(k) for k in p.keep] == [len(k) for k in same.keep]
        # smaller ratios keep no more units
        if counts is not None:
            assert all(len(k) <= c for k, c in zip(p.keep, counts))
        counts = [len(k) for k in p.keep]


# ---- the registry --------------------------------------------------------------------------------

def test_builtin_selectors_are_plan_strategies():
    assert selector_names()[:3] == ("fiarse-structured", "heterofl", "fedrolex")
    assert plan_names() == ("fiarse", *selector_names())
    assert set(selector_names()) == set(STRUCTURED_STRATEGIES)
    for name in selector_names():
        assert get_selector(name).name == name
    with pytest.raises(UnknownNameError, match="heterofl"):
        get_selector("nope")


def test_registration_refuses_duplicates_and_non_selectors():
    with pytest.raises(InvalidInputError, match="already registered"):
        register_selector("heterofl")(type("Again", (ChannelSelector,), {"select": lambda self, ctx: []}))
    with pytest.raises(InvalidInputError, match="ChannelSelector"):
        register_selector("not-a-selector")(object)
    for bad in ("", "fiarse", 3, "Upper", "x" * 65, "-lead", "a b"):
        with pytest.raises(InvalidInputError):
            register_selector(bad)
    assert "not-a-selector" not in selector_names()


@pytest.fixture
def random_selector():
    @register_selector("test-random")
    class RandomSelector(ChannelSelector):
        def select(self, ctx):
            return [np.sort(ctx.rng.choice(s, c, replace=False)) for c, s in zip(ctx.counts, ctx.leaf_sizes)]

    yield RandomSelector
    del selectors._SELECTORS["test-random"]


def test_a_selector_registered_later_is_a_plan_strategy(random_selector):
    m = _small("resnet8")
    x = torch.randn(2, 3, 32, 32)
    assert "test-random" in plan_names() and "test-random" in STRUCTURED_STRATEGIES
    a = plan("test-random", m, 0.25, round=2, example_input=x, rng=7)
    b = plan("test-random", m, 0.25, round=2, example_input=x, rng=np.random.default_rng(7))
    c = plan("test-random", m, 0.25, round=2, example_input=x)  # seeded by the round
    d = plan("test-random", m, 0.25, round=2, example_input=x)
    assert a.same_as(b) and c.same_as(d) and not a.same_as(c)
    _check_keep(a)
    with pytest.raises(InvalidInputError, match="rng"):
        plan("test-random", m, 0.25, example_input=x, rng="seven")


def test_plan_of_a_selector_not_registered_here_still_decodes(random_selector):
    m = _small("resnet8")
    x = torch.randn(2, 3, 32, 32)
    data = plan("test-random", m, 0.25, example_input=x, rng=1).to_bytes()
    del selectors._SELECTORS["test-random"]  # as in another process that never imported it
    try:
        q = SubmodelPlan.from_bytes(data)
        assert isinstance(q, StructuredPlan) and q.strategy == "test-random"
        assert q.extract(m)(x).shape == (2, 10)
    finally:
        selectors._SELECTORS["test-random"] = random_selector()


def test_a_selector_returning_bad_indices_is_refused():
    @register_selector("test-bad")
    class Bad(ChannelSelector):
        def select(self, ctx):
            return [np.arange(c)[::-1] for c in ctx.counts]  # not sorted

    try:
        with pytest.raises(InvalidInputError, match="sorted distinct"):
            plan("test-bad", _small("resnet8"), 0.25, example_input=torch.randn(2, 3, 32, 32))
    finally:
        del selectors._SELECTORS["test-bad"]


def test_importance_is_computed_only_when_asked(monkeypatch):
    def boom(*a):
        raise AssertionError("importance computed")

    monkeypatch.setattr(selectors, "channel_importance", boom)
    m = _small("cnn1d")
    plan("heterofl", m, 0.25, example_input=torch.randn(2, 1, 40))
    with pytest.raises(AssertionError, match="importance computed"):
        plan("fiarse-structured", m, 0.25, example_input=torch.randn(2, 1, 40))
