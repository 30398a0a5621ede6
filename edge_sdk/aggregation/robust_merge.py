"""The merge path of every strategy: checks, sample weights, outliers, a rule, DP, commit.

:func:`robust_values` computes the new value of every global tensor some client holds from
a round's (checked, de-duplicated) updates:

1. one pass over the changes, tensor by tensor, cut into blocks of coordinates with the
   same holders (:mod:`edge_sdk.aggregation.coverage`): each tier's Gram matrix of changes
   (the L2 norm of each client's change over all float coordinates it holds on its
   diagonal) and the fraction ``f`` of the model each client holds;
2. per-tier outlier checks on those Gram matrices (:mod:`edge_sdk.aggregation.outliers`)
   refuse or scale updates;
3. sample weights by policy (:mod:`edge_sdk.aggregation.weights`);
4. per block, per chunk of coordinates: the rule's statistic over the holders (a dense
   block's rows are exactly its coordinates' holders; in a NaN block NaN marks a client
   that does not hold a coordinate), or under DP the clipped sum plus Gaussian noise over
   the holder count (:mod:`edge_sdk.privacy.mechanism`);
5. a coordinate with fewer holders than the rule needs falls back to the *clipped mean*
   (each holder's change clipped to the round's tier-scaled bound, see
   :class:`~edge_sdk.aggregation.robust.clipped_mean.ClippedMean`), and the fraction of the
   model that fell back is reported;
6. every new value is checked finite before anything is written; otherwise the update with
   the largest change in that tensor is named and the model is kept.

Integer tensors (BatchNorm's batch counters) take the weighted mean, rounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk.aggregation.coverage import Block, Coverage
from edge_sdk.aggregation.outliers import TierStats, find_outliers, tier_members
from edge_sdk.aggregation.robust import MergeRule, merge_rule
from edge_sdk.aggregation.robust._order import holder_count
from edge_sdk.aggregation.robust.clipped_mean import BOUND_FACTOR
from edge_sdk.aggregation.robust.mean import Mean
from edge_sdk.aggregation.weights import check_policy, resolve_policy, sample_weights
from edge_sdk.errors import InvalidInputError, UpdateRejectedError
from edge_sdk.privacy.mechanism import DPSettings, clip_factor

__all__ = ["MergeSettings", "MergeReport", "robust_values", "commit", "tier_key", "tier_updates", "merge_reports",
           "label_clients"]

_STACK_CACHE_BYTES = 2**30  # keep pass 1's blocks for pass 2 below this size (20 resnet18 stacks: 0.9 GiB)
_CHUNK = 1 << 18  # coordinates per rule call (the order statistics' rows stay in cache)


@dataclass(frozen=True)
class MergeSettings:
    """How a strategy merges. ``rule``: a registered :class:`MergeRule` or its spec
    (``"median"``, ``"trimmed-mean:0.1"``, ``"clipped-mean:5"``). ``sample_weights``: see
    :mod:`edge_sdk.aggregation.weights`. ``outlier_norm`` / ``outlier_cosine``: per-tier
    refusal thresholds (None: 3x the tier's median norm and cosine below 0 for robust
    rules, no check for the plain mean; 0 / -1 turn them off). ``value_bound``: values
    beyond ``value_bound * (1 + max |global tensor|)`` are refused. ``dp``: client-level DP."""

    rule: str | MergeRule = "none"
    sample_weights: str = "auto"
    outlier_norm: float | None = None
    outlier_cosine: float | None = None
    value_bound: float = 1e4
    dp: DPSettings | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", merge_rule(self.rule))
        object.__setattr__(self, "sample_weights", check_policy(self.sample_weights))
        for key, value, low in (("outlier-norm", self.outlier_norm, 0.0), ("outlier-cosine", self.outlier_cosine, -1.0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < low or (low < 0 and value > 1)):
                raise InvalidInputError(f"{key}={value!r} is not accepted; expected "
                                        + ("a number >= 0 (0: off)" if low == 0 else "-1 <= value <= 1 (-1: off)"))
        if isinstance(self.value_bound, bool) or not isinstance(self.value_bound, (int, float)) \
                or not math.isfinite(self.value_bound) or self.value_bound <= 0:
            raise InvalidInputError(f"value_bound={self.value_bound!r} is not accepted; expected a number > 0")
        if self.dp is not None:
            if not isinstance(self.dp, DPSettings):
                raise InvalidInputError(f"dp={self.dp!r} is not accepted; expected edge_sdk.privacy.DPSettings")
            if self.merge_rule.name not in ("none", "clipped-mean"):
                raise InvalidInputError(f"differential privacy needs a mean-type rule (none or clipped-mean), not "
                                        f"{self.merge_rule.name}: the noise is calibrated to a sum's sensitivity")
            # anything that lets one client change how another is counted breaks that sensitivity
            if self.merge_rule.needs_bound and self.merge_rule.param is None:
                raise InvalidInputError("differential privacy with clipped-mean needs an explicit bound "
                                        "(clipped-mean:BOUND): the round's median bound depends on every client")
            if (self.outlier_norm or 0) > 0 or (self.outlier_cosine is not None and self.outlier_cosine > -1):
                raise InvalidInputError("differential privacy cannot be combined with outlier checks: refusing one "
                                        "client on the others' data breaks the noise's sensitivity bound")

    @property
    def merge_rule(self) -> MergeRule:
        return self.rule  # type: ignore[return-value]

    def policy(self) -> str:
        return resolve_policy(self.sample_weights, robust=self.merge_rule.robust, dp=self.dp is not None)

    def outliers(self) -> tuple[float, float | None]:
        """(norm factor, min cosine) in effect; 0 / None when off."""
        on = self.merge_rule.robust and self.dp is None
        norm = (3.0 if on else 0.0) if self.outlier_norm is None else float(self.outlier_norm)
        cos = (0.0 if on else None) if self.outlier_cosine is None else float(self.outlier_cosine)
        return norm, (None if cos is None or cos <= -1 else cos)

    def plain(self) -> bool:
        """True when this is today's merge: the plain mean, trusted counts, no check, no DP."""
        norm, cos = self.outliers()
        return not self.merge_rule.robust and self.dp is None and self.policy() == "trust" and norm == 0 \
            and cos is None

    def describe(self) -> dict[str, Any]:
        norm, cos = self.outliers()
        return {"rule": self.merge_rule.spec, "sample_weights": self.policy(), "outlier_norm": norm,
                "outlier_cosine": cos, "value_bound": self.value_bound,
                "dp": None if self.dp is None else asdict(self.dp)}


@dataclass
class MergeReport:
    """What one merge did; ``to_dict()`` goes to the round's log / Flower summary.
    Update indices refer to the list passed to ``Strategy.merge``."""

    rule: str
    sample_weights: str
    updates: int
    merged: int = 0
    duplicates: list[int] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    down_weighted: list[dict[str, Any]] = field(default_factory=list)
    clipped: list[dict[str, Any]] = field(default_factory=list)
    bound: float | None = None
    fallback_fraction: float = 0.0
    privacy: dict[str, Any] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tier_key(plan: Any) -> float:
    """Clients of one size form a tier (the whole model: 1)."""
    return 1.0 if plan is None else float(plan.ratio)


def _pass_one(cov: Coverage, names: Sequence[str], tiers: list[float]
              ) -> tuple[TierStats, np.ndarray, dict[str, list[Block] | None]]:
    """Each tier's Gram matrix of changes (norms on its diagonal), held counts per client,
    and the blocks of every float tensor (kept for pass 2 up to ``_STACK_CACHE_BYTES``)."""
    n = len(cov.updates)
    held = np.zeros(n)
    members = tier_members(tiers)
    local = {i: a for rows in members.values() for a, i in enumerate(rows)}
    gram = {t: np.zeros((len(rows), len(rows))) for t, rows in members.items()}
    cache: dict[str, list[Block] | None] = {}
    budget = _STACK_CACHE_BYTES
    for name in names:
        blocks = cov.blocks(name)
        for b in blocks or ():
            z = b.values if b.dense else torch.nan_to_num(b.values)
            if b.dense:
                held[b.rows] += z.shape[1]
            else:
                held[b.rows] += holder_count(~torch.isnan(b.values), 1).numpy()
            by_tier: dict[float, list[int]] = {}
            for r, i in enumerate(b.rows):
                by_tier.setdefault(tiers[i], []).append(r)
            for t, rs in by_tier.items():
                zt = z if len(rs) == len(b.rows) else z[rs]
                idx = [local[b.rows[r]] for r in rs]
                gram[t][np.ix_(idx, idx)] += (zt @ zt.T).double().numpy()
        nbytes = sum(b.values.numel() * b.values.element_size() for b in blocks or ())
        if nbytes <= budget:
            cache[name] = blocks
            budget -= nbytes
    return TierStats(members, gram), held, cache


def _combine(rule: MergeRule, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    out = torch.empty(values.shape[1], dtype=values.dtype)
    for a in range(0, values.shape[1], _CHUNK):
        out[a:a + _CHUNK] = rule.combine(values[:, a:a + _CHUNK], weights)
    return out


@dataclass
class _Round:
    """Per kept update (indexed by its position in ``keep``): what pass 2 applies."""

    position: dict[int, int]  # update index -> position in keep
    weights: torch.Tensor  # sample weights under the policy
    clip: torch.Tensor  # the rule's (and DP's) clip factors
    fallback_clip: torch.Tensor  # the tier-scaled bound's clip factors (the fallback rule)
    std: torch.Tensor | None  # client-mode DP: the noise each client added


def _block_values(rule: MergeRule, dp: DPSettings | None, b: Block, rnd: _Round, noise: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """(new change per column, holder count per column, columns that fell back, min noise
    variance) of one block of kept updates."""
    pos = [rnd.position[i] for i in b.rows]
    s = b.values
    if b.dense:
        count = torch.full((s.shape[1],), s.shape[0], dtype=torch.int64)
    else:
        count = holder_count(~torch.isnan(s), 0)
    weights = rnd.weights[pos]
    min_var = math.inf
    if dp is not None:
        z = (s if b.dense else torch.nan_to_num(s)).double() * rnd.clip[pos][:, None]
        sums = z.sum(0)
        if noise is not None:
            sums += noise
        if rnd.std is not None:
            var2 = (rnd.std[pos] ** 2)
            var = var2.sum().expand(s.shape[1]) if b.dense else ((~torch.isnan(s)).double() * var2[:, None]).sum(0)
            held = count > 0
            if bool(held.any()):
                min_var = float(var[held].min())
        return sums / count.clamp_min(1).double(), count, 0, min_var
    src = s * rnd.clip[pos][:, None].to(s.dtype) if rule.needs_bound else s
    need = rule.min_holders()
    if b.dense and s.shape[0] < need:  # every column falls back
        return Mean().combine(s * rnd.fallback_clip[pos][:, None].to(s.dtype), weights), count, s.shape[1], min_var
    val = _combine(rule, src, weights)
    n_fb = 0
    if need > 1 and not b.dense:
        fb = (count > 0) & (count < need)
        n_fb = int(fb.sum())
        if n_fb:
            cols = torch.nonzero(fb).reshape(-1)
            clipped = s[:, cols] * rnd.fallback_clip[pos][:, None].to(s.dtype)
            val[cols] = Mean().combine(clipped, weights).to(val.dtype)
    return val, count, n_fb, min_var


def robust_values(state: dict[str, torch.Tensor], updates: Sequence[Any], settings: MergeSettings, *,
                  generator: torch.Generator | None = None, client_std: Sequence[float] | None = None,
                  index: Sequence[int] | None = None) -> tuple[dict[str, torch.Tensor], MergeReport]:
    """New values of every global tensor some update holds (see the module docstring).

    ``updates`` are validated and de-duplicated; ``index`` maps them to the indices the
    report uses. ``client_std``: client-mode DP, the noise each client added (for the
    effective noise multiplier). Raises UpdateRejectedError when a result is not finite
    (naming the update); nothing is written here."""
    t0 = time.perf_counter()
    rule = settings.merge_rule
    policy = settings.policy()
    index = list(range(len(updates))) if index is None else list(index)
    report = MergeReport(rule=rule.spec, sample_weights=policy, updates=len(updates))
    dp = settings.dp
    float_names = [n for n, t in state.items() if t.is_floating_point()]
    total = sum(state[n].numel() for n in float_names)
    cov = Coverage(updates, state)
    tiers = [tier_key(u.plan) for u in updates]
    norm_k, min_cos = settings.outliers()
    stats, held, cache = _pass_one(cov, float_names, tiers)
    norms = np.sqrt(np.maximum(stats.squared_norms(len(updates)), 0.0))
    frac = held / max(total, 1)

    findings = find_outliers(stats, norm_k, min_cos) if (norm_k > 0 or min_cos is not None) else []
    out_idx = {r["update"] for r in findings}
    for r in findings:
        r["update"] = index[r["update"]]
    report.refused = findings
    keep = [i for i in range(len(updates)) if i not in out_idx]
    report.merged = len(keep)

    counts = [updates[i].num_samples for i in keep]
    w = sample_weights(counts, policy)
    report.down_weighted = [{"update": index[i], "reported": int(c), "weight": float(x),
                             "reason": f"sample count capped ({policy})"}
                            for i, c, x in zip(keep, counts, w) if policy.startswith("cap") and x < c]

    # tier-scaled bound (clipped-mean, and the fallback of order statistics)
    bound = _bound(rule, [norms[i] / math.sqrt(frac[i]) for i in keep if frac[i] > 0])
    bound_clip = [clip_factor(norms[i], bound * math.sqrt(frac[i])) for i in keep]
    report.bound = bound
    if dp is not None and dp.mode == "server":
        dp_clip = [clip_factor(norms[i], dp.clip) for i in keep]
        factors = [min(a, b) for a, b in zip(dp_clip, bound_clip)] if rule.needs_bound else dp_clip
    elif rule.needs_bound:
        factors = bound_clip
    else:
        factors = [1.0] * len(keep)
    report.clipped = [{"update": index[i], "norm": float(norms[i]), "factor": float(c)}
                      for i, c in zip(keep, factors) if c < 1.0]
    rnd = _Round(position={i: k for k, i in enumerate(keep)},
                 weights=torch.as_tensor(w, dtype=torch.float64),
                 clip=torch.as_tensor(factors, dtype=torch.float64),
                 fallback_clip=torch.as_tensor(bound_clip, dtype=torch.float64),
                 std=None if client_std is None else torch.as_tensor([client_std[i] for i in keep],
                                                                     dtype=torch.float64))

    new: dict[str, torch.Tensor] = {}
    fallback = 0
    held_total = 0
    min_var = math.inf
    weights_all = rnd.weights
    for name, target in state.items():
        flat = target.reshape(-1)
        if not target.is_floating_point():  # integer counters: the weighted mean, rounded
            s = cov.stack(name, keep, torch.float64)
            if s is None:
                continue
            where = holder_count(~torch.isnan(s), 0) > 0
            val = Mean().combine(s, weights_all)
            result = (flat.to(val.dtype) + torch.where(where, val, torch.zeros((), dtype=val.dtype))).round()
            new[name] = torch.where(where, result.to(target.dtype), flat).reshape(target.shape)
            continue
        blocks = cache[name] if name in cache else cov.blocks(name)
        if blocks is None:
            continue  # no client holds it
        noise = None
        if dp is not None and dp.mode == "server" and dp.noise > 0:  # one draw per tensor, as the sums
            noise = torch.randn(flat.numel(), generator=generator, dtype=torch.float64) * (dp.noise * dp.clip)
        val = torch.zeros(flat.numel(), dtype=torch.float64 if dp is not None else flat.dtype)
        where = torch.zeros(flat.numel(), dtype=torch.bool)
        for block in blocks:
            b = block if len(keep) == len(updates) else block.subset(keep)
            if b is None:
                continue
            part_noise = None if noise is None else (noise if b.cols is None else noise[b.cols])
            v, count, n_fb, mv = _block_values(rule, dp, b, rnd, part_noise)
            fallback += n_fb
            min_var = min(min_var, mv)
            if b.cols is None:
                val, where = v.to(val.dtype), count > 0
            else:
                val[b.cols] = v.to(val.dtype)
                where[b.cols] = count > 0
        held_total += int(where.sum())
        result = flat.to(val.dtype) + torch.where(where, val, torch.zeros((), dtype=val.dtype))
        result = torch.where(where, result.to(target.dtype), flat).reshape(target.shape)
        if dp is not None and name.endswith("running_var"):
            # noise can push a merged variance below 0, and a negative variance makes every later
            # forward pass NaN; clamping is post-processing of the noised release (the DP
            # guarantee is unchanged)
            result = result.clamp(min=0.0)
        if not bool(torch.isfinite(result).all()):
            raise UpdateRejectedError(f"merge ({rule.spec}): {name!r} would become non-finite; update "
                                      f"{index[_largest(blocks, keep)]} holds its largest change; the global "
                                      "model is kept")
        new[name] = result
    report.fallback_fraction = fallback / held_total if held_total else 0.0
    if dp is not None:
        if dp.mode == "server":
            effective = dp.noise
        else:
            effective = math.sqrt(min_var) / dp.clip if math.isfinite(min_var) else 0.0
        report.privacy = {"mode": dp.mode, "clip": dp.clip, "noise_multiplier": effective}
    report.seconds = time.perf_counter() - t0
    return new, report


def _largest(blocks: list[Block], keep: list[int]) -> int:
    """The kept update with the largest |change| in ``blocks``."""
    best, who = -1.0, keep[0]
    for block in blocks:
        b = block.subset(keep)
        if b is None:
            continue
        peak = torch.nan_to_num(b.values, nan=0.0).abs().amax(1)
        if float(peak.max()) > best:
            best, who = float(peak.max()), b.rows[int(peak.argmax())]
    return who


def _bound(rule: MergeRule, normalised: list[float]) -> float:
    """The full-model clip bound: the rule's explicit one, else ``BOUND_FACTOR`` x the round's
    median of ||change|| / sqrt(held fraction) (see :class:`ClippedMean`)."""
    if rule.needs_bound and rule.param is not None:
        return float(rule.param)
    return BOUND_FACTOR * float(np.median(normalised)) if normalised else 0.0


def commit(global_model: nn.Module, values: dict[str, torch.Tensor]) -> nn.Module:
    """Write checked new values into ``global_model`` (in place)."""
    state = global_model.state_dict()
    with torch.no_grad():
        for name, value in values.items():
            state[name].copy_(value)
    return global_model


def tier_updates(state: dict[str, torch.Tensor], updates: Sequence[Any], settings: MergeSettings, *,
                 generator: torch.Generator | None = None, client_std: Sequence[float] | None = None,
                 index: Sequence[int] | None = None) -> tuple[list[Any], list[MergeReport]]:
    """Robust stage 1 (FedTSA): per group of clients sharing a plan, one update holding the
    rule's values, weighted by the group's sample weights under the policy."""
    from edge_sdk.aggregation._common import group_by_plan
    from edge_sdk.training import Update

    index = list(range(len(updates))) if index is None else list(index)
    position = {id(u): i for i, u in enumerate(updates)}
    merged, reports = [], []
    for plan, members in group_by_plan(list(updates)):
        rows = [position[id(u)] for u in members]
        values, report = robust_values(state, members, settings, generator=generator,
                                       client_std=None if client_std is None else [client_std[i] for i in rows],
                                       index=[index[i] for i in rows])
        refused = {r["update"] for r in report.refused}
        counts = [u.num_samples for u, i in zip(members, rows) if index[i] not in refused]
        weight = max(1, int(round(float(sample_weights(counts, report.sample_weights).sum()))))
        tensors = {n: plan.gather(n, values.get(n, state[n])).clone() for n in plan.held_shapes()}
        merged.append(Update(members[0].strategy, plan, tensors, weight))
        reports.append(report)
    return merged, reports


def merge_reports(reports: Sequence[MergeReport]) -> MergeReport:
    """One report for several partial merges (FedTSA's tiers): lists joined, counts added,
    the largest fallback fraction, the smallest noise multiplier kept."""
    first = reports[0]
    out = MergeReport(rule=first.rule, sample_weights=first.sample_weights, updates=sum(r.updates for r in reports),
                      merged=sum(r.merged for r in reports), seconds=sum(r.seconds for r in reports))
    for r in reports:
        out.refused += r.refused
        out.down_weighted += r.down_weighted
        out.clipped += r.clipped
    bounds = [r.bound for r in reports if r.bound is not None]
    out.bound = max(bounds) if bounds else None
    out.fallback_fraction = max((r.fallback_fraction for r in reports), default=0.0)
    privacy = [r.privacy for r in reports if r.privacy is not None]
    if privacy:
        out.privacy = min(privacy, key=lambda p: p["noise_multiplier"])
    return out


def label_clients(report: dict[str, Any] | None, clients: Sequence[Any]) -> dict[str, Any] | None:
    """A merge report (``to_dict()``) with update indices replaced by the driver's client ids
    (``client`` keys; ``clients[i]`` is the id of update i): simulation client numbers, Flower
    node ids."""
    if report is None:
        return None
    out = dict(report)
    for key in ("refused", "down_weighted", "clipped"):
        out[key] = [{**{k: v for k, v in e.items() if k != "update"}, "client": clients[e["update"]]}
                    for e in report.get(key, [])]
    out["duplicates"] = [clients[i] for i in report.get("duplicates", [])]
    return out
