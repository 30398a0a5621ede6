"""Single-process federated simulation of model-heterogeneous training.

Clients are spread evenly over size tiers (fractions of the global model's parameters),
get a Dirichlet(alpha) label split of the training data, and every round train the
submodel their plan extracts from the current global model; the server merges the updates.
Every per-method decision (plans, local training options, merge, the model that stands
for a size) is the strategy's (:mod:`edge_sdk.strategies`): this module only moves data
and plans between the simulated clients and the server, as the Flower ServerApp does over
the network. The result holds per-round metrics and the global model's test accuracy at
every tier size (FIARSE's "global" accuracy) plus the mean accuracy of each client's
submodel on test data drawn from its own label mix ("local").

A strategy that merges on server-side data (``uses_server_data``) gets it from
``server_data``: an unlabeled held-out slice of the training data no client gets
(``proxy``), DeepInversion synthesis from the tier models, or none (its merge then skips
what needs the data).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from edge_sdk import datasets as _datasets
from edge_sdk.aggregation.coverage import start_values
from edge_sdk.aggregation.robust_merge import label_clients
from edge_sdk.attacks import choose_attackers, make_attack
from edge_sdk.privacy.mechanism import privatize_update
from edge_sdk._io import atomic_write_bytes
from edge_sdk.errors import InvalidInputError, MissingDependencyError, UnknownNameError
from edge_sdk.settings import FederationSettings, check_int, check_positive
from edge_sdk.strategies import Strategy, kept_fraction, strategy_class
from edge_sdk.training import recompute_bn_stats

__all__ = [
    "SimulationConfig",
    "RoundMetrics",
    "SimulationResult",
    "parse_tiers",
    "run_simulation",
    "plot_history",
]

logger = logging.getLogger(__name__)

SERVER_DATA = ("proxy", "deepinversion", "none")  # for strategies that merge on server data
BN_STATS = ("recompute", "aggregated", "test-batch")
_BN_CALIBRATION_SAMPLES = 4096
_EVAL_BATCH = 1024
# the released FIARSE code evaluates with BatchNorm in batch-statistics mode on test batches of 20
STATIC_BN_BATCH = 20


def parse_tiers(tiers: str | Sequence[Any]) -> tuple[tuple[str, ...], tuple[Fraction, ...]]:
    """Parse tiers like ``"1,1/4,1/16,1/64"`` (or a list of such items / numbers).

    Returns the text of every tier as given (the JSON keys) and its value as a Fraction.
    Each tier must be a fraction in (0, 1]; tiers must be distinct.
    """
    if isinstance(tiers, str):
        items: list[Any] = [t.strip() for t in tiers.split(",")]
    else:
        items = list(tiers)
    if not items or any(isinstance(t, str) and not t for t in items):
        raise InvalidInputError(f"tiers {tiers!r}: expected a comma-separated list like 1,1/4,1/16,1/64")
    labels: list[str] = []
    values: list[Fraction] = []
    for item in items:
        text = item.strip() if isinstance(item, str) else str(item)
        try:
            if isinstance(item, bool):
                raise ValueError
            value = Fraction(text) if isinstance(item, str) else Fraction(item).limit_denominator(10**6)
        except (ValueError, ZeroDivisionError, TypeError):
            raise InvalidInputError(
                f"tier {text!r} is not a fraction; expected values in (0, 1] like 1, 1/4, 0.25"
            ) from None
        if not (0 < value <= 1):
            raise InvalidInputError(f"tier {text!r} is outside (0, 1]; a tier is a fraction of the model")
        if value in values:
            raise InvalidInputError(f"tier {text!r} is given twice in {tiers!r}; tiers must be distinct")
        labels.append(text)
        values.append(value)
    return tuple(labels), tuple(values)


@dataclass
class SimulationConfig(FederationSettings):
    """What to simulate: the shared :class:`~edge_sdk.settings.FederationSettings` plus the
    simulated fleet. ``tiers`` is a string like ``"1,1/4,1/16,1/64"`` or a list."""

    clients: int = 20
    tiers: str | Sequence[Any] = "1,1/4,1/16,1/64"
    alpha: float = 0.3
    client_fraction: float = 1.0  # share of clients sampled each round
    eval_every: int = 1  # evaluate the global model per tier every N rounds (and at the end)
    data_seed: int | None = None  # None: use ``seed`` for the data too
    # BatchNorm statistics of an evaluated submodel: "recompute" them on the clients' training
    # data first (HeteroFL's static BN; every size gets its own statistics), use the
    # "aggregated" running statistics as they came out of aggregation, or "test-batch": the
    # statistics of each test batch of STATIC_BN_BATCH samples (as the released FIARSE code
    # evaluates). The final accuracy under every mode is in ``SimulationResult.final_by_bn_stats``.
    bn_stats: str = "recompute"
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    # for a strategy that merges on server data: "proxy" (an unlabeled held-out slice of the
    # training data that no client gets, ``server_holdout`` of it), "deepinversion"
    # (synthesised from the tier models) or "none"
    server_data: str = "proxy"
    server_holdout: float = 0.1
    # simulated attack (edge_sdk.attacks): "none", "sign-flip", "scale:K", "samples:N",
    # "noise:SIGMA"; ``attackers`` is the fraction of clients attacking (evenly across tiers)
    attack: str = "none"
    attackers: float = 0.0

    @property
    def tier_labels(self) -> tuple[str, ...]:
        return parse_tiers(self.tiers)[0]

    @property
    def tier_fractions(self) -> tuple[Fraction, ...]:
        return parse_tiers(self.tiers)[1]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tiers"] = list(self.tier_labels)
        return d

    def validate(self) -> None:
        """Check every value that can be checked without building anything."""
        strategy_class(self.strategy)  # an unknown strategy is named first
        if str(self.dataset).lower() not in _datasets.names():
            raise UnknownNameError(
                f"unknown dataset {self.dataset!r}; valid: {', '.join(_datasets.names())}"
            )
        labels, _ = parse_tiers(self.tiers)
        check_int("clients", self.clients, 1, 100_000)
        if self.clients < len(labels):
            raise InvalidInputError(
                f"clients={self.clients} is fewer than the {len(labels)} tiers; "
                "every tier needs at least one client"
            )
        check_int("eval_every", self.eval_every, 1)
        if self.data_seed is not None:
            check_int("data_seed", self.data_seed, 0)
        check_positive("alpha", self.alpha)
        if not (isinstance(self.client_fraction, (int, float)) and 0 < self.client_fraction <= 1):
            raise InvalidInputError(
                f"client_fraction={self.client_fraction!r} is not accepted; expected 0 < fraction <= 1"
            )
        if self.bn_stats not in BN_STATS:
            raise InvalidInputError(
                f"bn_stats={self.bn_stats!r} is not accepted; expected one of {', '.join(BN_STATS)}"
            )
        if self.server_data not in SERVER_DATA:
            raise InvalidInputError(
                f"server_data={self.server_data!r} is not accepted; expected one of {', '.join(SERVER_DATA)}"
            )
        if not (isinstance(self.server_holdout, (int, float)) and 0 < self.server_holdout < 1):
            raise InvalidInputError(f"server_holdout={self.server_holdout!r} is not accepted; expected 0 < f < 1")
        from edge_sdk.attacks import choose_attackers, make_attack

        attack = make_attack(self.attack)
        choose_attackers([0] * self.clients, self.attackers, 0)  # checks the fraction
        if (attack.name == "none") != (not self.attackers):
            raise InvalidInputError(f"attack={self.attack!r} with attackers={self.attackers!r}: give both an attack "
                                    "and a fraction of attackers > 0, or neither")
        self.check_federation()


@dataclass
class RoundMetrics:
    """Metrics of one round. ``client_accuracy``: mean over the round's clients of their
    freshly trained submodel's accuracy on their own-distribution test data.
    ``global_accuracy``: tier -> the new global model's test accuracy at that size (only on
    evaluation rounds; empty otherwise)."""

    round: int
    train_loss: float
    client_accuracy: float
    clients: int
    upload_bytes: int
    index_bytes: int
    global_accuracy: dict[str, float]
    seconds: float
    merge: dict[str, Any] | None = None  # the strategy's merge report (refused updates, privacy spent...)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SimulationResult:
    """Outcome of :func:`run_simulation`; ``to_dict()`` is the JSON log."""

    config: SimulationConfig
    rounds: list[RoundMetrics]
    final: dict[str, float]  # tier (as given) -> global test accuracy at that size
    final_average: float  # mean of ``final`` over tiers
    local_accuracy: float  # mean over clients of their submodel's own-distribution accuracy
    local_accuracy_per_tier: dict[str, float]
    kept_fraction: dict[str, float]  # tier -> fraction of parameters the tier's plan keeps
    clients_per_tier: dict[str, int]
    wall_time_s: float
    global_model: nn.Module | None = field(default=None, repr=False, compare=False)
    attackers: list[int] = field(default_factory=list)  # the simulated attacking clients
    privacy: dict[str, float] | None = None  # (epsilon, delta) spent by the run's DP merges
    # BN mode (BN_STATS) -> tier -> the final global model's test accuracy evaluated that way
    final_by_bn_stats: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "rounds": [r.to_dict() for r in self.rounds],
            "final": dict(self.final),
            "final_average": self.final_average,
            "final_by_bn_stats": {mode: dict(acc) for mode, acc in self.final_by_bn_stats.items()},
            "local_accuracy": self.local_accuracy,
            "local_accuracy_per_tier": dict(self.local_accuracy_per_tier),
            "kept_fraction": dict(self.kept_fraction),
            "clients_per_tier": dict(self.clients_per_tier),
            "wall_time_s": self.wall_time_s,
            "merge": self.config.merge_settings().describe(),
            "attack": {"attack": self.config.attack, "fraction": self.config.attackers, "clients": self.attackers},
            "privacy": self.privacy,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# ---- building blocks ----------------------------------------------------------------------


def build_model(config: SimulationConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The global model for ``config``, with its input options matched to the data
    (``in_channels`` and ``length`` / ``img_size``) unless given in ``model_options``."""
    from edge_sdk import models

    kwargs = dict(config.model_options)
    kwargs.setdefault("num_classes", num_classes)
    default_shape = tuple(models.spec(config.model).input_shape)
    shape = tuple(input_shape)
    if len(default_shape) != len(shape):
        raise InvalidInputError(
            f"model {config.model!r} takes inputs shaped like {default_shape}, but dataset "
            f"{config.dataset!r} gives {shape}; choose a model for "
            + ("1-d signals (cnn1d)" if len(shape) == 2 else "images (resnet8, resnet18, vit_tiny, mixer_tiny)")
        )
    auto = {"in_channels": shape[0]}
    if len(shape) == 2:
        auto["length"] = shape[1]
    elif shape[1] == shape[2]:
        auto["img_size"] = shape[1]
    for key, value in auto.items():
        kwargs.setdefault(key, value)
    model = models.create(config.model, **kwargs)
    cfg = getattr(model, "config", None)
    if cfg is not None and tuple(cfg.input_shape) != shape:
        raise InvalidInputError(
            f"model {config.model!r} built for input {tuple(cfg.input_shape)} but dataset "
            f"{config.dataset!r} gives {shape}"
        )
    return model


def check_config(config: SimulationConfig) -> nn.Module:
    """Everything :func:`run_simulation` would refuse, checked without loading data or
    training: values, names, the strategy's options, model/data fit, the strategy's needs
    of the model. Returns the (freshly initialised) global model it built to check."""
    config.validate()
    shape, num_classes = _datasets.info(config.dataset, **config.dataset_kwargs)
    with torch.random.fork_rng(devices=[]):  # initialising it must not move the caller's RNG
        model = build_model(config, shape, num_classes)
    problem = strategy_class(config.strategy).model_problem(model)
    if problem is not None:
        from edge_sdk.strategies import compatible_models

        raise InvalidInputError(
            f"strategy {config.strategy} needs {problem}; {config.model!r} has none "
            f"(models that fit: {', '.join(compatible_models(config.strategy)) or 'none'})"
        )
    return model


def _loader(dataset: TensorDataset, indices: np.ndarray | None, batch_size: int, *, shuffle: bool,
            generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader of (x, y) batches that indexes the tensors once per batch (a
    BatchSampler with ``batch_size=None``) instead of once per sample; ``len(loader.dataset)``
    is the client's sample count."""
    if indices is not None:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        dataset = TensorDataset(*(t[idx] for t in dataset.tensors))
    base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    # training drops a ragged last batch (a batch of one breaks BatchNorm) unless that is all
    drop_last = shuffle and len(dataset) >= batch_size
    return DataLoader(dataset, sampler=BatchSampler(base, batch_size, drop_last=drop_last),
                      batch_size=None, num_workers=0)


def _evaluate(model: nn.Module, loader: DataLoader) -> dict[str, float]:
    from edge_sdk.training import evaluate

    return evaluate(model, loader)


# ---- the loop -----------------------------------------------------------------------------


def run_simulation(
    config: SimulationConfig,
    *,
    progress: Callable[[RoundMetrics], None] | None = None,
) -> SimulationResult:
    """Run the federation described by ``config`` in this process.

    Deterministic for a given ``config.seed`` (torch's global generator is forked, so the
    caller's random state is left as it was). ``progress`` is called after every round.
    """
    check_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _run(config, progress)


def _run(config: SimulationConfig, progress: Callable[[RoundMetrics], None] | None) -> SimulationResult:
    from edge_sdk.training import train_local

    start = time.perf_counter()
    labels, fractions = parse_tiers(config.tiers)
    data_seed = config.seed if config.data_seed is None else config.data_seed
    data = _datasets.load(config.dataset, seed=data_seed, **config.dataset_kwargs)
    global_model = build_model(config, data.input_shape, data.num_classes)  # after manual_seed
    example_input = data.test.tensors[0][:1].clone()

    rng = np.random.default_rng(config.seed)
    split_rng, test_rng, sample_rng, plan_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 4))
    extra: dict[str, Any] = {}
    if strategy_class(config.strategy).uses_server_data:
        extra["server_data"] = _server_source(config, data)  # may hold out part of data.train
    strategy = config.make_strategy(reproducible_noise=True, **extra)
    global_model = strategy.prepare_global(global_model, plan_rng)
    train_labels = data.train_labels
    parts = _datasets.dirichlet_split(train_labels, config.clients, config.alpha, split_rng)
    test_parts = _datasets.split_like(data.test_labels, train_labels, parts, test_rng)
    # tiers: client c belongs to tier c mod T (as even as possible, every tier non-empty)
    tier_of = [c % len(labels) for c in range(config.clients)]
    attackers = choose_attackers(tier_of, config.attackers, config.seed)
    attack = make_attack(config.attack)
    attack_gen = torch.Generator().manual_seed(config.seed * 7_919 + 17)
    dp_gen = torch.Generator().manual_seed(config.seed * 7_927 + 29)
    loaders = []
    for c, idx in enumerate(parts):
        gen = torch.Generator().manual_seed(config.seed * 100_003 + c)
        loaders.append(_loader(data.train, idx, config.batch_size, shuffle=True, generator=gen))
    eval_batch = STATIC_BN_BATCH if config.bn_stats == "test-batch" else _EVAL_BATCH
    test_loader = _loader(data.test, None, eval_batch, shuffle=False)
    client_test = [_loader(data.test, idx, eval_batch, shuffle=False) for idx in test_parts]
    # the clients' training data (all of it, or a fixed sample) for recomputing BN statistics
    n_train = len(data.train)
    calib_idx = np.sort(rng.permutation(n_train)[:_BN_CALIBRATION_SAMPLES]) if n_train > _BN_CALIBRATION_SAMPLES else None
    calib_loader = _loader(data.train, calib_idx, _EVAL_BATCH, shuffle=False)
    train_kwargs = {**config.train_kwargs(), **strategy.train_options()}
    num_sampled = max(1, int(round(config.client_fraction * config.clients)))
    evaluation = _Evaluation(config, strategy, labels, fractions, example_input, calib_loader)

    history: list[RoundMetrics] = []
    for r in range(config.rounds):
        t0 = time.perf_counter()
        if num_sampled == config.clients:
            clients = list(range(config.clients))
        else:
            clients = sorted(sample_rng.choice(config.clients, size=num_sampled, replace=False).tolist())
        plans = strategy.make_plans(global_model, {c: float(fractions[tier_of[c]]) for c in clients}, round=r,
                                    rng=plan_rng, example_input=example_input)
        device_dp = strategy.client_privacy(plans, global_model)
        updates, losses, weights, accs = [], [], [], []
        senders = [c for c in clients if attack.sends_update or c not in attackers]  # "absent": nothing sent
        for c in senders:
            sub = strategy.extract(plans[c], global_model)
            update = train_local(sub, loaders[c], plans[c], **train_kwargs)
            if device_dp[c] or c in attackers:
                received = start_values(plans[c], global_model.state_dict(), update.tensors)
                if device_dp[c]:
                    update = privatize_update(update, received, device_dp[c]["dp_clip"],
                                              device_dp[c]["dp_noise_std"], dp_gen)
                if c in attackers:
                    update = attack.apply(update, received, attack_gen)
            updates.append(update)
            loss = _metric(update, "train_loss")
            if loss is not None:
                losses.append(loss)
                weights.append(update.num_samples)
            accs.append(_evaluate(sub, client_test[c])["accuracy"] if len(test_parts[c]) else float("nan"))
        global_model, merge_report = _merge(strategy, global_model, updates, [plans[c] for c in senders], r, senders)
        evaluate_now = (r + 1) % config.eval_every == 0 or r + 1 == config.rounds
        global_acc = evaluation.global_accuracy(global_model, r, test_loader) if evaluate_now else {}
        metrics = RoundMetrics(
            round=r + 1,
            train_loss=float(np.average(losses, weights=weights)) if losses else float("nan"),
            client_accuracy=float(np.nanmean(accs)) if accs else float("nan"),
            clients=len(clients),
            upload_bytes=int(sum(int(getattr(u, "num_bytes", 0)) for u in updates)),
            index_bytes=int(sum(int(getattr(u, "index_bytes", 0)) for u in updates)),
            global_accuracy=global_acc,
            seconds=time.perf_counter() - t0,
            merge=merge_report,
        )
        history.append(metrics)
        logger.info("round %d/%d: loss %.4f, global %s", r + 1, config.rounds, metrics.train_loss, global_acc)
        if progress is not None:
            progress(metrics)

    final = history[-1].global_accuracy
    final_plans = evaluation.plans(global_model, config.rounds - 1)  # reused by every final evaluation
    local, local_tier, kept = evaluation.final_local(global_model, final_plans, tier_of, client_test, test_parts)
    counts = {lab: tier_of.count(t) for t, lab in enumerate(labels)}
    by_mode = {config.bn_stats: dict(final)}
    for mode in BN_STATS:
        if mode != config.bn_stats:
            loader = _loader(data.test, None, STATIC_BN_BATCH if mode == "test-batch" else _EVAL_BATCH, shuffle=False)
            by_mode[mode] = evaluation.global_accuracy(global_model, config.rounds - 1, loader, bn_stats=mode,
                                                       plans=final_plans)
    return SimulationResult(
        config=config,
        rounds=history,
        final=dict(final),
        final_average=float(np.mean([final[lab] for lab in labels])),
        local_accuracy=local,
        local_accuracy_per_tier=local_tier,
        kept_fraction=kept,
        clients_per_tier=counts,
        wall_time_s=time.perf_counter() - start,
        global_model=global_model,
        attackers=attackers,
        privacy=strategy.privacy_spent(),
        final_by_bn_stats={mode: by_mode[mode] for mode in BN_STATS},
    )


def _merge(strategy: Strategy, global_model: nn.Module, updates: list[Any], assigned: list[Any], r: int,
           clients: list[int]) -> tuple[nn.Module, dict[str, Any]]:
    """The round's merge as a server runs it: updates the strategy refuses (its
    :meth:`~edge_sdk.strategies.Strategy.screen`) are dropped and listed, the rest merged
    (none left, or none sent: the global model is kept). Returns the model and the report by
    client id."""
    refused = dict(strategy.screen(global_model, updates, assigned=assigned))
    keep = [i for i in range(len(updates)) if i not in refused]
    dropped = [{"client": clients[i], "reason": why} for i, why in refused.items()]
    if not keep:
        if updates:
            logger.warning("round %d: every update refused; the global model is kept", r + 1)
        return global_model, {"rule": strategy.merge_settings.merge_rule.spec, "merged": 0, "updates": len(updates),
                              "refused": dropped, "duplicates": [], "privacy": None}
    global_model = strategy.merge(global_model, [updates[i] for i in keep], round=r,
                                  assigned=[assigned[i] for i in keep])
    report = label_clients((strategy.last_report or {}).get("merge"), [clients[i] for i in keep]) or {}
    report["updates"] = len(updates)
    report["refused"] = dropped + report.get("refused", [])
    return global_model, report


def _server_source(config: SimulationConfig, data: Any) -> Any:
    """The server-side data of a strategy that merges on it (None for ``server_data="none"``).

    ``proxy`` takes its samples out of ``data.train`` before the clients' split, so no
    client sees them."""
    if config.server_data == "none":
        return None
    from edge_sdk import server_data as _server_data

    if config.server_data == "proxy":
        x_all, y_all = data.train.tensors
        n_hold = max(1, int(round(config.server_holdout * len(y_all))))
        perm = torch.from_numpy(np.random.default_rng([config.seed, 4242]).permutation(len(y_all)))
        hold, keep = perm[:n_hold].sort().values, perm[n_hold:].sort().values
        data.train = TensorDataset(x_all[keep].clone(), y_all[keep].clone())
        return _server_data.ProxyData(x_all[hold].clone())
    return _server_data.DeepInversionData(tuple(data.input_shape), data.num_classes, pool_batches=2, steps=30)


def _metric(update: Any, key: str) -> float | None:
    metrics = getattr(update, "metrics", None) or {}
    value = metrics.get(key) if isinstance(metrics, dict) else None
    return float(value) if value is not None else None


@dataclass
class _Evaluation:
    """The global model evaluated at every tier size, as the strategy defines that model."""

    config: SimulationConfig
    strategy: Strategy
    labels: tuple[str, ...]
    fractions: tuple[Fraction, ...]
    example_input: torch.Tensor
    calib_loader: DataLoader

    def plan(self, global_model: nn.Module, tier: int, r: int) -> Any:
        rng = np.random.default_rng([self.config.seed, 7919, tier])
        return self.strategy.evaluation_plan(global_model, float(self.fractions[tier]), round=r, rng=rng,
                                             example_input=self.example_input)

    def model(self, plan: Any, global_model: nn.Module, bn_stats: str | None = None) -> nn.Module:
        """The submodel ``plan`` extracts, ready for evaluation (BN statistics per ``bn_stats``,
        default the config's)."""
        mode = bn_stats or self.config.bn_stats
        model = self.strategy.extract(plan, global_model)
        if mode == "recompute":
            recompute_bn_stats(model, self.calib_loader)
        elif mode == "test-batch":
            model = _batch_statistics_copy(model)
        return model

    def plans(self, global_model: nn.Module, r: int) -> list[Any]:
        """The evaluation plan of every tier (deterministic: the same on every call)."""
        return [self.plan(global_model, t, r) for t in range(len(self.labels))]

    def global_accuracy(self, global_model: nn.Module, r: int, test_loader: DataLoader,
                        bn_stats: str | None = None, plans: Sequence[Any] | None = None) -> dict[str, float]:
        plans = self.plans(global_model, r) if plans is None else plans
        out = {}
        for lab, plan in zip(self.labels, plans):
            model = self.model(plan, global_model, bn_stats)
            out[lab] = float(_evaluate(model, test_loader)["accuracy"])
        return out

    def final_local(self, global_model: nn.Module, plans: Sequence[Any], tier_of: Sequence[int],
                    client_test: Sequence[DataLoader],
                    test_parts: Sequence[np.ndarray]) -> tuple[float, dict[str, float], dict[str, float]]:
        models_, kept = {}, {}
        for t, (lab, plan) in enumerate(zip(self.labels, plans)):
            models_[t] = self.model(plan, global_model)
            kept[lab] = kept_fraction(plan)
        per_client = []
        for c, t in enumerate(tier_of):
            if not len(test_parts[c]):
                continue
            per_client.append((t, float(_evaluate(models_[t], client_test[c])["accuracy"])))
        local = float(np.mean([a for _, a in per_client])) if per_client else float("nan")
        per_tier = {
            lab: float(np.mean([a for tt, a in per_client if tt == t])) if any(tt == t for tt, _ in per_client)
            else float("nan")
            for t, lab in enumerate(self.labels)
        }
        return local, per_tier, kept


def _batch_statistics_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose BatchNorm layers normalise with each batch's own statistics,
    also in eval mode (no running statistics: torch then uses the batch's)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None
    return model


# ---- plot ---------------------------------------------------------------------------------


def plot_history(result: SimulationResult | dict[str, Any], path: str) -> None:
    """Draw the global test accuracy of every tier over rounds to ``path`` (PNG), atomically.

    Needs matplotlib (``pip install "edge-fl-sdk[plot]"``).
    """
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    except ImportError as exc:
        raise MissingDependencyError(
            'plotting needs matplotlib: pip install "edge-fl-sdk[plot]"'
        ) from exc
    doc = result.to_dict() if isinstance(result, SimulationResult) else result
    tiers = doc["config"]["tiers"]
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for lab in tiers:
        xs = [m["round"] for m in doc["rounds"] if lab in m["global_accuracy"]]
        ys = [m["global_accuracy"][lab] for m in doc["rounds"] if lab in m["global_accuracy"]]
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=f"size {lab}")
    cfg = doc["config"]
    ax.set_title(f"{cfg['strategy']} - {cfg['model']} on {cfg['dataset']}, "
                 f"{cfg['clients']} clients, alpha {cfg['alpha']}")
    ax.set_xlabel("round")
    ax.set_ylabel("global test accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
