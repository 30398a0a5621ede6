"""A time budget for a whole profile: a deadline, and a record of what was cut to keep it.

On a busy device every measurement takes longer; rather than run long, a measurement asks
the budget how much time it may take and notes when it had to stop early, so the report
can say how sure it is (``MeasurementRun``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


# What follows the measurements (the report's checks, printing, the interpreter's exit)
# takes about this share of what came before them (start-up: the interpreter and the
# imports), on an idle or a busy device alike: both are Python work at the same CPU share.
# Measured on the 2-core test VM: start-up 1.1-1.3 s of CPU, the rest 0.15-0.3 s.
FINISH_SHARE = 0.25


@dataclass
class Budget:
    """``seconds`` from ``started`` (a ``time.monotonic()`` value; default: now); None = no
    deadline. The measurements get ``seconds`` less ``reserve``, kept for what follows them;
    :meth:`for_command` sets it from the start-up time already spent."""

    seconds: float | None = None
    started: float = field(default_factory=time.monotonic)
    cut_short: list[str] = field(default_factory=list)
    reserve: float = 0.0

    @classmethod
    def for_command(cls, seconds: float | None, started: float) -> Budget:
        """The budget of a whole command that started at ``started`` (its process start)
        and is now past its imports: ``FINISH_SHARE`` of that start-up is kept for the end."""
        startup = max(0.0, time.monotonic() - started)
        return cls(seconds, started=started, reserve=FINISH_SHARE * startup)

    def remaining(self) -> float:
        """Seconds the measurements may still take."""
        if self.seconds is None:
            return math.inf
        return self.seconds - self.reserve - (time.monotonic() - self.started)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def allow(self, wanted: float, *, keep: float = 0.0) -> float:
        """Seconds a step that wants ``wanted`` may take, leaving ``keep`` for what follows."""
        return max(0.0, min(wanted, self.remaining() - keep))

    def cut(self, what: str) -> None:
        """Record that ``what`` was measured shorter (or not at all) to meet the deadline."""
        if what not in self.cut_short:
            self.cut_short.append(what)
