"""Model checkpoints the export CLI reads: a reference model's config plus its weights.

The file is a ``torch.save`` of plain data (no pickled classes), read back with
``torch.load(weights_only=True)``::

    {"format": "edge-sdk-checkpoint", "version": 1,
     "model": {"name": "resnet8", "width": 1.0, "depth": 1, "num_classes": 10, "options": {...}},
     "state_dict": {...}}
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from torch import nn

from edge_sdk._io import atomic_write_bytes
from edge_sdk.errors import InvalidInputError

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "edge-sdk-checkpoint"
_VERSION = 1


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write a reference model (one built by ``edge_sdk.models.create``) and its weights."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "name"):
        raise InvalidInputError(
            "save_checkpoint needs a reference model from edge_sdk.models.create (it has .config)")
    doc = {
        "format": CHECKPOINT_FORMAT,
        "version": _VERSION,
        "model": {"name": cfg.name, "width": float(cfg.width), "depth": int(cfg.depth),
                  "num_classes": int(cfg.num_classes), "options": dict(cfg.options)},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(doc, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    from edge_sdk import models

    try:
        doc: Any = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"checkpoint {path}: file not found") from exc
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(f"checkpoint {path}: not a readable edge-sdk checkpoint ({first})") from exc
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise InvalidInputError(
            f"checkpoint {path}: not an edge-sdk checkpoint; write one with "
            f"edge_sdk.export.save_checkpoint(model, path)")
    if doc.get("version") != _VERSION:
        raise InvalidInputError(f"checkpoint {path}: version {doc.get('version')!r}; this release reads {_VERSION}")
    spec = doc.get("model") or {}
    try:
        model = models.create(spec["name"], width=spec["width"], depth=spec["depth"],
                              num_classes=spec["num_classes"], **spec.get("options", {}))
        model.load_state_dict(doc["state_dict"])
    except KeyError as exc:
        raise InvalidInputError(f"checkpoint {path}: missing field {exc}") from exc
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InvalidInputError(f"checkpoint {path}: weights do not fit the model ({first})") from exc
    return model.eval()
