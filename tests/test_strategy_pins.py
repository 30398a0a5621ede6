"""Behaviour pinned across refactors: a short fixed ``simulate`` run per strategy gives the
per-round numbers recorded before the strategy layer existed (tests/data/simulate_pins.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edge_sdk.simulation import SimulationConfig, run_simulation

PINS = json.loads((Path(__file__).parent / "data" / "simulate_pins.json").read_text())["cases"]
BASE = dict(clients=4, tiers="1,1/4,1/16", rounds=2, local_steps=2, batch_size=16, seed=3)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pins were recorded at one thread (float sums depend on it)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", sorted(PINS))
def test_simulate_numbers_are_unchanged(case, one_thread):
    pin = PINS[case]
    result = run_simulation(SimulationConfig(**{**BASE, **pin["config"]}))
    got = [{"train_loss": r.train_loss, "client_accuracy": r.client_accuracy, "upload_bytes": r.upload_bytes,
            "global_accuracy": r.global_accuracy} for r in result.rounds]
    assert len(got) == len(pin["rounds"])
    for g, p in zip(got, pin["rounds"]):
        assert g["upload_bytes"] == p["upload_bytes"]
        assert g["global_accuracy"] == pytest.approx(p["global_accuracy"], abs=1e-12)
        assert g["train_loss"] == pytest.approx(p["train_loss"], rel=1e-9)
        assert g["client_accuracy"] == pytest.approx(p["client_accuracy"], rel=1e-9)
    assert result.final_average == pytest.approx(pin["final_average"], abs=1e-12)
    assert result.local_accuracy == pytest.approx(pin["local_accuracy"], abs=1e-12)
    assert result.kept_fraction == pytest.approx(pin["kept_fraction"], abs=1e-12)
