"""What a federated run trains: the settings simulation and Flower share.

:class:`FederationSettings` holds the fields every driver has (the strategy and its
options, the model, the data set, rounds, the clients' local training, the seed);
:class:`edge_sdk.simulation.SimulationConfig` and :class:`edge_sdk.flower.config.RunSettings`
extend it with what only they need (the simulated fleet; timeouts and nodes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edge_sdk.errors import InvalidInputError

__all__ = ["FederationSettings", "check_int", "check_positive"]

# bounds that refuse a run that could never finish or fit in memory before it starts
MAX_ROUNDS = 100_000
MAX_STEPS = 1_000_000
MAX_BATCH = 1_000_000


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum \
            or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise InvalidInputError(f"{name}={str(value)[:40]} is not accepted; expected an integer {bound}")


def check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name}={value!r} is not accepted; expected a finite number > 0")


@dataclass
class FederationSettings:
    """``strategy_options`` are the strategy's constructor options by Python name
    (``{"gradient": "hard"}`` for fiarse; see ``strategy_class(name).options``)."""

    strategy: str = "fiarse"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    model: str = "cnn1d"
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist1d"
    rounds: int = 20
    local_steps: int = 10
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    # the merge path (edge_sdk.aggregation.robust_merge.MergeSettings): a registered merge
    # rule spec, the sample-count policy, per-tier outlier thresholds (None: the rule's
    # default), and client-level DP (dp_clip None: off)
    robust: str = "none"
    sample_weights: str = "auto"
    outlier_norm: float | None = None
    outlier_cosine: float | None = None
    dp_clip: float | None = None
    dp_noise: float = 0.0
    dp_delta: float = 1e-5
    dp_mode: str = "server"

    def train_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`edge_sdk.training.train_local` (without the strategy's)."""
        return {"steps": self.local_steps, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay}

    def merge_settings(self, *, reproducible_noise: bool = False) -> Any:
        """The strategy's :class:`~edge_sdk.aggregation.robust_merge.MergeSettings` (checked).
        ``reproducible_noise``: DP noise seeded by the run's seed (simulation only)."""
        from edge_sdk.aggregation.robust_merge import MergeSettings
        from edge_sdk.privacy import DPSettings

        dp = None
        if self.dp_clip is not None:
            dp = DPSettings(clip=self.dp_clip, noise=self.dp_noise, delta=self.dp_delta, mode=self.dp_mode,
                            reproducible=reproducible_noise)
        elif self.dp_noise:
            raise InvalidInputError(f"dp-noise={self.dp_noise!r} needs dp-clip (the bound the noise is scaled to)")
        return MergeSettings(rule=self.robust, sample_weights=self.sample_weights, outlier_norm=self.outlier_norm,
                             outlier_cosine=self.outlier_cosine, dp=dp)

    def check_federation(self) -> None:
        """Check the shared fields (names, ranges, the strategy's options, the merge path)."""
        from edge_sdk import models
        from edge_sdk.strategies import strategy_class

        strategy_class(self.strategy).check_options(self.strategy_options)
        self.merge_settings()
        if self.model not in models.names():
            from edge_sdk.errors import UnknownNameError

            raise UnknownNameError(f"unknown model {self.model!r}; valid: {', '.join(models.names())}")
        if not isinstance(self.model_options, dict):
            raise InvalidInputError(f"model_options={self.model_options!r} is not accepted; expected a dict")
        check_int("rounds", self.rounds, 1, MAX_ROUNDS)
        check_int("local_steps", self.local_steps, 1, MAX_STEPS)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_positive("lr", self.lr)
        if isinstance(self.momentum, bool) or not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise InvalidInputError(f"momentum={self.momentum!r} is not accepted; expected 0 <= momentum < 1")
        if isinstance(self.weight_decay, bool) or not (isinstance(self.weight_decay, (int, float))
                                                      and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InvalidInputError(f"weight_decay={self.weight_decay!r} is not accepted; expected >= 0")

    def make_strategy(self, *, reproducible_noise: bool = False, **extra: Any) -> Any:
        """The run's strategy object (``extra``: driver-provided arguments such as ``server_data``)."""
        from edge_sdk.strategies import create_strategy

        return create_strategy(self.strategy, seed=self.seed, merge=self.merge_settings(
            reproducible_noise=reproducible_noise), **self.strategy_options, **extra)
