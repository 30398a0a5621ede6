"""fiarse-structured's exploration share: importance plus rolling / random channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_sdk import models, submodel
from edge_sdk.errors import InvalidInputError
from edge_sdk.strategies import create_strategy
from edge_sdk.strategies._registry import strategy_class
from edge_sdk.submodel import SubmodelPlan
from edge_sdk.submodel.selectors import ExploringImportanceSelector, channel_importance
from edge_sdk.submodel.structured import StructuredPlan, analysis_for, plan_structured

RATIOS = (1 / 4, 1 / 16, 1 / 64)


def _model() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    m = models.create("cnn1d", width=1.0)
    return m, torch.randn(2, *m.config.input_shape)


def _plans(strategy, m, x, ratio, rounds, seed=0):
    rng = np.random.default_rng(seed)
    return [strategy.make_plans(m, {0: ratio, 1: ratio}, round=r, rng=rng, example_input=x) for r in range(rounds)]


@pytest.mark.parametrize("mode", ["rolling", "random"])
@pytest.mark.parametrize("ratio", RATIOS)
def test_holds_the_tiers_budget_and_its_top_channels(mode, ratio):
    m, x = _model()
    imp = channel_importance(m, analysis_for(m, x))
    sel = ExploringImportanceSelector(0.25, mode)
    ref = submodel.plan("fiarse-structured", m, ratio, example_input=x)  # importance alone
    for r in range(3):
        p = plan_structured("fiarse-structured", m, ratio, round=r, example_input=x, rng=np.random.default_rng(r),
                            selector=sel)
        # the same width, so exactly the same parameter count as every structured method
        assert [len(k) for k in p.keep] == [len(k) for k in ref.keep]
        assert p.kept_fraction == ref.kept_fraction and p.width == ref.width
        assert p.strategy == "fiarse-structured"
        for keep, v, size in zip(p.keep, imp, p.leaf_sizes):
            c = len(keep)
            n = sel.explored(c, size, r)
            top = np.argsort(-v, kind="stable")[:c - n]
            assert set(top.tolist()) <= set(keep.tolist())  # the important part is always there
            if c < size and c >= 4:
                assert n == int(0.25 * c + 0.5) and n > 0


@pytest.mark.parametrize("mode", ["rolling", "random"])
def test_every_channel_is_trained_by_the_smallest_tier_over_rounds(mode):
    m, x = _model()
    strat = create_strategy("fiarse-structured", explore=mode, explore_share=0.25, explore_half_life=0,
                            explore_by_width=False)
    seen = None
    for round_plans in _plans(strat, m, x, 1 / 16, 60):
        for p in round_plans.values():  # both clients (random: each draws its own)
            if seen is None:
                seen = [set() for _ in p.leaf_sizes]
            for s, k in zip(seen, p.keep):
                s.update(k.tolist())
    assert [len(s) for s in seen] == p.leaf_sizes
    # importance alone never reaches them (the global model does not change here)
    alone = create_strategy("fiarse-structured", explore="none")
    kept = [set() for _ in p.leaf_sizes]
    for round_plans in _plans(alone, m, x, 1 / 16, 5):
        for s, k in zip(kept, round_plans[0].keep):
            s.update(k.tolist())
    assert any(len(s) < size for s, size in zip(kept, p.leaf_sizes))


def test_rolling_window_advances_and_covers_within_its_period():
    m, x = _model()
    sel = ExploringImportanceSelector(0.5, "rolling")
    an = analysis_for(m, x)
    plans = [plan_structured("fiarse-structured", m, 1 / 16, round=r, example_input=x, selector=sel)
             for r in range(12)]
    for i, size in enumerate(plans[0].leaf_sizes):
        c = len(plans[0].keep[i])
        n = sel.explored(c, size, 0)
        if n == 0:
            continue
        period = -(-(size - c + n) // n)
        covered = set().union(*(p.keep[i].tolist() for p in plans[:period]))
        assert len(covered) == size, (i, period)
        assert not np.array_equal(plans[0].keep[i], plans[1].keep[i])
    assert len(an.leaf_sizes) == len(plans[0].leaf_sizes)


def test_deterministic_for_a_seed_and_random_differs_per_client():
    m, x = _model()
    opts = dict(explore="random", explore_share=0.5, explore_by_width=False)
    a = create_strategy("fiarse-structured", seed=1, **opts)
    b = create_strategy("fiarse-structured", seed=1, **opts)
    pa, pb = _plans(a, m, x, 1 / 16, 3, seed=7), _plans(b, m, x, 1 / 16, 3, seed=7)
    for ra, rb in zip(pa, pb):
        for k in ra:
            assert ra[k].same_as(rb[k]) and ra[k].to_bytes() == rb[k].to_bytes()
    # random: each client draws its own channels; another plan seed draws others
    assert not pa[0][0].same_as(pa[0][1])
    pc = _plans(a, m, x, 1 / 16, 1, seed=8)
    assert not pc[0][0].same_as(pa[0][0])
    # rolling: no randomness, clients of one size share a plan
    r = create_strategy("fiarse-structured", explore="rolling")
    p1, p2 = _plans(r, m, x, 1 / 16, 2, seed=1), _plans(r, m, x, 1 / 16, 2, seed=2)
    assert p1[1][0] is p1[1][1]
    assert all(p1[i][0].same_as(p2[i][0]) for i in range(2))


@pytest.mark.parametrize("mode", ["rolling", "random"])
def test_plan_round_trips_through_bytes(mode):
    m, x = _model()
    strat = create_strategy("fiarse-structured", explore=mode, explore_share=0.25, explore_by_width=False,
                            explore_half_life=0)
    p = _plans(strat, m, x, 1 / 64, 2)[1][0]
    assert not p.same_as(submodel.plan("fiarse-structured", m, 1 / 64, round=1, example_input=x))  # explored
    q = SubmodelPlan.from_bytes(p.to_bytes())
    assert isinstance(q, StructuredPlan) and q.strategy == "fiarse-structured" and q.same_as(p)
    assert q.to_bytes() == p.to_bytes()
    with torch.no_grad():
        assert torch.equal(p.extract(m).eval()(x), q.extract(m).eval()(x))


def test_evaluation_and_full_size_use_importance_alone():
    m, x = _model()
    strat = create_strategy("fiarse-structured", explore="random", explore_share=0.5)
    rng = np.random.default_rng(0)
    for ratio in RATIOS:
        ev = strat.evaluation_plan(m, ratio, round=3, rng=rng, example_input=x)
        assert ev.same_as(submodel.plan("fiarse-structured", m, ratio, round=3, example_input=x))
    full = strat.plan(m, 1.0, round=3, rng=rng, example_input=x)
    assert [len(k) for k in full.keep] == full.leaf_sizes


def test_half_life_and_share_bounds():
    sel = ExploringImportanceSelector(0.5, "rolling", half_life=10)
    assert sel.share(0) == 0.5 and sel.share(10) == pytest.approx(0.25) and sel.share(20) == pytest.approx(0.125)
    assert sel.explored(40, 40, 0) == 0  # a group held whole explores nothing
    assert ExploringImportanceSelector(1.0, "random").explored(8, 32, 0) == 8
    wide = ExploringImportanceSelector(1.0, "rolling", by_width=True)  # share times the kept fraction
    assert wide.explored(48, 96, 0) == 24 and wide.explored(24, 96, 0) == 6 and wide.explored(12, 96, 0) == 2
    for bad in (dict(explore=1.5), dict(explore=-0.1), dict(mode="sideways"), dict(half_life=-1)):
        with pytest.raises(InvalidInputError):
            ExploringImportanceSelector(**{"explore": 0.25, "mode": "rolling", **bad})
    with pytest.raises(InvalidInputError):
        create_strategy("fiarse-structured", explore_share=1.5)
    with pytest.raises(InvalidInputError):
        create_strategy("fiarse-structured", explore="sideways")


def test_options_reach_cli_and_run_config_keys():
    cls = strategy_class("fiarse-structured")
    keys = {o.key for o in cls.options}
    assert {"fiarse-structured-explore", "fiarse-structured-explore-share",
            "fiarse-structured-explore-half-life", "fiarse-structured-explore-by-width"} <= keys
    opts = cls.options_from_config({"fiarse-structured-explore": "random", "fiarse-structured-explore-share": "0.5"})
    assert opts == {"explore": "random", "explore_share": 0.5}
    s = create_strategy("fiarse-structured", **opts)
    assert s.plans_per_client and s.option("explore_share") == 0.5
    assert not create_strategy("fiarse-structured", explore="none").plans_per_client


def test_default_explores_the_width_share_at_random_halving_every_30_rounds():
    m, x = _model()
    strat = create_strategy("fiarse-structured")  # random, share 1 x the kept fraction, half-life 30
    assert strat.option("explore") == "random" and strat.option("explore_by_width") and strat.plans_per_client
    assert strat.option("explore_half_life") == 30.0
    imp = channel_importance(m, analysis_for(m, x))
    for ratio in RATIOS:
        ref = submodel.plan("fiarse-structured", m, ratio, example_input=x)
        for r in (0, 30):  # the share at round 30 is half the first round's
            plans = strat.make_plans(m, {0: ratio, 1: ratio}, round=r, rng=np.random.default_rng(r),
                                     example_input=x)
            explores = False
            for p in plans.values():
                assert [len(k) for k in p.keep] == [len(k) for k in ref.keep]
                for keep, v, size in zip(p.keep, imp, p.leaf_sizes):
                    c = len(keep)
                    n = int(0.5 ** (r / 30) * c * c / size + 0.5) if c < size else 0
                    explores = explores or n > 0
                    assert set(np.argsort(-v, kind="stable")[:c - n].tolist()) <= set(keep.tolist())
            # every client draws its own (unless the groups are too narrow to explore a channel)
            assert plans[0].same_as(plans[1]) != explores
            assert explores or ratio == 1 / 64


def test_plan_structured_refuses_a_selector_that_is_not_one():
    m, x = _model()
    with pytest.raises(InvalidInputError, match="ChannelSelector"):
        plan_structured("fiarse-structured", m, 0.25, example_input=x, selector=object())


def _scaled_copy(m: torch.nn.Module, factor: float, leaf: int, units: np.ndarray) -> torch.nn.Module:
    """``m`` with the weights of ``units`` of channel group ``leaf`` (first conv) scaled."""
    import copy

    out = copy.deepcopy(m)
    with torch.no_grad():
        out.features[0].weight[torch.as_tensor(units)] *= factor
    return out


def test_importance_memory_is_an_exponential_average_updated_once_per_round():
    m, x = _model()
    an = analysis_for(m, x)
    m2 = _scaled_copy(m, 3.0, 0, np.arange(4))
    v0, v1 = channel_importance(m, an), channel_importance(m2, analysis_for(m2, x))
    sel = ExploringImportanceSelector(0.0, "random", memory=0.8)

    def ctx(model, r):
        return _ctx(model, x, [1] * len(v0), r)

    assert all(np.allclose(a, b) for a, b in zip(sel.importance(ctx(m, 0)), v0))  # first round: itself
    want = [0.8 * a + 0.2 * b for a, b in zip(v0, v1)]
    assert all(np.allclose(a, b) for a, b in zip(sel.importance(ctx(m2, 1)), want))
    assert all(np.allclose(a, b) for a, b in zip(sel.importance(ctx(m2, 1)), want))  # same round: unchanged
    plain = ExploringImportanceSelector(0.0, "random")  # memory 0: this round's importance
    assert all(np.array_equal(a, b) for a, b in zip(plain.importance(ctx(m2, 1)), v1))


def test_evaluation_ranks_by_the_remembered_importance():
    m, x = _model()
    strat = create_strategy("fiarse-structured", importance_memory=0.9, explore="none")
    plain = create_strategy("fiarse-structured", explore="none")
    ratio = 1 / 4
    first = strat.evaluation_plan(m, ratio, round=0, rng=np.random.default_rng(0), example_input=x)
    # the next round's model ranks other channels of the first group first: boost the least important ones
    an = analysis_for(m, x)
    v0 = channel_importance(m, an)[0]
    c = len(first.keep[0])
    m2 = _scaled_copy(m, 3.0, 0, np.argsort(v0, kind="stable")[:c])
    v1 = channel_importance(m2, analysis_for(m2, x))[0]
    now = plain.evaluation_plan(m2, ratio, round=1, rng=np.random.default_rng(0), example_input=x)
    remembered = strat.evaluation_plan(m2, ratio, round=1, rng=np.random.default_rng(0), example_input=x)
    assert np.array_equal(now.keep[0], np.sort(np.argsort(-v1, kind="stable")[:c]))
    assert np.array_equal(remembered.keep[0], np.sort(np.argsort(-(0.9 * v0 + 0.1 * v1), kind="stable")[:c]))
    assert not np.array_equal(now.keep[0], remembered.keep[0])  # the memory changes the ranking
    assert len(set(remembered.keep[0]) & set(first.keep[0])) > len(set(now.keep[0]) & set(first.keep[0]))
    with pytest.raises(InvalidInputError, match="importance_memory"):
        create_strategy("fiarse-structured", importance_memory=1.0)


def _ctx(model, x, counts, r):
    from edge_sdk.submodel.selectors import SelectionContext

    an = analysis_for(model, x)
    return SelectionContext(model=model, analysis=an, counts=counts, leaf_sizes=list(an.leaf_sizes), round=r,
                            rng=np.random.default_rng(0))


def test_rank_hysteresis_keeps_a_kept_channel_until_a_challenger_is_1_plus_h_times_as_important():
    m, x = _model()
    v0 = channel_importance(m, analysis_for(m, x))[0]
    counts = [max(1, len(v) // 4) for v in channel_importance(m, analysis_for(m, x))]
    c = counts[0]
    order = np.argsort(-v0, kind="stable")
    kept, challenger = order[c - 1], order[c]  # the last kept unit and the first one left out
    sel = ExploringImportanceSelector(0.0, "random", hysteresis=0.5)
    first = sel.select(_ctx(m, x, counts, 0))[0]
    assert kept in first and challenger not in first

    def challenger_at(times: float) -> torch.nn.Module:
        """``m`` with the challenger ``times`` as important as the last kept unit (its first conv scaled)."""
        rest = channel_importance(_scaled_copy(m, 0.0, 0, np.array([challenger])), analysis_for(m, x))[0][challenger]
        factor = np.sqrt((times * v0[kept] - rest) / (v0[challenger] - rest))
        out = _scaled_copy(m, float(factor), 0, np.array([challenger]))
        assert np.isclose(channel_importance(out, analysis_for(out, x))[0][challenger], times * v0[kept])
        return out

    # the next round the challenger is 1.4 x as important as the last kept unit: it stays out
    m2 = challenger_at(1.4)
    assert np.array_equal(sel.select(_ctx(m2, x, counts, 1))[0], first)
    assert np.array_equal(sel.select(_ctx(m2, x, counts, 1))[0], first)  # once per round: the same
    plain = ExploringImportanceSelector(0.0, "random")  # h = 0 ranks afresh: the challenger is in
    assert challenger in plain.select(_ctx(m2, x, counts, 1))[0]
    # at 1.6 x it takes the place
    now = sel.select(_ctx(challenger_at(1.6), x, counts, 2))[0]
    assert challenger in now and kept not in now and len(now) == c
    with pytest.raises(InvalidInputError, match="hysteresis"):
        ExploringImportanceSelector(0.0, "random", hysteresis=-1.0)
    with pytest.raises(InvalidInputError, match="rank_hysteresis"):
        create_strategy("fiarse-structured", rank_hysteresis=-0.5)


def test_rank_hysteresis_is_kept_per_size_and_used_by_evaluation():
    m, x = _model()
    strat = create_strategy("fiarse-structured", explore="none", rank_hysteresis=100.0)
    plain = create_strategy("fiarse-structured", explore="none")
    rng = np.random.default_rng(0)
    first = {r: strat.plan(m, r, round=0, rng=rng, example_input=x) for r in RATIOS}
    # the next model ranks the least important channels of the first group first
    v0 = channel_importance(m, analysis_for(m, x))[0]
    m2 = _scaled_copy(m, 3.0, 0, np.argsort(v0, kind="stable")[:len(v0) // 2])
    for r in RATIOS:
        frozen = strat.evaluation_plan(m2, r, round=0, rng=rng, example_input=x)
        assert [k.tolist() for k in frozen.keep] == [k.tolist() for k in first[r].keep]  # every size frozen
        assert strat.plan(m2, r, round=1, rng=rng, example_input=x).keep[0].tolist() == frozen.keep[0].tolist()
        moved = plain.evaluation_plan(m2, r, round=0, rng=rng, example_input=x)
        assert moved.keep[0].tolist() != frozen.keep[0].tolist()


def test_evaluation_after_a_round_ranks_the_merged_model_as_the_next_round_will():
    # with memory, the model evaluated after round r is the one round r + 1 plans from: its own
    # importance is part of the ranking, and the next round's plan does not count it twice
    m, x = _model()
    v0 = channel_importance(m, analysis_for(m, x))[0]
    m2 = _scaled_copy(m, 3.0, 0, np.argsort(v0, kind="stable")[:4])
    v1 = channel_importance(m2, analysis_for(m2, x))[0]
    strat = create_strategy("fiarse-structured", importance_memory=0.5, explore="none")
    rng = np.random.default_rng(0)
    trained = strat.plan(m, 1 / 4, round=0, rng=rng, example_input=x)  # round 0 plans from m
    c = len(trained.keep[0])
    evaluated = strat.evaluation_plan(m2, 1 / 4, round=0, rng=rng, example_input=x)  # m2: after round 0
    want = np.sort(np.argsort(-(0.5 * v0 + 0.5 * v1), kind="stable")[:c])
    assert np.array_equal(evaluated.keep[0], want)
    assert np.array_equal(strat.plan(m2, 1 / 4, round=1, rng=rng, example_input=x).keep[0], want)
