"""What a federated run trains: the settings simulation and Flower share.

:class:`FederationSettings` holds the fields every driver has (the strategy and its
options, the model, the data set, rounds, the clients' local training, the seed);
:class:`edge_sdk.simulation.SimulationConfig` and :class:`edge_sdk.flower.config.RunSettings`
extend it with what only they need (the simulated fleet; timeouts and nodes).
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields
from typing import Any

from edge_sdk.errors import InvalidInputError

__all__ = ["FederationSettings", "SettingInfo", "setting", "setting_with_default", "settings_of", "check_int",
           "check_positive"]

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


@dataclass(frozen=True)
class SettingInfo:
    """How a driver reads one scalar setting: the ``edge-sdk simulate`` flag and the Flower
    run-config key are the field name with dashes (``local_steps``: ``--local-steps``,
    ``local-steps``); ``kind`` is int, float, bool or str; ``minimum`` the least value a
    config key may give; ``group`` the ``--help`` section ("" or "merge")."""

    kind: type
    help: str
    metavar: str | None = None
    minimum: float | None = None
    group: str = ""

    @staticmethod
    def key(f: Field) -> str:
        return f.name.replace("_", "-")


def setting(default: Any, kind: type, help: str, *, metavar: str | None = None, minimum: float | None = None,
            group: str = "") -> Any:
    """A dataclass field whose :class:`SettingInfo` the CLI and the Flower config read (one
    declaration of the field, its default, its flag and its bounds)."""
    return field(default=default, metadata={"setting": SettingInfo(kind, help, metavar, minimum, group)})


def setting_with_default(cls: type, name: str, default: Any) -> Any:
    """Field ``name`` of ``cls`` declared again with another default (for a subclass)."""
    info = next(i for f, i in settings_of(cls) if f.name == name)
    return field(default=default, metadata={"setting": info})


def settings_of(cls: type) -> list[tuple[Field, SettingInfo]]:
    """The fields of dataclass ``cls`` declared with :func:`setting`, in declaration order."""
    return [(f, f.metadata["setting"]) for f in fields(cls) if "setting" in f.metadata]


@dataclass
class FederationSettings:
    """``strategy_options`` are the strategy's constructor options by Python name
    (``{"gradient": "hard"}`` for fiarse; see ``strategy_class(name).options``)."""

    strategy: str = setting("fiarse", str, "the federated method (a registered strategy)", metavar="NAME")
    strategy_options: dict[str, Any] = field(default_factory=dict)
    model: str = setting("cnn1d", str, "reference model; fedra needs vit_tiny or mixer_tiny", metavar="NAME")
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str = setting("mnist1d", str, "mnist1d or digits", metavar="NAME")
    rounds: int = setting(20, int, "communication rounds", metavar="R", minimum=1)
    local_steps: int = setting(10, int, "local SGD steps per client and round", metavar="K", minimum=1)
    batch_size: int = setting(32, int, "local batch size", metavar="B", minimum=1)
    lr: float = setting(0.05, float, "local learning rate", metavar="LR", minimum=0)
    momentum: float = setting(0.9, float, "local SGD momentum in [0, 1); the released FIARSE code uses 0",
                              metavar="M", minimum=0)
    weight_decay: float = setting(0.0, float, "local SGD weight decay", metavar="WD", minimum=0)
    seed: int = setting(0, int, "random seed", metavar="S", minimum=0)
    # the merge path (edge_sdk.aggregation.robust_merge.MergeSettings): a registered merge
    # rule spec, the sample-count policy, per-tier outlier thresholds (None: the rule's
    # default), and client-level DP (dp_clip None: off)
    robust: str = setting("none", str, "merge rule over the clients holding each coordinate",
                          metavar="RULE[:PARAM]", group="merge")
    sample_weights: str = setting(
        "auto", str, "weight of a client's reported sample count: trust, cap:K (K x the round's median), equal, "
        "or auto (trust for --robust none, cap:4 for robust rules, equal under DP)", metavar="POLICY", group="merge")
    outlier_norm: float | None = setting(
        None, float, "refuse a change whose norm exceeds K x its tier's median (default 3 with a robust rule; "
        "0: off)", metavar="K", group="merge")
    outlier_cosine: float | None = setting(
        None, float, "refuse a change whose cosine with the rest of its tier's changes is below T "
        "(default 0 with a robust rule; -1: off)", metavar="T", group="merge")
    dp_clip: float | None = setting(None, float, "client-level DP: clip every client's change to L2 norm C",
                                    metavar="C", group="merge")
    dp_noise: float = setting(0.0, float, "DP noise multiplier: Gaussian noise of std Z*C on every "
                              "per-coordinate sum", metavar="Z", minimum=0, group="merge")
    dp_delta: float = setting(1e-5, float, "DP delta for epsilon", metavar="D", group="merge")
    dp_mode: str = setting("server", str, "who adds the DP noise: server or client (each device before upload)",
                           metavar="MODE", group="merge")

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
