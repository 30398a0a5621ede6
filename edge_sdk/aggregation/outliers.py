"""Per-tier outlier checks: a change far larger than its tier's, or pointing against it.

Clients of one tier train the same size, so their changes are comparable; across tiers
they are not (a 1/64 client's change is naturally much smaller than a full client's). Each
tier with at least three clients is checked. A change whose norm exceeds ``norm_factor``
times the tier's median norm is scaled down to that median (down-weighted, not refused: a
boosted honest change keeps its direction and its client's data still counts). A change
whose cosine with the tier's median change is below ``min_cosine`` is refused (left out of
this round's merge). Both are listed in the round's report.
The direction compared against is the tier's coordinate-wise median change, not its mean,
so attackers inside a tier cannot drag it; and at most (m - 1) // 2 of a tier's m clients
are refused (the most extreme first), so a majority always remains. A tier of one or two
has no majority to compare against and is not checked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TierStats", "find_outliers"]


@dataclass
class TierStats:
    """Per client: its tier key, the squared norm of its change and its dot product with its
    tier's coordinate-wise median change; per tier: the squared norm of that median."""

    tier: list[float]
    sq: np.ndarray
    dot_ref: np.ndarray
    ref_sq: dict[float, float]


def find_outliers(stats: TierStats, norm_factor: float, min_cosine: float | None,
                  candidates: Sequence[int]) -> list[dict]:
    """Findings among ``candidates`` (client indices): ``{"update", "tier", "action", "reason",
    ...}`` with action ``"refused"`` or ``"scaled"`` (and its ``factor``)."""
    out = []
    by_tier: dict[float, list[int]] = {}
    for i in candidates:
        by_tier.setdefault(stats.tier[i], []).append(i)
    for tier, members in by_tier.items():
        if len(members) < 3:
            continue
        norms = np.sqrt(stats.sq[members])
        median = float(np.median(norms))
        ref = math.sqrt(max(stats.ref_sq[tier], 0.0))
        flagged = []
        for i, norm in zip(members, norms):
            entry = {"update": i, "tier": tier, "norm": float(norm), "tier_median_norm": median}
            if norm_factor > 0 and median > 0 and norm > norm_factor * median:
                out.append({**entry, "action": "scaled", "factor": median / float(norm),
                            "reason": f"norm {norm / median:.2g}x the tier's median: scaled to it"})
                continue
            if min_cosine is None or norm == 0 or ref == 0:
                continue
            cosine = float(stats.dot_ref[i] / (norm * ref))
            if cosine < min_cosine:
                flagged.append((cosine, {**entry, "cosine": cosine, "action": "refused",
                                         "reason": f"cosine {cosine:.2f} with the tier's median change"}))
        flagged.sort(key=lambda f: f[0])
        out.extend(e for _, e in flagged[:(len(members) - 1) // 2])
    return out
