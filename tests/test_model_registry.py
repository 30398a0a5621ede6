"""The model registry from a user's side: a model registered from outside the package is
built by ``create`` and passes the same checks as the built-in models."""

from __future__ import annotations

import pytest
import torch
from test_analytic_flops import check_count_flops_equals_analytic, check_flop_counter_equals_analytic
from test_models import (
    check_config_round_trip,
    check_forward_shape,
    check_fx_traceable,
    check_spec_matches_config,
    check_unknown_option_refused,
)
from torch import nn

from edge_sdk import models
from edge_sdk.errors import InvalidInputError, UnknownNameError
from edge_sdk.models import ModelConfig, check_positive_int, scaled
from edge_sdk.models.analytic import Term, analytic_flops, formula_names, linear_term
from edge_sdk.profiler import count_flops

torch.set_num_threads(1)

NAME = "test_tiny_mlp"


class TinyMLP(nn.Module):
    """``depth`` x (Linear + ReLU) at ``hidden`` units, then a Linear head."""

    def __init__(self, features: int, hidden: int, depth: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(features if i == 0 else hidden, hidden), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _check(name: str, o: dict) -> dict:
    return {"features": check_positive_int(name, "features", o["features"])}


def _flops(cfg: ModelConfig, b: int) -> list[Term]:
    hidden = scaled(32, cfg.width)
    (n_in,) = cfg.input_shape
    terms = []
    for i in range(cfg.depth):
        terms.append(linear_term(f"body.{2 * i}", b, n_in, hidden, first=i == 0))
        n_in = hidden
    return terms + [linear_term("head", b, hidden, cfg.num_classes)]


def _build(cfg: ModelConfig) -> TinyMLP:
    return TinyMLP(cfg.options["features"], scaled(32, cfg.width), cfg.depth, cfg.num_classes)


def _register(name: str = NAME, **kw):
    args = {
        "description": "test-only MLP",
        "default_depth": 2,
        "defaults": {"features": 12},
        "input_shape": lambda o: (o["features"],),
        "check": _check,
        "flops": _flops,
    }
    return models.register_model(name, **{**args, **kw})(_build)


@pytest.fixture
def tiny_mlp():
    _register()
    yield NAME
    models.unregister_model(NAME)
    assert NAME not in models.names()


def test_user_model_is_listed_and_created(tiny_mlp):
    assert tiny_mlp in models.names() and tiny_mlp in formula_names()
    s = models.spec(tiny_mlp)
    assert (s.input_shape, s.num_classes, s.default_depth) == ((12,), 10, 2)
    m = models.create(tiny_mlp, features=5, num_classes=3)
    assert isinstance(m, TinyMLP) and m.config.input_shape == (5,)
    assert m(torch.randn(4, 5)).shape == (4, 3)
    assert models.create_at_ratio(tiny_mlp, 0.25).config.width == pytest.approx(0.5)


def test_user_model_passes_the_generic_checks(tiny_mlp):
    check_spec_matches_config(tiny_mlp)
    for width in (1.0, 0.25):
        check_forward_shape(tiny_mlp, width)
    check_fx_traceable(tiny_mlp)
    check_config_round_trip(tiny_mlp)
    check_unknown_option_refused(tiny_mlp)
    for backward in (False, True):
        for mode in ("train", "no_grad_eval"):
            check_count_flops_equals_analytic(tiny_mlp, 0.5, mode, backward)
    check_flop_counter_equals_analytic(tiny_mlp, 1.0)


def test_user_model_options_are_checked(tiny_mlp):
    with pytest.raises(InvalidInputError, match="features=0 is not accepted"):
        models.create(tiny_mlp, features=0)
    with pytest.raises(InvalidInputError, match="accepted: width, depth, num_classes, features"):
        models.create(tiny_mlp, heads=2)


def test_duplicate_name_is_refused(tiny_mlp):
    with pytest.raises(InvalidInputError, match=f"'{NAME}' is already registered"):
        _register()
    with pytest.raises(InvalidInputError, match="'resnet8' is already registered"):
        _register("resnet8")
    assert models.spec("resnet8").default_depth == 1  # the built-in entry is untouched


def test_model_without_formula_works_but_has_no_analytic_flops():
    _register(flops=None)
    try:
        assert NAME in models.names() and NAME not in formula_names()
        m = models.create(NAME)
        x = torch.randn(2, 12)
        assert count_flops(m, x) == 2 * 2 * (12 * 32 + 32 * 32 + 32 * 10)
        with pytest.raises(InvalidInputError, match="registers no FLOP formula; count it with"):
            analytic_flops(m, 2)
    finally:
        models.unregister_model(NAME)


def test_bad_registrations_are_refused():
    with pytest.raises(InvalidInputError, match="features=-1 is not accepted"):
        _register(defaults={"features": -1})  # defaults are checked at registration
    with pytest.raises(InvalidInputError, match="name=''"):
        _register("")
    with pytest.raises(InvalidInputError, match="default_depth"):
        _register(default_depth=0)
    assert NAME not in models.names()
    with pytest.raises(UnknownNameError, match="valid names"):
        models.unregister_model(NAME)


def test_model_without_check_takes_options_as_given():
    _register(check=None)
    try:
        assert models.create(NAME, features=7).config.options == {"features": 7}
    finally:
        models.unregister_model(NAME)
