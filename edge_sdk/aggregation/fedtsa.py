"""FedTSA two-stage aggregation (Fan et al., ECCV 2024) over structured submodels.

Stage 1: clients of one tier hold the same plan (same size, same kept channels); their
updates are averaged sample-weighted into one *tier model*, a real smaller network (the plan
extracted from the current global model with the tier's mean values loaded).

Stage 2 (when ``server_data`` is given and ``stage2=True``): deep mutual learning on the
server between the tier models. For ``distill_steps`` server batches, every tier model is
trained towards the mean of all tier models' softened outputs ``softmax(z / T)``
(loss ``T^2 * KL(mean || softmax(z_k / T))``, the mean detached), with SGD.

Merge: every tier model is scattered back into the global tensors through its plan's index
map; each element becomes the mean over the tiers that hold it, weighted by the tiers' sample
counts, and elements no tier holds keep their value. With ``stage2=False`` the result equals
the per-element structured rule (HeteroFL's aggregation). BatchNorm running statistics are
taken from stage 1 (distillation on server data does not overwrite them).

Accepts updates of the structured strategies (``heterofl``, ``fedrolex``,
``fiarse-structured``). Updates are validated before anything is computed; a bad update
raises :class:`~edge_sdk.errors.UpdateRejectedError` and leaves the global model untouched.
Server data sources live in :mod:`edge_sdk.server_data`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edge_sdk.aggregation._common import finalize, group_by_plan, validate_updates
from edge_sdk.aggregation.rules import _buffers
from edge_sdk.errors import InvalidInputError
from edge_sdk.server_data import RngLike, ServerDataSource, as_generator
from edge_sdk.submodel._plan import SubmodelPlan
from edge_sdk.submodel.structured import STRUCTURED_STRATEGIES
from edge_sdk.training import Update

log = logging.getLogger(__name__)

__all__ = ["fedtsa", "fedtsa_aggregate", "FedTSAReport", "TierModel", "stage1_tier_models",
           "mutual_learning", "merge_tier_models"]


@dataclass
class TierModel:
    """One tier after stage 1: its plan, its model (a smaller dense network) and its samples."""

    plan: SubmodelPlan
    model: nn.Module
    num_samples: int
    clients: int


@dataclass
class FedTSAReport:
    """What one FedTSA aggregation did (for logs and benches)."""

    tiers: list[dict[str, Any]] = field(default_factory=list)  # ratio, kept_fraction, clients, samples
    stage2: bool = False
    distill_steps: int = 0
    kl_first: float = float("nan")  # mean KL of the tiers to the consensus on the first batch
    kl_last: float = float("nan")  # ... and on the last batch
    stage1_seconds: float = 0.0
    stage2_seconds: float = 0.0  # server data + mutual learning
    fallback_tiers: int = 0  # tiers whose distilled weights went non-finite (stage 1 kept)


def _check_options(temperature: Any, distill_steps: Any, lr: Any, batch_size: Any, momentum: Any,
                   server_data: Any) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise InvalidInputError(f"fedtsa: temperature={temperature!r}; expected a finite number > 0")
    for name, v in (("distill_steps", distill_steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidInputError(f"fedtsa: {name}={v!r}; expected an integer >= 1")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise InvalidInputError(f"fedtsa: lr={lr!r}; expected a finite number > 0")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise InvalidInputError(f"fedtsa: momentum={momentum!r}; expected 0 <= momentum < 1")
    if server_data is not None and not isinstance(server_data, ServerDataSource):
        raise InvalidInputError(f"fedtsa: server_data must implement batches(models, num_batches, batch_size, "
                                f"rng) (see edge_sdk.server_data), got {type(server_data).__name__}")


def stage1_tier_models(global_model: nn.Module, updates: Sequence[Update]) -> list[TierModel]:
    """Group (validated) updates by plan and average each group sample-weighted into a model."""
    groups = group_by_plan(updates)
    groups.sort(key=lambda g: -g[0].kept_fraction)
    out = []
    with torch.no_grad():
        for plan, members in groups:
            model = plan.extract(global_model)
            state = model.state_dict()
            total = float(sum(u.num_samples for u in members))
            for name, target in state.items():
                dtype = target.dtype if target.is_floating_point() else torch.float64
                acc = torch.zeros(target.shape, dtype=dtype)
                for u in members:
                    acc.add_(u.tensors[name].to(dtype), alpha=u.num_samples / total)
                target.copy_(acc if target.is_floating_point() else acc.round().to(target.dtype))
            out.append(TierModel(plan, model, int(total), len(members)))
    return out


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    params = {n for n, _ in model.named_parameters()}
    return {n: t.detach().clone() for n, t in model.state_dict().items() if n not in params}


def mutual_learning(models: Sequence[nn.Module], batches: Any, *, temperature: float = 3.0, lr: float = 0.01,
                    momentum: float = 0.9) -> tuple[list[float], list[bool]]:
    """Deep mutual learning between ``models`` (in place) on an iterable of input batches.

    Each step: every model's softened output ``softmax(z_k / T)``, their mean as the (detached)
    target, and one SGD step per model on ``T^2 * KL(target || softmax(z_k / T))``. Buffers
    (BatchNorm running statistics) are restored afterwards. Returns the mean KL per step and,
    per model, whether its parameters stayed finite (a model that did not is restored).
    """
    models = list(models)
    saved = [{n: p.detach().clone() for n, p in m.named_parameters()} for m in models]
    buffers = [_bn_buffers(m) for m in models]
    was = [m.training for m in models]
    opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum) for m in models]
    t2 = float(temperature) ** 2
    kls: list[float] = []
    try:
        for m in models:
            m.train()
        for i, x in enumerate(batches):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise InvalidInputError(f"fedtsa: server batch {i} is a {type(x).__name__}; expected a float tensor")
            try:
                logits = [m(x) for m in models]
            except RuntimeError as exc:
                raise InvalidInputError(f"fedtsa: the tier models cannot run server batch {i} of shape "
                                        f"{list(x.shape)} ({str(exc).splitlines()[0]})") from exc
            logp = [F.log_softmax(z / temperature, dim=1) for z in logits]
            target = torch.stack([lp.detach().exp() for lp in logp]).mean(0)
            losses = [F.kl_div(lp, target, reduction="batchmean") for lp in logp]
            for o in opts:
                o.zero_grad(set_to_none=True)
            (torch.stack(losses).sum() * t2).backward()
            for o in opts:
                o.step()
            kls.append(float(torch.stack(losses).mean().detach()))
    finally:
        finite = []
        with torch.no_grad():
            for m, s, b, w in zip(models, saved, buffers, was):
                ok = all(bool(torch.isfinite(p).all()) for p in m.parameters())
                if not ok:
                    for n, p in m.named_parameters():
                        p.copy_(s[n])
                state = m.state_dict()
                for n, t in b.items():
                    state[n].copy_(t)
                m.train(w)
                finite.append(ok)
    return kls, finite


def merge_tier_models(global_model: nn.Module, tiers: Sequence[TierModel]) -> None:
    """Write the tier models into ``global_model`` in place: each element the sample-weighted
    mean over the tiers holding it; elements no tier holds unchanged."""
    num, den = _buffers(global_model)
    state = global_model.state_dict()
    with torch.no_grad():
        for tier in tiers:
            sub = tier.model.state_dict()
            for name in tier.plan.held_shapes():
                tier.plan.scatter_add(name, sub[name], state[name], num[name], den[name], float(tier.num_samples))
    finalize(global_model, num, den)


def fedtsa_aggregate(global_model: nn.Module, updates: Sequence[Update], *,
                     server_data: ServerDataSource | None = None, temperature: float = 3.0,
                     distill_steps: int = 20, lr: float = 0.01, batch_size: int = 64, momentum: float = 0.9,
                     rng: RngLike = None, stage2: bool = True) -> tuple[nn.Module, FedTSAReport]:
    """FedTSA aggregation (see the module docstring); returns the model and a report."""
    validate_updates(global_model, updates, "fedtsa", STRUCTURED_STRATEGIES)
    _check_options(temperature, distill_steps, lr, batch_size, momentum, server_data)
    gen = as_generator(rng)
    report = FedTSAReport()
    t0 = time.perf_counter()
    tiers = stage1_tier_models(global_model, updates)
    report.stage1_seconds = time.perf_counter() - t0
    report.tiers = [{"ratio": t.plan.ratio, "kept_fraction": t.plan.kept_fraction, "clients": t.clients,
                     "samples": t.num_samples} for t in tiers]
    if stage2 and server_data is not None:
        t1 = time.perf_counter()
        models = [t.model for t in tiers]
        if len(models) < 2:
            log.info("fedtsa: one tier this round, stage 2 (mutual learning) skipped")
        else:
            # seed torch from rng so dropout etc. in the tier models is reproducible
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(gen.integers(0, 2**62)))
                batches = server_data.batches(models, distill_steps, batch_size, gen)
                kls, finite = mutual_learning(models, batches, temperature=float(temperature), lr=float(lr),
                                              momentum=float(momentum))
            report.stage2 = True
            report.distill_steps = len(kls)
            if kls:
                report.kl_first, report.kl_last = kls[0], kls[-1]
            report.fallback_tiers = sum(not ok for ok in finite)
            if report.fallback_tiers:
                log.warning("fedtsa: mutual learning made %d tier model(s) non-finite; their stage-1 weights "
                            "were kept (lower lr?)", report.fallback_tiers)
        report.stage2_seconds = time.perf_counter() - t1
    merge_tier_models(global_model, tiers)
    return global_model, report


def fedtsa(global_model: nn.Module, updates: Sequence[Update], *,
           server_data: ServerDataSource | None = None, temperature: float = 3.0, distill_steps: int = 20,
           lr: float = 0.01, batch_size: int = 64, momentum: float = 0.9, rng: RngLike = None,
           stage2: bool = True) -> nn.Module:
    """The ``"fedtsa"`` aggregation rule: ``aggregate(global_model, updates, "fedtsa", **options)``.

    Without ``server_data`` (or with ``stage2=False``) only stage 1 and the merge run.
    """
    model, _ = fedtsa_aggregate(global_model, updates, server_data=server_data, temperature=temperature,
                                distill_steps=distill_steps, lr=lr, batch_size=batch_size, momentum=momentum,
                                rng=rng, stage2=stage2)
    return model

