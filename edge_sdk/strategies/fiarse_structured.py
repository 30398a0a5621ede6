"""Channel-level importance extraction (ours): physically smaller dense submodels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk.strategies._registry import register_strategy
from edge_sdk.strategies.base import Strategy
from edge_sdk.strategies.options import Option

__all__ = ["FiarseStructured"]


@register_strategy
class FiarseStructured(Strategy):
    """Keep the output channels / neurons / heads of largest importance (squared L2 norm of
    every coupled weight entry), the same fraction in every channel group.

    Exploration (``explore``): part of each client's channels is not taken by importance
    but explored, so that the channels below the small tiers' top ranks are trained by every
    tier, not by the full-size clients alone: ``"random"`` (drawn per client and round, as
    Federated Dropout's), ``"rolling"`` (a window over the other channels that moves on
    every round, as FedRolex's) or ``"none"`` (importance only, the behaviour of earlier
    releases). The explored share of a channel group's kept channels is ``explore_share``,
    times the group's kept fraction when ``explore_by_width``, halved every
    ``explore_half_life`` rounds (0: never). The default (random, share 1, by width, half-life
    30 rounds) explores at first half of the kept channels at size 1/4, a quarter at 1/16, an
    eighth at 1/64, and a little less every round. Chosen on the FIARSE tables (released
    settings; bench/bench_fiarse_table*.md): over half-lives 0 (constant), 10, 20, 30, 40 and
    60 on seeds 0-2, then confirmed on seeds 3-5, half-life 30 has the best worst-size margin
    against HeteroFL / FedRolex / Federated Dropout over MNIST-1D and digits (-2.7 against
    -3.5 for a constant share, pooled over the six seeds) and a higher average on both.
    The global model at a size is always evaluated and exported with the importance
    ranking alone.

    ``importance_memory`` m > 0 ranks by an exponential average of the importance over
    rounds (``s = m x s + (1 - m) x importance``, kept by this object between rounds; the
    evaluation plans use it too). Measured (bench/bench_structured_pooled.md): m = 0.5 helps
    digits/resnet8 at size 1/4 on one seed set and not on the other; it is off by default.
    ``rank_hysteresis`` h > 0 keeps a size's ranking stable: a channel kept at that size in
    the previous round counts (1 + h) times its importance (h = 100 freezes the first round's
    ranking). Measured (pooled over six seeds): it lowers sizes 1/4 and 1/16 on both tables
    (the ranking's movement is what they gain from); it is off by default. With either
    option the strategy keeps state between rounds (one object per run).
    """

    name = "fiarse-structured"
    summary = "channel-level importance: a smaller dense submodel (faster on a CPU)"
    plan_name = "fiarse-structured"
    options = (
        Option("explore", str, "random", "how the explored share of each client's channels is chosen: random "
               "(per client and round), rolling (a window that moves every round) or none (importance only)",
               choices=("random", "rolling", "none")),
        Option("explore_share", float, 1.0, "the fraction of each channel group's kept channels that is explored, "
               "in [0, 1] (the rest by importance)", minimum=0.0),
        Option("explore_half_life", float, 30.0, "rounds in which the explored share halves (0: constant)",
               minimum=0.0),
        Option("explore_by_width", bool, True, "multiply the explored share by each channel group's kept "
               "fraction (wide tiers explore more, narrow ones keep their top channels)"),
        Option("importance_memory", float, 0.0, "rank channels by an exponential average of their importance "
               "over rounds, s = m x s + (1 - m) x importance, in [0, 1) (0: this round's importance only)",
               minimum=0.0),
        Option("rank_hysteresis", float, 0.0, "a channel kept at a size in the previous round counts (1 + h) "
               "times its importance when that size is ranked again, h >= 0 (0: rank afresh every round)",
               minimum=0.0),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from edge_sdk.errors import InvalidInputError
        from edge_sdk.submodel.selectors import ExploringImportanceSelector, RememberedRanking

        share = self.option("explore_share")
        if share > 1.0:
            raise InvalidInputError(f"strategy {self.name}: explore_share={share!r} is not accepted; "
                                    "expected a number in [0, 1]")
        memory = self.option("importance_memory")
        if memory >= 1.0:
            raise InvalidInputError(f"strategy {self.name}: importance_memory={memory!r} is not accepted; "
                                    "expected a number in [0, 1)")
        mode = self.option("explore")
        explores = mode != "none" and share > 0.0
        hysteresis = self.option("rank_hysteresis")
        stateful = memory > 0.0 or hysteresis > 0.0  # the ranking depends on earlier rounds
        self._selector = None if not explores and not stateful else ExploringImportanceSelector(
            share if explores else 0.0, "random" if mode == "none" else mode, self.option("explore_half_life"),
            self.option("explore_by_width"), memory, hysteresis)
        # evaluation: the same (remembered) ranking without exploration
        self._ranking = RememberedRanking(self._selector) if stateful else None
        # random exploration: every client draws its own channels
        self.plans_per_client = explores and mode == "random"

    def plan(self, global_model: nn.Module, ratio: float, *, round: int, rng: np.random.Generator,
             example_input: torch.Tensor | None = None) -> Any:
        return self._plan_with(self._selector, global_model, ratio, round, rng, example_input)

    def evaluation_plan(self, global_model: nn.Module, ratio: float, *, round: int, rng: np.random.Generator,
                        example_input: torch.Tensor | None = None) -> Any:
        """The importance ranking alone (no exploration; with ``importance_memory`` or
        ``rank_hysteresis``, the remembered ranking the clients trained by)."""
        return self._plan_with(self._ranking, global_model, ratio, round, rng, example_input)

    def _plan_with(self, selector: Any, global_model: nn.Module, ratio: float, round: int,
                   rng: np.random.Generator, example_input: torch.Tensor | None) -> Any:
        """The plan ``selector`` picks; the registered importance ranking when it is None, and
        the whole model at size 1."""
        from edge_sdk import submodel
        from edge_sdk.submodel.structured import plan_structured

        if selector is None or float(ratio) >= 1.0:
            return submodel.plan(self.plan_name, global_model, float(ratio), round=round,
                                 example_input=example_input, rng=rng)
        return plan_structured(self.plan_name, global_model, submodel.check_ratio(ratio), round=round,
                               example_input=example_input, rng=rng, selector=selector)
