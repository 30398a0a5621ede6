"""``cluster_capabilities``: group a fleet into capability tiers and give each tier a size.

Tiers are numbered from the **weakest (0)** upwards, so ``ratios`` grow with the tier index.

Bandwidth (score mode). The KDE runs on ``ln(score)`` with a fixed kernel standard deviation of
``DEFAULT_BANDWIDTH = 0.1`` natural-log units (a 10.5 % change of score) and a valley must be
``DEFAULT_PROMINENCE = 1`` nat deep (the density drops by a factor e between two tiers' peaks).
Why fixed, in log units: device classes differ by *factors* of throughput (roughly 2-4x between
an MCU-class board, a Pi 4, a Pi 5, a Jetson and an x86 gateway), independent of how many classes
a fleet holds; a rule scaled to the fleet's spread (Scott, Silverman, a fraction of the IQR)
grows with the number of classes and their range, and smears neighbouring classes together
(Scott's rule is 2-8x wider on a 5-class fleet of 10,000 down to 20 clients). With these
defaults a lone client about 1.6x or more above (or below) its nearest neighbour is a tier of
its own. Measured on synthetic fleets (3-6 classes, 20-10,000 clients, balanced and
unbalanced; bench/bench_clustering.md): classes whose scores spread log-normally with
sigma = 0.05 are separated from neighbours 2x away; sigma = 0.1 or 0.15 needs 2.5x (at 2x,
sigma = 0.1 still works in 98 % of fleets, failing when a 1-3 client class sits next to a
bigger one); sigma = 0.2 needs more than 4x. ``bandwidth`` takes a
positive number (same units) or ``"scott"`` / ``"silverman"``.

Multi-feature mode (``features="multi"``, reports only): ln GFLOP/s (``device.gflops_fp32``), ln
usable memory and ln train-step latency (dropped with a warning when a report lacks it), clustered
by Gaussian mean shift with ``DEFAULT_MULTI_BANDWIDTH = 0.15`` ln units and the same 1-nat
prominence rule between modes. The features are *not* z-scored by default (``standardize=True``
does it): they already share a unit, and z-scoring turns a feature that differs only by noise
(e.g. the same memory on every device) into a full-weight axis that splits tiers.

Degenerate fleets:

* no clients: :class:`ClusteringError`;
* one client, or all scores identical: one tier (handled before the KDE, which would be
  singular);
* two clients: two tiers when their scores differ by more than ~1.45x, else one;
* extreme outliers: a client far from every other (about 1.6x or more from its nearest
  neighbour) is a tier of its own; it never joins a far tier and never breaks the KDE (gaps wider
  than 12 bandwidths are cut directly);
* a report with no usable ``capacity.score``, or a non-positive / non-finite score:
  :class:`ClusteringError` naming the client; a report without a model profile or budgets gets its
  ratio from the score rule below.

Tier ratio (the submodel size given to every member of a tier) = the smallest of its members'
allowed sizes, where a member's allowed size is

* **budget rule** (report with a model profile and a latency or memory budget): its
  ``capacity.max_ratio`` snapped *down* to the ladder; ``None`` when nothing on the ladder fits
  (then the whole tier gets ``None`` and a warning: the server must leave those clients out or
  use a ladder with a smaller size);
* **score rule** (raw scores, or reports without profile/budget): ``ladder[0] * score / ref``
  snapped down to the ladder, where ``ref`` is the score of the weakest member of the strongest
  tier. Training FLOPs scale about linearly with the size, so every client then needs about the
  same time for its round as the slowest client of the top tier needs for ``ladder[0]`` (the
  round waits for that client anyway). The strongest tier thus gets ``ladder[0]``; a client
  below the smallest size gets the smallest size, with a warning (there is no hard budget to
  break).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import norm

from edge_sdk.clustering.inputs import Fleet, fleet_from, multi_features
from edge_sdk.clustering.kde import cut_1d, rule_bandwidth
from edge_sdk.clustering.ladder import DEFAULT_LADDER, LadderLike, parse_ladder, snap_down
from edge_sdk.clustering.meanshift import mean_shift
from edge_sdk.errors import InvalidInputError, SchemaError

logger = logging.getLogger(__name__)

#: Kernel standard deviation of the 1-D KDE, in natural-log units of the score.
DEFAULT_BANDWIDTH = 0.1
#: Kernel standard deviation of the multi-feature mean shift, in natural-log units (or in
#: standard deviations with ``standardize=True``).
DEFAULT_MULTI_BANDWIDTH = 0.15
#: Smallest log-density drop (nats) between two tiers' peaks.
DEFAULT_PROMINENCE = 1.0

SCHEMA_KIND = "edge-sdk/clustering"
SCHEMA_VERSION = 1
FEATURES = ("score", "multi")


@dataclass(eq=False)
class Clustering:
    """Capability tiers of a fleet. Tier 0 is the weakest.

    Per client (same order as the input): ``client_ids``, ``scores`` (capacity score,
    GFLOP/s for reports), ``labels`` (tier index). Per tier: ``members`` (client ids),
    ``ratios`` (submodel size, ``None`` when nothing fits), ``ratio_basis`` (``"budget"``,
    ``"score"`` or ``"mixed"``), ``score_ranges`` ((min, max) score). ``cuts``: the scores at
    which tiers are cut (ascending, ``len = tiers - 1``; empty in multi-feature mode).
    ``density``: the 1-D log-density as ``(ln score grid, log density)`` for plotting (not
    serialised).
    """

    client_ids: list[str]
    scores: np.ndarray
    labels: np.ndarray
    members: list[list[str]]
    ratios: list[float | None]
    ratio_basis: list[str]
    score_ranges: list[tuple[float, float]]
    cuts: list[float]
    bandwidth: float
    bandwidth_rule: str
    prominence: float
    features: list[str]
    ladder: tuple[float, ...]
    method: str
    warnings: list[str] = field(default_factory=list)
    density: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def n_tiers(self) -> int:
        return len(self.members)

    def tier_of(self, client_id: str) -> int:
        """The tier index of a client; :class:`InvalidInputError` for an unknown id."""
        try:
            return int(self.labels[self.client_ids.index(str(client_id))])
        except ValueError:
            raise InvalidInputError(f"client {client_id!r} is not in this clustering") from None

    def ratio_of(self, client_id: str) -> float | None:
        """The submodel size given to a client (its tier's ratio)."""
        return self.ratios[self.tier_of(client_id)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document (floats, ints, strings and lists only)."""
        return {
            "kind": SCHEMA_KIND,
            "schema_version": SCHEMA_VERSION,
            "method": self.method,
            "features": list(self.features),
            "bandwidth": float(self.bandwidth),
            "bandwidth_rule": self.bandwidth_rule,
            "prominence": float(self.prominence),
            "ladder": [float(v) for v in self.ladder],
            "cuts": [float(v) for v in self.cuts],
            "tiers": [
                {
                    "tier": k,
                    "size": len(self.members[k]),
                    "ratio": None if self.ratios[k] is None else float(self.ratios[k]),
                    "ratio_basis": self.ratio_basis[k],
                    "score_min": float(self.score_ranges[k][0]),
                    "score_max": float(self.score_ranges[k][1]),
                    "members": list(self.members[k]),
                }
                for k in range(self.n_tiers)
            ],
            "clients": [
                {"id": cid, "score": float(s), "tier": int(t)}
                for cid, s, t in zip(self.client_ids, self.scores, self.labels)
            ],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "clustering") -> "Clustering":
        """Rebuild a clustering from :meth:`to_dict` output (the plot density is not kept)."""
        if not isinstance(data, Mapping) or data.get("kind") != SCHEMA_KIND:
            raise SchemaError(f"{where}: not an edge-sdk clustering document (kind {SCHEMA_KIND!r})")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(
                f"{where}: schema_version {data.get('schema_version')!r} is not supported (this release reads 1)"
            )
        try:
            tiers = sorted(data["tiers"], key=lambda t: t["tier"])
            clients = data["clients"]
            return cls(
                client_ids=[str(c["id"]) for c in clients],
                scores=np.asarray([float(c["score"]) for c in clients], dtype=float),
                labels=np.asarray([int(c["tier"]) for c in clients], dtype=np.int64),
                members=[[str(m) for m in t["members"]] for t in tiers],
                ratios=[None if t["ratio"] is None else float(t["ratio"]) for t in tiers],
                ratio_basis=[str(t["ratio_basis"]) for t in tiers],
                score_ranges=[(float(t["score_min"]), float(t["score_max"])) for t in tiers],
                cuts=[float(v) for v in data["cuts"]],
                bandwidth=float(data["bandwidth"]),
                bandwidth_rule=str(data["bandwidth_rule"]),
                prominence=float(data["prominence"]),
                features=[str(f) for f in data["features"]],
                ladder=tuple(float(v) for v in data["ladder"]),
                method=str(data["method"]),
                warnings=[str(w) for w in data.get("warnings", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{where}: malformed clustering document ({exc})") from None


def cluster_capabilities(
    reports_or_scores: Sequence[Any] | Mapping[str, float],
    *,
    ladder: LadderLike = DEFAULT_LADDER,
    features: str = "score",
    bandwidth: float | str | None = None,
    prominence: float = DEFAULT_PROMINENCE,
    standardize: bool = False,
) -> Clustering:
    """Group clients into capability tiers and give each tier a submodel size.

    ``reports_or_scores``: a sequence of :class:`~edge_sdk.profiler.report.CapabilityReport`
    (ids = ``device_id``), a sequence of positive scores (ids ``"0"``, ``"1"``...), or a mapping
    client id -> score. ``features``: ``"score"`` (1-D KDE on ``ln(capacity score)``, cut at the
    valleys of its log-density) or ``"multi"`` (reports only: ln GFLOP/s, ln memory and ln
    train-step latency, clustered by mean shift). ``bandwidth``: kernel standard deviation in
    ``ln`` units (default :data:`DEFAULT_BANDWIDTH` in score mode,
    :data:`DEFAULT_MULTI_BANDWIDTH` in multi mode), or ``"scott"`` / ``"silverman"`` (score
    mode). ``prominence``: the smallest log-density drop, in nats, between two tiers.
    ``standardize`` (multi mode): divide each ln feature by its standard deviation across the
    fleet first (the bandwidth is then in standard deviations). Off by default: ln features are
    already in the same unit (a factor), and z-scoring blows a feature that only carries noise
    (e.g. the same memory on every device) up to the weight of a real one and splits tiers
    along it. See the module docstring for the rules and the degenerate fleets.
    """
    sizes = parse_ladder(ladder)
    if features not in FEATURES:
        raise InvalidInputError(f"features {features!r} is not known; use one of: {', '.join(FEATURES)}")
    if isinstance(prominence, bool) or not isinstance(prominence, (int, float)) or not (
        math.isfinite(prominence) and prominence > 0
    ):
        raise InvalidInputError(f"prominence {prominence!r} must be a positive number of nats")
    fleet = fleet_from(reports_or_scores)
    scores = fleet.scores
    warnings: list[str] = []
    density = None
    cuts: list[float] = []

    if features == "score":
        x = np.log(scores)
        h, rule = _bandwidth_1d(bandwidth, x)
        names = ["log_score"]
        if x.size == 1 or np.ptp(x) == 0.0:
            labels = np.zeros(x.size, dtype=np.int64)
            method = "single-client" if x.size == 1 else "identical-scores"
            grid = np.linspace(x[0] - 4 * h, x[0] + 4 * h, 65)
            density = (grid, norm.logpdf(grid, loc=x[0], scale=h))
        else:
            result = cut_1d(x, h, prominence)
            log_cuts = np.asarray(result.cuts, dtype=float)
            labels = np.searchsorted(log_cuts, x, side="right").astype(np.int64)
            labels, log_cuts = _drop_empty_1d(labels, log_cuts)
            cuts = [float(v) for v in np.exp(log_cuts)]
            method = "kde"
            density = (result.grid, result.log_density)
    else:
        X, names, notes = multi_features(fleet)
        warnings.extend(notes)
        h, rule = _bandwidth_multi(bandwidth)
        spread = X.std(axis=0)
        keep = spread > 1e-12 * np.maximum(1.0, np.abs(X).max(axis=0))
        for name, kept in zip(names, keep):
            if not kept:
                warnings.append(f"feature {name} is the same for every client and was left out")
        names = [n for n, k in zip(names, keep) if k]
        if X.shape[0] == 1 or not keep.any():
            labels = np.zeros(X.shape[0], dtype=np.int64)
            method = "single-client" if X.shape[0] == 1 else "identical-features"
        else:
            Z = X[:, keep] - X[:, keep].mean(axis=0)
            if standardize:
                Z = Z / spread[keep]
                names = [f"{n} (standardised)" for n in names]
            labels = _order_by_score(mean_shift(Z, h, prominence).labels, scores)
            method = "mean-shift"

    n_tiers = int(labels.max()) + 1
    ids = fleet.client_ids
    members = [[ids[i] for i in np.flatnonzero(labels == k)] for k in range(n_tiers)]
    ranges = [(float(scores[labels == k].min()), float(scores[labels == k].max())) for k in range(n_tiers)]
    ratios, basis, notes = _tier_ratios(fleet, labels, sizes)
    warnings.extend(notes)
    for note in warnings:
        logger.warning(note)
    return Clustering(
        client_ids=list(ids),
        scores=scores,
        labels=labels,
        members=members,
        ratios=ratios,
        ratio_basis=basis,
        score_ranges=ranges,
        cuts=cuts,
        bandwidth=float(h),
        bandwidth_rule=rule,
        prominence=float(prominence),
        features=names,
        ladder=sizes,
        method=method,
        warnings=warnings,
        density=density,
    )


def _bandwidth_1d(bandwidth: float | str | None, x: np.ndarray) -> tuple[float, str]:
    if bandwidth is None:
        return DEFAULT_BANDWIDTH, "default"
    if isinstance(bandwidth, str):
        rule = bandwidth.strip().lower()
        if rule not in ("scott", "silverman"):
            raise InvalidInputError(
                f"bandwidth {bandwidth!r} is not known; give a positive number (ln units) or scott / silverman"
            )
        h = rule_bandwidth(x, rule) if x.size > 1 else 0.0
        # One client or identical scores: the rule gives 0; any width draws the same single tier.
        return (h if h > 0 else DEFAULT_BANDWIDTH), rule
    return _positive_bandwidth(bandwidth), "given"


def _bandwidth_multi(bandwidth: float | str | None) -> tuple[float, str]:
    if bandwidth is None:
        return DEFAULT_MULTI_BANDWIDTH, "default"
    if isinstance(bandwidth, str):
        raise InvalidInputError(
            f"bandwidth {bandwidth!r}: features='multi' needs a positive number (ln units)"
        )
    return _positive_bandwidth(bandwidth), "given"


def _positive_bandwidth(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
        math.isfinite(float(value)) and float(value) > 0
    ):
        raise InvalidInputError(f"bandwidth {value!r} must be a positive finite number")
    return float(value)


def _drop_empty_1d(labels: np.ndarray, log_cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove cuts that bound an empty interval (a KDE peak between clients), renumbering."""
    counts = np.bincount(labels, minlength=log_cuts.size + 1)
    if counts.all():
        return labels, log_cuts
    keep_cut = []
    seen_nonempty = False
    for k in range(log_cuts.size):
        seen_nonempty = seen_nonempty or counts[k] > 0
        # Keep the cut above tier k when something is below it and tier k+1 is not empty.
        keep_cut.append(seen_nonempty and counts[k + 1] > 0)
    log_cuts = log_cuts[np.asarray(keep_cut, dtype=bool)]
    return np.unique(labels, return_inverse=True)[1].astype(np.int64), log_cuts


def _order_by_score(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Renumber cluster labels so that tier 0 has the lowest median score."""
    uniq, labels = np.unique(labels, return_inverse=True)
    medians = np.asarray([np.median(scores[labels == k]) for k in range(uniq.size)])
    order = np.argsort(medians, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels].astype(np.int64)


def _uses_budget(report: Any) -> bool:
    if report is None or getattr(report, "model", None) is None:
        return False
    capacity = report.capacity
    return getattr(capacity, "budget_ms", None) is not None or getattr(capacity, "budget_mb", None) is not None


def _tier_ratios(
    fleet: Fleet, labels: np.ndarray, ladder: tuple[float, ...]
) -> tuple[list[float | None], list[str], list[str]]:
    scores, ids = fleet.scores, fleet.client_ids
    n_tiers = int(labels.max()) + 1
    ref = float(scores[labels == n_tiers - 1].min())
    # Score rule for everyone (vectorised): ladder[0] * score / ref snapped down; NaN below
    # the smallest size.
    ascending = np.asarray(ladder[::-1])
    share = ladder[0] * scores / ref * (1.0 + 1e-9)
    pos = np.searchsorted(ascending, share, side="right") - 1
    by_score = np.where(pos >= 0, ascending[np.clip(pos, 0, None)], np.nan)
    # Budget rule where a report has a model profile and a budget; NaN when nothing fits.
    budget = np.zeros(scores.size, dtype=bool)
    by_budget = np.full(scores.size, np.nan)
    if fleet.reports is not None:
        for i, report in enumerate(fleet.reports):
            if _uses_budget(report):
                budget[i] = True
                max_ratio = report.capacity.max_ratio
                size = None if max_ratio is None else snap_down(float(max_ratio), ladder)
                by_budget[i] = np.nan if size is None else size

    ratios: list[float | None] = []
    basis: list[str] = []
    warnings: list[str] = []
    for k in range(n_tiers):
        sel = labels == k
        unfit = [ids[i] for i in np.flatnonzero(sel & budget & np.isnan(by_budget))]
        floored = [ids[i] for i in np.flatnonzero(sel & ~budget & np.isnan(by_score))]
        allowed = np.where(budget, by_budget, np.where(np.isnan(by_score), ladder[-1], by_score))[sel]
        if unfit:
            warnings.append(
                f"tier {k}: {_some(unfit)} fit{'s' if len(unfit) == 1 else ''} no size on the ladder "
                f"(capacity.max_ratio below {ladder[-1]:g} or none); the tier gets no ratio"
            )
            ratios.append(None)
        else:
            ratios.append(float(allowed.min()))
        if floored:
            warnings.append(
                f"tier {k}: {_some(floored)} score{'s' if len(floored) == 1 else ''} below {ladder[-1]:g} "
                f"of the reference ({ref:.3g}); given {ladder[-1]:g}, their rounds will be slower"
            )
        n_budget = int((sel & budget).sum())
        basis.append("budget" if n_budget == int(sel.sum()) else "score" if n_budget == 0 else "mixed")
    return ratios, basis, warnings


def _some(ids: list[str], shown: int = 3) -> str:
    """``client 'a'`` or ``5 clients ('a', 'b', 'c', ...)``."""
    if len(ids) == 1:
        return f"client {ids[0]!r}"
    listed = ", ".join(repr(i) for i in ids[:shown])
    return f"{len(ids)} clients ({listed}{', ...' if len(ids) > shown else ''})"
