"""How long the next piece of profiling work will take, from the pieces already done.

A model profile measures sizes from the smallest up; each kind of work (peak-memory
tracking, forward calls, training steps) costs about its FLOPs x the seconds per FLOP the
previous, smaller size took on this device now. Work predicted to overrun the deadline is
skipped (and the report says so) rather than started: one training step on a busy device
can take seconds, and a started call cannot be stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Forecast:
    """Seconds per FLOP observed so far, per kind of work."""

    seconds_per_flop: dict[str, float] = field(default_factory=dict)

    def predict(self, kind: str, flops: int, calls: int = 1) -> float:
        """Seconds ``calls`` calls of ``kind`` on ``flops`` FLOPs will take (0 when unknown)."""
        return self.seconds_per_flop.get(kind, 0.0) * max(flops, 1) * calls

    def learn(self, kind: str, seconds: float, flops: int, calls: int = 1) -> None:
        self.seconds_per_flop[kind] = seconds / max(flops, 1) / max(calls, 1)
