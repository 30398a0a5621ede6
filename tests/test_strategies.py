"""The strategy layer: one registered object per method, driven alike by every driver.

Tests iterate over the registry, so a new strategy is tested here with no test edit."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_sdk import models
from edge_sdk.errors import InvalidInputError, UnknownNameError
from edge_sdk.simulation import SimulationConfig, run_simulation
from edge_sdk.strategies import (
    Option,
    Strategy,
    create_strategy,
    kept_fraction,
    register_strategy,
    strategy_class,
    strategy_names,
)
from edge_sdk.strategies import _registry
from edge_sdk.strategies.heterofl import HeteroFL

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(clients=4, tiers="1,1/4", rounds=2, local_steps=2, batch_size=16, alpha=1.0)


def _sim_config(name: str, **over) -> SimulationConfig:
    cfg = dict(TINY, strategy=name, model_options={"width": 0.5})
    if strategy_class(name).model_problem(models.create("cnn1d")) is not None:
        cfg.update(dataset="digits", model="mixer_tiny", model_options={"width": 0.25, "depth": 4})
    if strategy_class(name).uses_server_data:
        cfg["server_data"] = "proxy"
    cfg.update(over)
    return SimulationConfig(**cfg)


@pytest.mark.parametrize("name", strategy_names(available_only=True))
def test_every_registered_strategy_simulates(name):
    result = run_simulation(_sim_config(name))
    assert [r.round for r in result.rounds] == [1, 2]
    assert all(np.isfinite(r.train_loss) for r in result.rounds)
    assert set(result.final) == {"1", "1/4"} and all(0 <= a <= 1 for a in result.final.values())
    assert 0 < result.kept_fraction["1/4"] <= result.kept_fraction["1"] <= 1


@pytest.mark.parametrize("name", strategy_names())
def test_every_option_parses_its_default_and_refuses_junk(name):
    cls = strategy_class(name)
    assert cls.name == name and issubclass(cls, Strategy) and cls.summary
    for option in cls.options:
        assert option.key and " " not in option.key
        assert option.parse(option.default, option.key) == option.default
        assert option.parse(str(option.default), option.key) == option.default  # as text from a CLI or config
        with pytest.raises(InvalidInputError, match=option.key):
            option.parse([], option.key)
    with pytest.raises(InvalidInputError, match="unknown option"):
        cls.check_options({"no_such_option": 1})


@pytest.mark.parametrize("name", strategy_names(available_only=True))
def test_plans_share_per_size_unless_per_client(name):
    case = _sim_config(name)
    model = models.create(case.model, **case.model_options, **({"in_channels": 1, "img_size": 8}
                                                                if case.model == "mixer_tiny" else {}))
    strategy = create_strategy(name, seed=0, **({"server_data": None} if strategy_class(name).uses_server_data else {}))
    model = strategy.prepare_global(model, np.random.default_rng(0))
    plans = strategy.make_plans(model, {1: 0.25, 2: 0.25, 3: 1.0}, round=1, rng=np.random.default_rng(0))
    assert sorted(plans) == [1, 2, 3]
    if strategy.plan_name is None:
        assert all(p is None for p in plans.values())
    elif strategy.plans_per_client:
        assert plans[1] is not plans[2]
    else:
        assert plans[1] is plans[2] and plans[1] is not plans[3]
    assert kept_fraction(plans[1]) <= kept_fraction(plans[3])


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


@pytest.mark.parametrize("module", ["edge_sdk/simulation.py", "edge_sdk/flower/server.py"])
def test_drivers_name_no_strategy(module):
    """The drivers hold no per-method logic: not one strategy name appears in them."""
    named = _string_constants(ROOT / module) & set(strategy_names())
    assert not named, f"{module} names strategies {sorted(named)}"


def test_a_new_strategy_is_one_class_and_its_registration(monkeypatch):
    monkeypatch.setattr(_registry, "_STRATEGIES", dict(_registry._STRATEGIES))

    @register_strategy
    class Widest(HeteroFL):
        """HeteroFL whose clients all train at least half the model (a user's variant)."""

        name = "widest-test"
        summary = "test strategy"
        options = (Option("floor", float, 0.5, "smallest size", positive=True),)

        def sizes(self, ratios):
            return {k: max(float(r), self.option("floor")) for k, r in ratios.items()}

    assert "widest-test" in strategy_names()
    assert strategy_class("widest-test").options[0].key == "widest-test-floor"
    result = run_simulation(SimulationConfig(**TINY, strategy="widest-test", strategy_options={"floor": 0.5},
                                             model_options={"width": 0.5}))
    assert all(np.isfinite(r.train_loss) for r in result.rounds)
    with pytest.raises(InvalidInputError, match="already registered"):
        @register_strategy
        class Clash(HeteroFL):
            name = "widest-test"


def test_unknown_and_unavailable_strategies_are_typed_errors(monkeypatch):
    with pytest.raises(UnknownNameError, match="known: .*heterofl"):
        create_strategy("fedmagic")
    monkeypatch.setattr(HeteroFL, "requires_modules", ("edge_sdk_module_that_is_not_there",))
    from edge_sdk.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="heterofl.*not installed"):
        create_strategy("heterofl")


def test_feddropout_draws_random_channels_per_client_and_round():
    model = models.create("cnn1d", width=0.5)
    s = create_strategy("feddropout")
    hetero = create_strategy("heterofl").plan(model, 0.25, round=0, rng=np.random.default_rng(0))
    a = s.make_plans(model, {1: 0.25, 2: 0.25}, round=0, rng=np.random.default_rng(0))
    b = s.make_plans(model, {1: 0.25}, round=1, rng=np.random.default_rng(1))
    assert [len(k) for k in a[1].keep] == [len(k) for k in hetero.keep]  # the same size as HeteroFL's
    assert a[1].kept_fraction == pytest.approx(hetero.kept_fraction)
    assert any(not np.array_equal(x, y) for x, y in zip(a[1].keep, a[2].keep))  # per client
    assert any(not np.array_equal(x, y) for x, y in zip(a[1].keep, b[1].keep))  # per round
    assert all(np.all(np.diff(k) > 0) for k in a[1].keep)  # sorted, no repeats
    # the extracted submodel is the global model's kept channels
    sub = s.extract(a[1], model)
    x = torch.randn(4, 1, 40)
    assert sub(x).shape == (4, 10)
