"""A strategy's options: typed, checked, and reachable from Python, the CLI and Flower.

Each strategy lists its options as :class:`Option` entries; the constructor takes them as
keyword arguments (``create_strategy("fiarse", gradient="hard")``), ``edge-sdk simulate``
takes them as ``--KEY VALUE`` flags generated from the registry, and a Flower run takes them
as run-config keys ``KEY = VALUE``. One parser serves the three.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_sdk.errors import InvalidInputError

__all__ = ["Option"]

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


@dataclass(frozen=True)
class Option:
    """One constructor argument of a strategy.

    ``name`` is the Python keyword; ``key`` the CLI flag / run-config key (dashes), which
    defaults to ``<strategy>-<name>`` when the strategy registers; ``aliases`` are older
    CLI flags that still work.
    """

    name: str
    kind: type
    default: Any
    help: str
    key: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    positive: bool = False
    aliases: tuple[str, ...] = ()

    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        what = "an integer" if self.kind is int else "a finite number" if self.kind is float else "a string"
        if self.positive:
            return f"{what} > 0"
        if self.minimum is not None:
            return f"{what} >= {self.minimum:g}"
        return what

    def parse(self, value: Any, where: str) -> Any:
        """``value`` (a Python value, or text from a CLI flag or a run config) checked and
        converted; ``where`` names it in the error (``"config fiarse-gradient"``)."""
        bad = InvalidInputError(f"{where}={value!r} is not accepted; expected {self.expected()}")
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            raise bad
        if isinstance(value, bool):
            raise bad
        if self.kind is int:
            if isinstance(value, str):
                try:
                    value = int(value.strip())
                except ValueError:
                    raise bad from None
            if not isinstance(value, int):
                raise bad
        elif self.kind is float:
            if isinstance(value, str):
                try:
                    value = float(value.strip())
                except ValueError:
                    raise bad from None
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad
            value = float(value)
        else:
            if not isinstance(value, str):
                raise bad
            if self.choices and value not in self.choices:
                raise bad
            return value
        if (self.positive and not value > 0) or (self.minimum is not None and value < self.minimum):
            raise bad
        return value

    def from_config(self, config: Mapping[str, Any]) -> tuple[bool, Any]:
        """(found, value) of this option in a flat run config."""
        if self.key in config:
            return True, self.parse(config[self.key], f"config {self.key}")
        return False, self.default
