"""Lazy public names for a package (PEP 562): import the defining module on first access."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str], namespace: dict[str, Any],
                 subpackages: tuple[str, ...] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    ``names`` maps a public name to the module defining it; ``subpackages`` are submodules
    reachable as attributes. A resolved value is cached in ``namespace`` (the package's
    ``globals()``), so each name is looked up once; ``dir()`` lists the package's ``__all__``.
    """
    public = sorted(namespace.get("__all__", [*names, *subpackages]))

    def __getattr__(name: str) -> Any:
        if name in subpackages:
            value = importlib.import_module(f"{package}.{name}")
        elif name in names:
            value = getattr(importlib.import_module(names[name]), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return public

    return __getattr__, __dir__
