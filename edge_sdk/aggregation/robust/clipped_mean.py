"""Norm-bounded mean: every change clipped to a bound scaled to the share of the model held."""

from __future__ import annotations

import torch

from edge_sdk.aggregation.robust._base import MergeRule, _positive_param, register_merge_rule
from edge_sdk.aggregation.robust.mean import Mean

__all__ = ["ClippedMean"]


@register_merge_rule
class ClippedMean(MergeRule):
    """Weighted mean of changes each clipped to ``BOUND * sqrt(f)``, ``f`` the fraction of the
    model's coordinates the client holds.

    Why sqrt(f): with per-coordinate changes of similar size s, a client holding f*N of N
    coordinates has ||change|| ~ s*sqrt(f*N) = sqrt(f) * (s*sqrt(N)), so a full-model bound
    B corresponds to sqrt(f)*B for it. Judged against B itself, a 1/16 client could send 4x
    its honest norm unclipped. Without ``:BOUND`` the bound is the round's median of
    ||change_i|| / sqrt(f_i) (robust while fewer than half the clients attack).
    The clipping happens before :meth:`combine` (the merge path applies the factors).
    """

    name = "clipped-mean"
    summary = "mean of changes clipped to BOUND*sqrt(held fraction) (default bound: the round's median)"
    param_help = "full-model L2 bound of a change (default: the round's median normalised norm)"
    weighted = True
    needs_bound = True

    def check_param(self, param: float | None) -> float | None:
        return _positive_param(self.name, param)

    def combine(self, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return Mean.combine(self, values, weights)
