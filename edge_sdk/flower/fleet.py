"""The server's view of the nodes: capability reports, tiers and sizes.

Tiers and their sizes come from :func:`edge_sdk.clustering.cluster_capabilities` over every
report received so far, keyed by Flower node id (two SuperNodes on one machine measure the
same device id). Tier 0 is the weakest. When a node joins later it is queried and the fleet
is clustered again, so it is placed with the nodes of similar capability. A tier whose
ratio is ``None`` (a member's budget fits no size on the ladder) is left out, with a
warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from edge_sdk.profiler import CapabilityReport

log = logging.getLogger(__name__)

__all__ = ["NodeRecord", "Fleet"]


@dataclass
class NodeRecord:
    """One node as the server knows it."""

    node_id: int
    report: CapabilityReport
    hw_profile: str | None
    joined_round: int
    report_source: str = ""
    tier: int | None = None
    ratio: float | None = None

    @property
    def score(self) -> float:
        return float(self.report.capacity.score)


class Fleet:
    """Nodes with reports, and their placement into tiers."""

    def __init__(self, ladder: tuple[float, ...]) -> None:
        self.ladder = tuple(sorted(ladder, reverse=True))
        self.nodes: dict[int, NodeRecord] = {}
        self.tier_ratios: dict[int, float | None] = {}
        self.clustering: dict[str, Any] = {}

    def add(self, record: NodeRecord) -> None:
        self.nodes[record.node_id] = record

    def __contains__(self, node_id: int) -> bool:
        return node_id in self.nodes

    def placed(self) -> list[int]:
        """Nodes with a size (tiers whose ratio is ``None`` are left out)."""
        return sorted(n for n, r in self.nodes.items() if r.ratio is not None)

    def assign(self) -> dict[int, tuple[int | None, int]]:
        """Cluster every node's report; returns node -> (old tier, new tier) for the nodes
        placed for the first time or moved."""
        from edge_sdk.clustering import cluster_capabilities

        if not self.nodes:
            return {}
        ids = sorted(self.nodes)
        result = cluster_capabilities({str(n): self.nodes[n].report for n in ids}, ladder=self.ladder)
        self.clustering = result.to_dict()
        self.tier_ratios = {k: (None if r is None else float(r)) for k, r in enumerate(result.ratios)}
        changes = {}
        for node in ids:
            rec = self.nodes[node]
            old, old_ratio = rec.tier, rec.ratio
            rec.tier = result.tier_of(str(node))
            rec.ratio = self.tier_ratios[rec.tier]
            if rec.ratio is None:
                log.warning("node %d: tier %d has no size on the ladder %s (a member's budget fits none); "
                            "it is left out", node, rec.tier, list(self.ladder))
            if old != rec.tier:
                changes[node] = (old, rec.tier, old_ratio)
        return changes

    def tiers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for n in self.placed():
            out.setdefault(int(self.nodes[n].tier), []).append(n)  # type: ignore[arg-type]
        return out

    def describe(self) -> dict[str, Any]:
        return {
            str(n): {
                "hw_profile": r.hw_profile,
                "device_id": r.report.device_id,
                "score": r.score,
                "log_score": math.log(r.score) if r.score > 0 else None,
                "max_ratio": r.report.capacity.max_ratio,
                "tier": r.tier,
                "ratio": r.ratio,
                "joined_round": r.joined_round,
                "report_source": r.report_source,
            }
            for n, r in sorted(self.nodes.items())
        }
