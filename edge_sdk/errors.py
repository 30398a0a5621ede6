"""Typed exceptions raised by the library.

Every exception the SDK raises on purpose derives from :class:`EdgeSDKError`. The CLI turns
an ``EdgeSDKError`` into one line on stderr and exit code 2; anything else is a bug.
Messages say what was wrong, where, and what is accepted.
"""

from __future__ import annotations


class EdgeSDKError(Exception):
    """Base class of every error the SDK raises on purpose."""


class InvalidInputError(EdgeSDKError, ValueError):
    """An argument, file or value the user gave is not acceptable."""


class UnknownNameError(InvalidInputError, KeyError):
    """A name (model, hardware profile, strategy, rule, dataset...) is not known."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class SchemaError(InvalidInputError):
    """A document (report, hardware profile, plan) does not follow its schema."""


class SchemaVersionError(SchemaError):
    """A document carries a schema version this release cannot read."""


class LimitExceededError(SchemaError):
    """A document declares more than a decoder's limits allow (size, count, nesting, shape);
    the decoder refuses it before it allocates (see ``edge_sdk._decode.DecodeLimits``)."""


class ChecksumError(SchemaError):
    """Bytes were altered after they were written: their checksum does not match."""


class HardwareProfileError(SchemaError):
    """A hardware-profile TOML file is unreadable or has a bad field."""


class OutputError(EdgeSDKError, OSError):
    """An output file cannot be written."""


class ProfilingError(EdgeSDKError):
    """A measurement could not be taken on this device."""


class MissingDependencyError(EdgeSDKError, ImportError):
    """An optional dependency (an extra) is not installed."""


class PlanMismatchError(InvalidInputError):
    """A submodel plan does not match the model it is applied to."""


class UpdateRejectedError(InvalidInputError):
    """A client update does not match its plan or holds non-finite values."""


class ClusteringError(InvalidInputError):
    """Capability clustering cannot be done on the given fleet."""


class ExportError(EdgeSDKError):
    """A model could not be exported."""


class UnsupportedOpError(ExportError):
    """A layer or operator cannot be exported to the requested format."""


class BudgetExceededError(ExportError):
    """A model does not fit the target's budget."""


class VerificationError(ExportError):
    """An exported graph does not meet a required property (e.g. integer-only)."""
