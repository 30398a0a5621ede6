"""How much a client's reported sample count counts (issue #11's policy).

* ``trust``: the count as reported (FedAvg's weighting; a liar reporting 1e9 samples owns
  the mean),
* ``cap:K``: counts capped at K times the round's median count (a liar gains at most K
  honest clients' weight),
* ``equal``: every client weighs 1 (what differential privacy needs: a weight is a
  contribution the clipping does not bound).

``auto`` (the default) is ``trust`` for the plain mean (today's behaviour), ``cap:2`` for
robust rules, which so do not take counts at face value, and ``equal`` under DP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edge_sdk.errors import InvalidInputError

__all__ = ["check_policy", "resolve_policy", "sample_weights", "POLICIES"]

POLICIES = ("auto", "trust", "cap:K", "equal")


def check_policy(policy: str) -> str:
    if not isinstance(policy, str):
        raise InvalidInputError(f"sample-weights={policy!r} is not accepted; expected one of {', '.join(POLICIES)}")
    if policy in ("auto", "trust", "equal"):
        return policy
    name, _, raw = policy.partition(":")
    try:
        k = float(raw)
    except ValueError:
        k = float("nan")
    if name != "cap" or not math.isfinite(k) or k <= 0:
        raise InvalidInputError(f"sample-weights={policy!r} is not accepted; expected one of "
                                f"{', '.join(POLICIES)} (K > 0)")
    return f"cap:{k:g}"


def resolve_policy(policy: str, *, robust: bool, dp: bool) -> str:
    """The policy ``auto`` stands for in this configuration (others unchanged)."""
    if dp:
        return "equal"
    if policy != "auto":
        return policy
    return "cap:2" if robust else "trust"


def sample_weights(counts: Sequence[int], policy: str) -> np.ndarray:
    """One weight per client under ``policy`` (already resolved)."""
    n = np.asarray(counts, dtype=np.float64)
    if policy == "trust":
        return n
    if policy == "equal":
        return np.ones_like(n)
    k = float(policy.partition(":")[2])
    return np.minimum(n, k * float(np.median(n)))
