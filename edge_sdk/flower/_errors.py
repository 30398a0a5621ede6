"""Errors of the Flower adapters (subclasses of the SDK's typed errors)."""

from __future__ import annotations

from edge_sdk.errors import EdgeSDKError, SchemaError, SchemaVersionError

__all__ = ["PayloadError", "PayloadVersionError", "FederationError"]


class PayloadError(SchemaError):
    """A Flower message does not carry a readable edge-sdk payload, update or report."""


class FederationError(EdgeSDKError):
    """A federated run cannot go on (e.g. too few nodes connected or answering)."""


class PayloadVersionError(PayloadError, SchemaVersionError):
    """A payload was written in a format version this release cannot read."""
