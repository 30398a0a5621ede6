"""Robust merge rules over heterogeneous submodels (registry: one module per rule).

``merge_rule("median")`` / ``merge_rule("trimmed-mean:0.1")`` / ``merge_rule("clipped-mean:5")``
build a rule; ``merge_rule_names()`` lists them; ``@register_merge_rule`` adds one.
:func:`edge_sdk.aggregation.merge.robust_merge` runs a rule over the updates of a round.
"""

from __future__ import annotations

from edge_sdk.aggregation.robust._base import (
    MergeRule,
    merge_rule,
    merge_rule_class,
    merge_rule_names,
    register_merge_rule,
)

# registration: one import per rule module
from edge_sdk.aggregation.robust import mean as _mean  # noqa: E402,F401
from edge_sdk.aggregation.robust import median as _median  # noqa: E402,F401
from edge_sdk.aggregation.robust import trimmed_mean as _trimmed_mean  # noqa: E402,F401
from edge_sdk.aggregation.robust import clipped_mean as _clipped_mean  # noqa: E402,F401

__all__ = ["MergeRule", "merge_rule", "merge_rule_class", "merge_rule_names", "register_merge_rule"]
