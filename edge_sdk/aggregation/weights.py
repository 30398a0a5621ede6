"""How much a client's reported sample count counts (issue #11's policy).

* ``trust``: the count as reported (FedAvg's weighting; a liar reporting 1e9 samples owns
  the mean),
* ``cap:K``: counts capped at K times the round's median count (a liar gains at most K
  honest clients' weight),
* ``equal``: every client weighs 1 (what differential privacy needs: a weight is a
  contribution the clipping does not bound).

``auto`` (the default) is ``trust`` for the plain mean (today's behaviour), ``cap:4`` for
robust rules, which so do not take counts at face value, and ``equal`` under DP.

Why 4 (``ROBUST_CAP``): a cap must bind on a liar, not on honest clients. Non-IID splits make
honest counts uneven: on the bench's Dirichlet-0.3 splits of MNIST-1D over 20 clients the
largest honest count is 3.3x, 3.1x and 1.8x the median (seeds 0, 1, 2). A cap of 2 cut that
largest client's weight by a third, and with it the classes it holds most of (measured on
fiarse, seed 0: 45.7 % with cap:2 against 48.9 % with trusted counts, same merge path, no
update clipped or refused). At 4 the cap leaves these honest counts alone while a liar
reporting 1e9 samples still weighs only as much as four median clients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edge_sdk.errors import InvalidInputError

__all__ = ["check_policy", "resolve_policy", "sample_weights", "POLICIES", "ROBUST_CAP"]

POLICIES = ("auto", "trust", "cap:K", "equal")
ROBUST_CAP = 4.0  # ``auto`` under a robust rule: counts capped at this many times the round's median


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
    return f"cap:{ROBUST_CAP:g}" if robust else "trust"


def sample_weights(counts: Sequence[int], policy: str) -> np.ndarray:
    """One weight per client under ``policy`` (already resolved)."""
    n = np.asarray(counts, dtype=np.float64)
    if policy == "trust":
        return n
    if policy == "equal":
        return np.ones_like(n)
    k = float(policy.partition(":")[2])
    return np.minimum(n, k * float(np.median(n)))
