"""Single-process federated simulation of model-heterogeneous training.

Clients are spread evenly over size tiers (fractions of the global model's parameters),
get a Dirichlet(alpha) label split of the training data, and every round train the
submodel their tier's plan extracts from the current global model; the server merges the
updates with the strategy's aggregation rule. The result holds per-round metrics and the
global model's test accuracy at every tier size (FIARSE's "global" accuracy) plus the mean
accuracy of each client's submodel on test data drawn from its own label mix ("local").

Strategies: ``fiarse``, ``fiarse-structured``, ``heterofl``, ``fedrolex`` (one plan per
tier and round), ``fedra`` (random block allocation with LoRA; needs a model with a
``blocks`` stack: ``vit_tiny``, ``mixer_tiny``), ``fedtsa`` (HeteroFL's nested tier
submodels, merged by the two-stage FedTSA rule; ``server_data`` picks its stage-2 data:
an unlabeled held-out slice of the training data no client gets, DeepInversion synthesis,
or none) and ``fedavg`` (everyone trains the full model: the ceiling).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from edge_sdk import datasets as _datasets
from edge_sdk._io import atomic_write_bytes
from edge_sdk.errors import EdgeSDKError, InvalidInputError, MissingDependencyError, UnknownNameError

__all__ = [
    "STRATEGIES",
    "SimulationConfig",
    "RoundMetrics",
    "SimulationResult",
    "parse_tiers",
    "run_simulation",
    "plot_history",
    "fedra_models",
]

logger = logging.getLogger(__name__)

STRATEGIES = ("fiarse", "fiarse-structured", "heterofl", "fedrolex", "fedra", "fedavg", "fedtsa")
SERVER_DATA = ("proxy", "deepinversion", "none")  # fedtsa stage 2
FIARSE_GRADIENTS = ("hard", "surrogate")
BN_STATS = ("recompute", "aggregated")
_BN_CALIBRATION_SAMPLES = 4096
_EVAL_BATCH = 1024


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
class SimulationConfig:
    """What to simulate. ``tiers`` is a string like ``"1,1/4,1/16,1/64"`` or a list."""

    strategy: str = "fiarse"
    dataset: str = "mnist1d"
    model: str = "cnn1d"
    clients: int = 20
    tiers: str | Sequence[Any] = "1,1/4,1/16,1/64"
    alpha: float = 0.3
    rounds: int = 20
    local_steps: int = 10
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    fiarse_gradient: str = "surrogate"
    client_fraction: float = 1.0  # share of clients sampled each round
    eval_every: int = 1  # evaluate the global model per tier every N rounds (and at the end)
    lora_rank: int = 8  # fedra only
    data_seed: int | None = None  # None: use ``seed`` for the data too
    # BatchNorm statistics of an evaluated submodel: "recompute" them on the clients' training
    # data first (HeteroFL's static BN; every size gets its own statistics) or use the
    # "aggregated" running statistics as they came out of aggregation.
    bn_stats: str = "recompute"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    plan_options: dict[str, Any] = field(default_factory=dict)
    # fedtsa only: stage-2 server data ("proxy": an unlabeled held-out slice of the training
    # data that no client gets, ``server_holdout`` of it; "deepinversion": synthesised from
    # the tier models; "none": stage 1 only) and options of the fedtsa rule
    server_data: str = "proxy"
    server_holdout: float = 0.1
    fedtsa_options: dict[str, Any] = field(default_factory=dict)

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
        if self.strategy not in STRATEGIES:
            raise UnknownNameError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if str(self.dataset).lower() not in _datasets.names():
            raise UnknownNameError(
                f"unknown dataset {self.dataset!r}; valid: {', '.join(_datasets.names())}"
            )
        labels, _ = parse_tiers(self.tiers)
        _check_int("clients", self.clients, 1)
        if self.clients < len(labels):
            raise InvalidInputError(
                f"clients={self.clients} is fewer than the {len(labels)} tiers; "
                "every tier needs at least one client"
            )
        _check_int("rounds", self.rounds, 1)
        _check_int("local_steps", self.local_steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("eval_every", self.eval_every, 1)
        _check_int("lora_rank", self.lora_rank, 1)
        _check_int("seed", self.seed, 0)
        if self.data_seed is not None:
            _check_int("data_seed", self.data_seed, 0)
        _check_positive("alpha", self.alpha)
        _check_positive("lr", self.lr)
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise InvalidInputError(f"momentum={self.momentum!r} is not accepted; expected 0 <= momentum < 1")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise InvalidInputError(f"weight_decay={self.weight_decay!r} is not accepted; expected >= 0")
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
        if self.fiarse_gradient not in FIARSE_GRADIENTS:
            raise InvalidInputError(
                f"fiarse_gradient={self.fiarse_gradient!r} is not accepted; expected one of "
                + ", ".join(FIARSE_GRADIENTS)
            )
        from edge_sdk import models

        if self.model not in models.names():
            raise UnknownNameError(f"unknown model {self.model!r}; valid: {', '.join(models.names())}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name}={value!r} is not accepted; expected an integer >= {minimum}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name}={value!r} is not accepted; expected a finite number > 0")


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "rounds": [r.to_dict() for r in self.rounds],
            "final": dict(self.final),
            "final_average": self.final_average,
            "local_accuracy": self.local_accuracy,
            "local_accuracy_per_tier": dict(self.local_accuracy_per_tier),
            "kept_fraction": dict(self.kept_fraction),
            "clients_per_tier": dict(self.clients_per_tier),
            "wall_time_s": self.wall_time_s,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# ---- building blocks ----------------------------------------------------------------------


def fedra_models() -> list[str]:
    """Reference models FedRA can run on (a body that is a ``blocks`` stack of same-shaped
    blocks)."""
    from edge_sdk import models

    out = []
    for name in models.names():
        try:
            m = models.create(name, width=0.25, depth=2)
        except EdgeSDKError:  # a model that cannot be built this small is skipped
            continue
        if _has_blocks(m):
            out.append(name)
    return out


def _has_blocks(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return isinstance(blocks, (nn.ModuleList, nn.Sequential)) and len(blocks) > 0


def build_model(config: SimulationConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The global model for ``config``, with its input options matched to the data
    (``in_channels`` and ``length`` / ``img_size``) unless given in ``model_kwargs``."""
    from edge_sdk import models

    kwargs = dict(config.model_kwargs)
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
    training: values, names, model/data fit, fedra's need for a ``blocks`` stack.
    Returns the (freshly initialised) global model it built to check."""
    config.validate()
    shape, num_classes = _datasets.info(config.dataset, **config.dataset_kwargs)
    with torch.random.fork_rng(devices=[]):  # initialising it must not move the caller's RNG
        model = build_model(config, shape, num_classes)
    if config.strategy == "fedra" and not _has_blocks(model):
        raise InvalidInputError(
            f"strategy fedra needs a model whose body is a 'blocks' stack "
            f"({', '.join(fedra_models())}); {config.model!r} has none"
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


class _FullModelPlan:
    """FedAvg's "plan": the client trains a copy of the whole global model and uploads all
    of it (``train_local(..., plan=None)``)."""

    kept_fraction = 1.0

    def extract(self, global_model: nn.Module) -> nn.Module:
        return copy.deepcopy(global_model)


def _make_plans(strategy: str, global_model: nn.Module, ratios: Sequence[float], *, round: int,
                example_input: torch.Tensor, rng: np.random.Generator, lora_rank: int,
                plan_options: dict[str, Any]) -> list[Any]:
    """One plan per ratio (per client for fedra, per tier otherwise)."""
    if strategy == "fedavg":
        return [_FullModelPlan() for _ in ratios]
    from edge_sdk import submodel

    if strategy == "fedtsa":  # tier models are HeteroFL's nested submodels
        strategy = "heterofl"
    if strategy == "fedra":
        return list(submodel.plan_fedra(global_model, [float(r) for r in ratios], rng=rng, lora_rank=lora_rank,
                                        round=round))
    return [
        submodel.plan(strategy, global_model, float(r), round=round, example_input=example_input,
                      rng=rng, **plan_options)
        for r in ratios
    ]


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
    from edge_sdk.aggregation import aggregate
    from edge_sdk.training import train_local

    start = time.perf_counter()
    labels, fractions = parse_tiers(config.tiers)
    data_seed = config.seed if config.data_seed is None else config.data_seed
    data = _datasets.load(config.dataset, seed=data_seed, **config.dataset_kwargs)
    global_model = build_model(config, data.input_shape, data.num_classes)  # after manual_seed
    example_input = data.test.tensors[0][:1].clone()

    rng = np.random.default_rng(config.seed)
    split_rng, test_rng, sample_rng, plan_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 4))
    server_source = None
    if config.strategy == "fedtsa" and config.server_data != "none":
        from edge_sdk import server_data as _server_data

        if config.server_data == "proxy":  # held out before the split: no client sees it
            x_all, y_all = data.train.tensors
            n_hold = max(1, int(round(config.server_holdout * len(y_all))))
            perm = torch.from_numpy(np.random.default_rng([config.seed, 4242]).permutation(len(y_all)))
            hold, keep = perm[:n_hold].sort().values, perm[n_hold:].sort().values
            server_source = _server_data.ProxyData(x_all[hold].clone())
            data.train = TensorDataset(x_all[keep].clone(), y_all[keep].clone())
        else:
            server_source = _server_data.DeepInversionData(tuple(data.input_shape), data.num_classes,
                                                           pool_batches=2, steps=30)
    agg_options: dict[str, Any] = {}
    if config.strategy == "fedtsa":
        agg_options = dict(config.fedtsa_options, server_data=server_source)
    train_labels = data.train_labels
    parts = _datasets.dirichlet_split(train_labels, config.clients, config.alpha, split_rng)
    test_parts = _datasets.split_like(data.test_labels, train_labels, parts, test_rng)
    # tiers: client c belongs to tier c mod T (as even as possible, every tier non-empty)
    tier_of = [c % len(labels) for c in range(config.clients)]
    loaders = []
    for c, idx in enumerate(parts):
        gen = torch.Generator().manual_seed(config.seed * 100_003 + c)
        loaders.append(_loader(data.train, idx, config.batch_size, shuffle=True, generator=gen))
    test_loader = _loader(data.test, None, _EVAL_BATCH, shuffle=False)
    client_test = [_loader(data.test, idx, _EVAL_BATCH, shuffle=False) for idx in test_parts]
    # the clients' training data (all of it, or a fixed sample) for recomputing BN statistics
    n_train = len(data.train)
    calib_idx = np.sort(rng.permutation(n_train)[:_BN_CALIBRATION_SAMPLES]) if n_train > _BN_CALIBRATION_SAMPLES else None
    calib_loader = _loader(data.train, calib_idx, _EVAL_BATCH, shuffle=False)

    train_kwargs: dict[str, Any] = dict(
        steps=config.local_steps, lr=config.lr, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    if config.strategy == "fiarse":
        train_kwargs["fiarse_gradient"] = config.fiarse_gradient
    rule = config.strategy
    num_sampled = max(1, int(round(config.client_fraction * config.clients)))

    history: list[RoundMetrics] = []
    for r in range(config.rounds):
        t0 = time.perf_counter()
        if num_sampled == config.clients:
            clients = list(range(config.clients))
        else:
            clients = sorted(sample_rng.choice(config.clients, size=num_sampled, replace=False).tolist())
        client_plans = _round_plans(config, global_model, clients, tier_of, fractions, r,
                                    example_input, plan_rng)
        updates, losses, weights, accs = [], [], [], []
        for c, plan in zip(clients, client_plans):
            sub = plan.extract(global_model)
            update = train_local(sub, loaders[c], None if isinstance(plan, _FullModelPlan) else plan,
                                 **train_kwargs)
            updates.append(update)
            loss = _metric(update, "train_loss")
            if loss is not None:
                losses.append(loss)
                weights.append(update.num_samples)
            accs.append(_evaluate(sub, client_test[c])["accuracy"] if len(test_parts[c]) else float("nan"))
        if config.strategy == "fedtsa":  # the rule's options: server data, rng
            agg_options["rng"] = np.random.default_rng([config.seed, 1231, r])
        global_model = aggregate(global_model, updates, rule, **agg_options)
        evaluate_now = (r + 1) % config.eval_every == 0 or r + 1 == config.rounds
        global_acc = (
            _global_accuracy(config, global_model, labels, fractions, r, example_input, test_loader, calib_loader)
            if evaluate_now else {}
        )
        metrics = RoundMetrics(
            round=r + 1,
            train_loss=float(np.average(losses, weights=weights)) if losses else float("nan"),
            client_accuracy=float(np.nanmean(accs)) if accs else float("nan"),
            clients=len(clients),
            upload_bytes=int(sum(int(getattr(u, "num_bytes", 0)) for u in updates)),
            index_bytes=int(sum(int(getattr(u, "index_bytes", 0)) for u in updates)),
            global_accuracy=global_acc,
            seconds=time.perf_counter() - t0,
        )
        history.append(metrics)
        logger.info("round %d/%d: loss %.4f, global %s", r + 1, config.rounds, metrics.train_loss, global_acc)
        if progress is not None:
            progress(metrics)

    final = history[-1].global_accuracy
    local, local_tier, kept = _final_local(config, global_model, labels, fractions, tier_of,
                                           example_input, client_test, test_parts, calib_loader)
    counts = {lab: tier_of.count(t) for t, lab in enumerate(labels)}
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
    )


def _metric(update: Any, key: str) -> float | None:
    metrics = getattr(update, "metrics", None) or {}
    value = metrics.get(key) if isinstance(metrics, dict) else None
    return float(value) if value is not None else None


def _round_plans(config, global_model, clients, tier_of, fractions, r, example_input, plan_rng):
    ratios = [fractions[tier_of[c]] for c in clients]
    if config.strategy == "fedra":
        return _make_plans("fedra", global_model, ratios, round=r, example_input=example_input,
                           rng=plan_rng, lora_rank=config.lora_rank, plan_options=config.plan_options)
    # one plan per distinct ratio this round (plans for equal ratios are equal)
    distinct = sorted(set(ratios), reverse=True)
    plans = _make_plans(config.strategy, global_model, distinct, round=r, example_input=example_input,
                        rng=plan_rng, lora_rank=config.lora_rank, plan_options=config.plan_options)
    by_ratio = dict(zip(distinct, plans))
    return [by_ratio[q] for q in ratios]


def _eval_plan(config, global_model, fraction, r, example_input, rng):
    """The plan that defines "the global model at size ``fraction``" for evaluation."""
    return _make_plans(config.strategy, global_model, [fraction], round=r, example_input=example_input,
                       rng=rng, lora_rank=config.lora_rank, plan_options=config.plan_options)[0]


def _eval_rng(config: SimulationConfig, salt: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, 7919, salt])


def _eval_model(config, plan, global_model, calib_loader) -> nn.Module:
    """The submodel ``plan`` extracts, ready for evaluation (BN statistics per ``bn_stats``)."""
    model = plan.extract(global_model)
    if config.bn_stats == "recompute":
        _recompute_bn_stats(model, calib_loader)
    return model


@torch.no_grad()
def _recompute_bn_stats(model: nn.Module, loader: DataLoader) -> None:
    """Replace the running statistics of every BatchNorm that tracks them by the exact
    average over ``loader`` (forward passes only, weights untouched)."""
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    try:
        for x, _ in loader:
            model(x)
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        model.train(was)


def _global_accuracy(config, global_model, labels, fractions, r, example_input, test_loader, calib_loader):
    out = {}
    for t, (lab, q) in enumerate(zip(labels, fractions)):
        plan = _eval_plan(config, global_model, q, r, example_input, _eval_rng(config, t))
        out[lab] = float(_evaluate(_eval_model(config, plan, global_model, calib_loader), test_loader)["accuracy"])
    return out


def _final_local(config, global_model, labels, fractions, tier_of, example_input, client_test, test_parts,
                 calib_loader):
    r = config.rounds - 1
    models_, kept = {}, {}
    for t, (lab, q) in enumerate(zip(labels, fractions)):
        plan = _eval_plan(config, global_model, q, r, example_input, _eval_rng(config, t))
        models_[t] = _eval_model(config, plan, global_model, calib_loader)
        kept[lab] = float(plan.kept_fraction)
    per_client = []
    for c, t in enumerate(tier_of):
        if not len(test_parts[c]):
            continue
        per_client.append((t, float(_evaluate(models_[t], client_test[c])["accuracy"])))
    local = float(np.mean([a for _, a in per_client])) if per_client else float("nan")
    per_tier = {
        lab: float(np.mean([a for tt, a in per_client if tt == t])) if any(tt == t for tt, _ in per_client)
        else float("nan")
        for t, lab in enumerate(labels)
    }
    return local, per_tier, kept


# ---- plot ---------------------------------------------------------------------------------


def plot_history(result: SimulationResult | dict[str, Any], path: str) -> None:
    """Draw the global test accuracy of every tier over rounds to ``path`` (PNG), atomically.

    Needs matplotlib (``pip install "edge-sdk[plot]"``).
    """
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
    except ImportError as exc:
        raise MissingDependencyError(
            'plotting needs matplotlib: pip install "edge-sdk[plot]"'
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
