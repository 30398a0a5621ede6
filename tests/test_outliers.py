"""Per-tier outlier checks on Gram matrices: hand-built tiers where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.aggregation.outliers import TierStats, find_outliers


def _stats(changes: dict[float, list[np.ndarray]]) -> TierStats:
    members, gram, k = {}, {}, 0
    for tier, rows in changes.items():
        z = np.stack(rows)
        members[tier] = list(range(k, k + len(rows)))
        gram[tier] = z @ z.T
        k += len(rows)
    return TierStats(members, gram)


def _non_iid_tier(m: int, flipped: set[int], seed: int = 0, dim: int = 400) -> list[np.ndarray]:
    """m changes sharing a small common direction under large client-specific parts (what
    skewed labels give); the ones in ``flipped`` negated."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim)
    rows = [common + 3.0 * rng.standard_normal(dim) for _ in range(m)]
    return [-r if i in flipped else r for i, r in enumerate(rows)]


def test_negated_change_refused_where_the_coordinate_median_would_not_catch_it():
    rows = _non_iid_tier(5, {0})
    stats = _stats({1.0: rows})
    found = find_outliers(stats, 3.0, 0.0)
    assert [(f["update"], f["action"]) for f in found] == [(0, "refused")]
    assert found[0]["cosine"] < 0
    # the old reference, the tier's coordinate-wise median, agrees with the negated change
    median = np.median(np.stack(rows), axis=0)
    assert rows[0] @ median > 0


def test_honest_non_iid_tier_keeps_everyone():
    for seed in range(5):
        assert find_outliers(_stats({1.0: _non_iid_tier(5, set(), seed)}), 3.0, 0.0) == []


def test_at_most_a_minority_refused_and_recomputed_without_the_worst():
    # 3 of 7 negated: all three refused (cosines recomputed after each refusal) ...
    found = find_outliers(_stats({1.0: _non_iid_tier(7, {1, 3, 5}, dim=4000)}), 0.0, 0.0)
    assert sorted(f["update"] for f in found if f["action"] == "refused") == [1, 3, 5]
    # ... but never more than (m - 1) // 2: 4 of 7 negated leaves at most 3 refused
    found = find_outliers(_stats({1.0: _non_iid_tier(7, {0, 1, 2, 3}, dim=4000)}), 0.0, 0.0)
    assert len([f for f in found if f["action"] == "refused"]) <= 3


def test_boosted_change_refused():
    rows = _non_iid_tier(5, set())
    rows[2] = rows[2] * 50.0  # boosted
    found = find_outliers(_stats({1.0: rows}), 3.0, 0.0)
    assert [(f["update"], f["action"]) for f in found] == [(2, "refused")] and "norm" in found[0]["reason"]
    assert find_outliers(_stats({1.0: rows}), 0.0, 0.0) == []  # norm check off: its direction is honest


def test_norm_outlier_left_out_of_the_reference():
    rows = _non_iid_tier(5, {4})
    rows[1] = -rows[1] * 50.0  # boosted and negated: refused for its norm, not in anyone's reference
    found = {f["update"]: f["action"] for f in find_outliers(_stats({1.0: rows}), 3.0, 0.0)}
    assert found == {1: "refused", 4: "refused"}


def test_tiers_checked_separately_and_small_tiers_not_at_all():
    stats = _stats({1.0: _non_iid_tier(5, {3}, seed=1), 0.25: _non_iid_tier(2, {0}, seed=2, dim=50)})
    found = find_outliers(stats, 3.0, 0.0)
    assert [(f["update"], f["tier"]) for f in found] == [(3, 1.0)]


def test_checks_off():
    stats = _stats({1.0: _non_iid_tier(5, {0})})
    assert find_outliers(stats, 0.0, None) == []
