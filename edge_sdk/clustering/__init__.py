"""Capability clustering: a fleet's reports (or scores) -> tiers -> submodel sizes.

``cluster_capabilities(reports_or_scores, ...) -> Clustering``; see
:mod:`edge_sdk.clustering.core` for the rules (bandwidth, degenerate fleets, tier ratios).
"""

from edge_sdk.clustering.core import (
    DEFAULT_BANDWIDTH,
    DEFAULT_MULTI_BANDWIDTH,
    DEFAULT_PROMINENCE,
    Clustering,
    cluster_capabilities,
)
from edge_sdk.clustering.ladder import DEFAULT_LADDER, parse_ladder, snap_down

__all__ = [
    "DEFAULT_BANDWIDTH",
    "DEFAULT_LADDER",
    "DEFAULT_MULTI_BANDWIDTH",
    "DEFAULT_PROMINENCE",
    "Clustering",
    "cluster_capabilities",
    "parse_ladder",
    "snap_down",
]
