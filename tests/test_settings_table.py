"""The shared federation settings are declared once (edge_sdk.settings) and read by both
drivers: every one reaches a SimulationConfig from its `edge-sdk simulate` flag and a
RunSettings from its Flower run-config key."""

from __future__ import annotations

import argparse

import pytest

from edge_sdk.errors import InvalidInputError
from edge_sdk.flower.config import RunSettings
from edge_sdk.settings import FederationSettings, settings_of

# a valid value other than the default, for the settings whose values are names
OTHER_NAMES = {"strategy": "heterofl", "model": "resnet8", "dataset": "digits", "robust": "median",
               "sample_weights": "equal", "dp_mode": "client"}


def _other(f, info):
    if info.kind is str:
        return OTHER_NAMES[f.name]
    if info.kind is int:
        return f.default + 3
    if f.name == "momentum":
        return 0.5
    return 0.25 if f.default is None else f.default + 0.25


SHARED = settings_of(FederationSettings)


def test_every_shared_setting_is_declared():
    names = {f.name for f, _ in SHARED}
    assert {"rounds", "local_steps", "lr", "momentum", "weight_decay", "seed", "robust", "dp_clip"} <= names
    assert set(OTHER_NAMES) == {f.name for f, info in SHARED if info.kind is str}


@pytest.mark.parametrize("f,info", SHARED, ids=[f.name for f, _ in SHARED])
def test_every_shared_setting_reaches_simulate_and_flower(f, info):
    from edge_sdk.cli import simulate_cmd

    value = _other(f, info)
    parser = argparse.ArgumentParser()
    simulate_cmd.register(parser.add_subparsers())
    extra = ["--dp-clip", "1.0"] if f.name == "dp_noise" else []
    args = parser.parse_args(["simulate", f"--{info.key(f)}", str(value), *extra])
    assert getattr(simulate_cmd.build_config(args), f.name) == value
    cfg = {info.key(f): value, **({"dp-clip": 1.0} if f.name == "dp_noise" else {})}
    assert getattr(RunSettings.from_config(cfg), f.name) == value
    # and its default is the one declared, in both drivers
    assert getattr(simulate_cmd.build_config(parser.parse_args(["simulate"])), f.name) == f.default
    if f.name != "rounds":  # the Flower app runs 3 rounds by default
        assert getattr(RunSettings.from_config({}), f.name) == f.default


@pytest.mark.parametrize("key", [info.key(f) for f, info in settings_of(RunSettings) if info.minimum is not None])
def test_a_config_value_below_its_minimum_names_the_key(key):
    with pytest.raises(InvalidInputError, match=f"config {key}=-1"):
        RunSettings.from_config({key: -1})


def test_flower_rounds_default_is_its_own_and_dp_clip_zero_is_off():
    assert RunSettings().rounds == 3 and FederationSettings().rounds == 20
    assert RunSettings.from_config({"dp-clip": 0}).dp_clip is None
