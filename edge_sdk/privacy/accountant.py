"""(epsilon, delta) of the DP merges, from Google's ``dp-accounting`` (RDP accountant).

Each round every participating client's contribution goes through one Gaussian mechanism
of noise multiplier z (see :mod:`edge_sdk.privacy.mechanism`); the run is their
composition. No amplification by sampling is claimed: the simulation samples a fixed
number of clients without replacement and a Flower server picks connected nodes, neither
of which is the Poisson sampling the amplification theorems assume. The accountant is the
one Flower's DP wrappers use; the numbers equal ``dp_accounting`` called directly.
"""

from __future__ import annotations

import math

from edge_sdk.errors import InvalidInputError, MissingDependencyError

__all__ = ["PrivacyAccountant", "epsilon_for", "noise_for_epsilon"]


def _dp():
    try:
        import dp_accounting
    except ImportError as exc:
        raise MissingDependencyError('differential privacy accounting needs dp-accounting: '
                                     'pip install "edge-fl-sdk[privacy]"') from exc
    return dp_accounting


def epsilon_for(noise: float, rounds: int, delta: float) -> float:
    """Epsilon after ``rounds`` Gaussian mechanisms of multiplier ``noise`` (inf for 0)."""
    if noise <= 0 or rounds < 1:
        return math.inf if rounds >= 1 else 0.0
    dp = _dp()
    acc = dp.rdp.RdpAccountant()
    acc.compose(dp.GaussianDpEvent(float(noise)), int(rounds))
    return float(acc.get_epsilon(float(delta)))


def noise_for_epsilon(epsilon: float, rounds: int, delta: float, *, tol: float = 1e-3) -> float:
    """The smallest noise multiplier whose ``rounds`` compositions stay within ``epsilon``
    (0 for an infinite epsilon), by bisection on :func:`epsilon_for`."""
    if math.isinf(epsilon):
        return 0.0
    if not epsilon > 0:
        raise InvalidInputError(f"epsilon={epsilon!r} is not accepted; expected a number > 0")
    lo, hi = 0.01, 1.0
    while epsilon_for(hi, rounds, delta) > epsilon:
        hi *= 2
        if hi > 1e6:
            raise InvalidInputError(f"epsilon={epsilon} is out of reach at delta={delta}")
    while hi - lo > tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if epsilon_for(mid, rounds, delta) > epsilon else (lo, mid)
    return hi


class PrivacyAccountant:
    """The rounds' noise multipliers, by round number (merging one round twice, as a server
    retrying after a refused update does, replaces its entry rather than spending twice)."""

    def __init__(self, delta: float) -> None:
        self.delta = float(delta)
        self.noise_by_round: dict[int, float] = {}

    def record(self, round: int, noise: float) -> dict[str, float]:
        """Record round ``round`` (effective multiplier ``noise``); returns its spend."""
        self.noise_by_round[int(round)] = float(noise)
        return {"epsilon_round": epsilon_for(noise, 1, self.delta), "epsilon_total": self.epsilon(),
                "delta": self.delta, "noise_multiplier": float(noise), "rounds_accounted": len(self.noise_by_round)}

    def epsilon(self) -> float:
        """Epsilon of every recorded round composed (RDP), at this accountant's delta."""
        if not self.noise_by_round:
            return 0.0
        if any(z <= 0 for z in self.noise_by_round.values()):
            return math.inf
        dp = _dp()
        acc = dp.rdp.RdpAccountant()
        for z in self.noise_by_round.values():
            acc.compose(dp.GaussianDpEvent(z))
        return float(acc.get_epsilon(self.delta))
