"""The run's strategy for the ServerApp: :mod:`edge_sdk.strategies`, built from run settings.

The per-method logic lives in :mod:`edge_sdk.strategies` and is the same object the
simulation drives; this module only supplies what a deployment provides (server-side data
named by the run config, the seeded initial global model).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import InvalidInputError
from edge_sdk.flower.config import RunSettings
from edge_sdk.strategies import Strategy, strategy_class, strategy_names

__all__ = ["make_strategy", "build_global", "strategy_names"]


def make_strategy(settings: RunSettings) -> Strategy:
    """The strategy named by ``settings.strategy`` with its options; raises if unknown, not
    available, or (for a strategy that merges on server data) without ``server-data``."""
    cls = strategy_class(settings.strategy)
    extra = {}
    if cls.uses_server_data:
        from edge_sdk import datasets
        from edge_sdk.flower.config import SERVER_DATA_FORMS
        from edge_sdk.flower.serverdata import load_server_data

        spec = settings.server_data_spec()
        if spec is None:
            forms = SERVER_DATA_FORMS.format(names=", ".join(datasets.names()))
            raise InvalidInputError(f"config server-data is empty; strategy {cls.name!r} needs server-side data "
                                    f"for its merge: expected {forms}")
        extra["server_data"] = load_server_data(spec)
    return settings.make_strategy(**extra)


def build_global(strategy: Strategy, settings: RunSettings, rng: np.random.Generator) -> nn.Module:
    """The initial global model (seeded by the run's seed), checked against the server data
    and prepared by the strategy (e.g. FedRA's adapters, drawn from ``rng``)."""
    from edge_sdk import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = models.create(settings.model, **settings.model_options)
    server_data = getattr(strategy, "server_data", None)
    if strategy.uses_server_data and server_data is not None:
        from edge_sdk.flower.serverdata import check_server_data

        check_server_data(settings.server_data_spec(), server_data.x, model, settings.model)
    strategy.check_model(model, settings.model)
    return strategy.prepare_global(model, rng)
