"""A time budget for a whole profile: a deadline, and a record of what was cut to keep it.

On a busy device every measurement takes longer; rather than run long, a measurement asks
the budget how much time it may take and notes when it had to stop early, so the report
can say how sure it is (``MeasurementRun``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class Budget:
    """``seconds`` from ``started`` (a ``time.monotonic()`` value; default: now); None = no
    deadline."""

    seconds: float | None = None
    started: float = field(default_factory=time.monotonic)
    cut_short: list[str] = field(default_factory=list)

    def remaining(self) -> float:
        if self.seconds is None:
            return math.inf
        return self.seconds - (time.monotonic() - self.started)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def allow(self, wanted: float, *, keep: float = 0.0) -> float:
        """Seconds a step that wants ``wanted`` may take, leaving ``keep`` for what follows."""
        return max(0.0, min(wanted, self.remaining() - keep))

    def cut(self, what: str) -> None:
        """Record that ``what`` was measured shorter (or not at all) to meet the deadline."""
        if what not in self.cut_short:
            self.cut_short.append(what)
