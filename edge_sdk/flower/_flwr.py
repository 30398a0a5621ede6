"""Import Flower only where it is needed, with a clear error when it is missing."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

from edge_sdk.errors import MissingDependencyError

_cache: SimpleNamespace | None = None


def require_flwr() -> SimpleNamespace:
    """``flwr.app``, ``flwr.clientapp`` and ``flwr.serverapp`` (flwr >= 1.41)."""
    global _cache
    if _cache is None:
        try:
            app = importlib.import_module("flwr.app")
            clientapp = importlib.import_module("flwr.clientapp")
            serverapp = importlib.import_module("flwr.serverapp")
        except ImportError as exc:
            raise MissingDependencyError(
                'edge_sdk.flower needs Flower >= 1.41 (the flower extra): pip install "edge-fl-sdk[flower]"'
            ) from exc
        _cache = SimpleNamespace(app=app, clientapp=clientapp, serverapp=serverapp)
    return _cache
