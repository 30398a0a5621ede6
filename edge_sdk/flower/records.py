"""Our bytes inside Flower records: one ``Array`` per blob, carried verbatim.

Each blob travels as ``Array(dtype="uint8", shape=(n,), stype=<ours>, data=<bytes>)`` in an
``ArrayRecord``, so Flower chunks and streams it like any array while nothing is pickled or
re-encoded: the bytes are the SDK's own container (payload, update).
"""

from __future__ import annotations

from edge_sdk.flower._errors import PayloadError
from edge_sdk.flower._flwr import require_flwr

__all__ = ["STYPE_PAYLOAD", "STYPE_UPDATE", "blob_record", "record_blob", "QUERY_ACTION", "REPORT_KEY"]

STYPE_PAYLOAD = "edge-sdk/payload-v1"
STYPE_UPDATE = "edge-sdk/update-v1"
QUERY_ACTION = "capability"  # message type "query.capability"
REPORT_KEY = "report"


def blob_record(data: bytes, stype: str, key: str = "blob"):
    """An ``ArrayRecord`` holding ``data`` as one raw Array."""
    flwr = require_flwr()
    array = flwr.app.Array(dtype="uint8", shape=(len(data),), stype=stype, data=bytes(data))
    return flwr.app.ArrayRecord({key: array})


def record_blob(content, record: str, stype: str, key: str = "blob") -> bytes:
    """The bytes of ``content[record][key]``; PayloadError if absent or of another kind."""
    try:
        arrays = content.array_records[record]
    except KeyError:
        raise PayloadError(f"message lacks the {record!r} array record") from None
    array = arrays.get(key)
    if array is None:
        raise PayloadError(f"array record {record!r} lacks {key!r}")
    if array.stype != stype:
        raise PayloadError(f"array {record}.{key} has stype {array.stype!r}; expected {stype!r}")
    return bytes(array.data)
