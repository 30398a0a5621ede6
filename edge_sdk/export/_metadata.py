"""Who made an exported file, from what, and how: producer, version, doc string, metadata.

Every artifact names edge-sdk as its producer and carries, as ``metadata_props`` under the
``edge_sdk.`` prefix, the model, the plan, the kept fraction, the bits and the calibration,
so a file found on a device or in a build folder says what it is without its export report.
Only the opset domains its nodes use are declared (onnxruntime's quantizer declares nine).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx

__all__ = ["stamp_model", "used_opsets", "read_metadata", "MODEL_VERSION", "PREFIX"]

PREFIX = "edge_sdk."
MODEL_VERSION = 1  # layout of the metadata below; raised when a key changes meaning


def used_opsets(model: onnx.ModelProto) -> None:
    """Drop the opset imports of domains no node uses (the default domain always stays)."""
    used = {n.domain or "" for n in model.graph.node}
    used.update(f.domain for f in model.functions)
    keep = [o for o in model.opset_import if (o.domain or "") in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def stamp_model(model: onnx.ModelProto, doc: str, props: Mapping[str, Any]) -> onnx.ModelProto:
    """Set producer, model version, ``doc`` and ``props`` (``None`` values left out) in place."""
    from edge_sdk import __version__

    model.producer_name = "edge-sdk"
    model.producer_version = __version__
    model.model_version = MODEL_VERSION
    model.doc_string = doc  # once: the graph's own doc string stays empty (size bars count bytes)
    del model.metadata_props[:]
    for key, value in props.items():
        if value is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = f"{PREFIX}{key}", _text(value)
    used_opsets(model)
    return model


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The ``edge_sdk.`` metadata of ``model``, without the prefix."""
    return {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
