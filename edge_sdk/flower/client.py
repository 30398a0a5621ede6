"""The ClientApp: ``query.capability`` -> capability report, ``train`` -> update,
``evaluate`` -> accuracy of the node's submodel on its local data.

Node settings come from the SuperNode's node config (see :class:`NodeSettings`), run
settings (model, local steps, learning rate...) from the run config.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from edge_sdk.allocator import configure_allocator
from edge_sdk.flower.codec import decode_payload
from edge_sdk.flower.config import NodeSettings, RunSettings
from edge_sdk.flower.records import (
    QUERY_ACTION,
    REPORT_KEY,
    STYPE_PAYLOAD,
    STYPE_UPDATE,
    blob_record,
    record_blob,
)
from edge_sdk.flower._flwr import require_flwr

log = logging.getLogger(__name__)

__all__ = ["make_client_app"]

_STATE_KEY = "edge-sdk.report"


def _settings(context: Any) -> tuple[NodeSettings, RunSettings]:
    node = NodeSettings.from_config(dict(context.node_config))
    run = RunSettings.from_config(dict(context.run_config))
    torch.set_num_threads(node.threads)
    return node, run


def _query(message: Any, context: Any) -> Any:
    flwr = require_flwr()
    node, run = _settings(context)
    cfg = message.content.config_records.get("query")
    model = str(cfg["model"]) if cfg is not None and "model" in cfg else run.model
    quick = bool(cfg["quick"]) if cfg is not None and "quick" in cfg else run.quick_profile
    cached = context.state.config_records.get(_STATE_KEY)
    source = "node-state"
    if cached is not None and cached.get("model") == model and cached.get("hw-profile") == (node.hw_profile or ""):
        text = str(cached["json"])
    else:
        from edge_sdk.flower.node import capability_report

        report, from_disk = capability_report(node, model, quick=quick)
        text = report.to_json(indent=None)
        source = "disk-cache" if from_disk else ("hw-profile" if node.hw_profile else "profiled")
        context.state[_STATE_KEY] = flwr.app.ConfigRecord(
            {"json": text, "model": model, "hw-profile": node.hw_profile or ""})
    reply = flwr.app.ConfigRecord({"json": text, "hw-profile": node.hw_profile or "", "source": source,
                                   "partition-id": node.partition_id})
    return flwr.app.Message(flwr.app.RecordDict({REPORT_KEY: reply}), reply_to=message)


def _train(message: Any, context: Any) -> Any:
    flwr = require_flwr()
    from edge_sdk.flower.node import local_data, train_payload

    node, run = _settings(context)
    data = record_blob(message.content, "payload", STYPE_PAYLOAD)
    payload = decode_payload(data)
    local = local_data(node, run.dataset, run.server_holdout())
    seed = (run.seed * 1_000_003 + node.partition_id * 7919 + payload.round) % (2**63)
    update, metrics = train_payload(payload, local, run, seed=seed)
    blob = _hostile(node.attack, update, payload, seed) if node.attack else update.to_bytes()
    metrics.update({"bytes-received": float(len(data)), "payload-tensor-bytes": float(payload.tensor_bytes),
                    "bytes-sent": float(len(blob)), "update-tensor-bytes": float(update.num_bytes),
                    "partition-id": float(node.partition_id)})
    content = flwr.app.RecordDict({"update": blob_record(blob, STYPE_UPDATE),
                                   "metrics": flwr.app.MetricRecord(metrics)})
    return flwr.app.Message(content, reply_to=message)


def _hostile(attack: str, update: Any, payload: Any, seed: int) -> bytes:
    """The update a node configured as hostile sends (node config ``attack``)."""
    import torch

    from edge_sdk.flower.config import CORRUPT

    if attack == CORRUPT:
        data = bytearray(update.to_bytes())
        data[len(data) // 2] ^= 0x01
        return bytes(data)
    from edge_sdk.attacks import make_attack

    log.warning("this node is configured as hostile: attack %s", attack)
    return make_attack(attack).apply(update, payload.tensors, torch.Generator().manual_seed(seed)).to_bytes()


def _evaluate(message: Any, context: Any) -> Any:
    flwr = require_flwr()
    from edge_sdk.flower.node import evaluate_payload, local_data

    node, run = _settings(context)
    data = record_blob(message.content, "payload", STYPE_PAYLOAD)
    payload = decode_payload(data)
    metrics = evaluate_payload(payload, local_data(node, run.dataset, run.server_holdout()))
    metrics["bytes-received"] = float(len(data))
    content = flwr.app.RecordDict({"metrics": flwr.app.MetricRecord(metrics)})
    return flwr.app.Message(content, reply_to=message)


def make_client_app() -> Any:
    """A ``flwr.clientapp.ClientApp`` with the edge-sdk query/train/evaluate handlers."""
    flwr = require_flwr()
    configure_allocator()  # the node's rounds run in the allocator state its profile assumed
    app = flwr.clientapp.ClientApp()
    app.query(QUERY_ACTION)(_query)
    app.train()(_train)
    app.evaluate()(_evaluate)
    return app
