"""Flower adapters (extra ``flower``, flwr >= 1.41, Message API): we write no network layer.

* :func:`make_client_app` — a ``ClientApp`` whose ``query.capability`` handler returns the
  node's capability report (measured once and cached on the node, or estimated from the
  hardware profile named by node config ``hw-profile``), whose ``train`` handler rebuilds
  the node's submodel from its payload (plan + held tensors only), trains it on the node's
  partition and returns the ``Update``, and whose ``evaluate`` handler reports the
  submodel's accuracy on local data.
* :func:`make_server_app` — a ``ServerApp`` running :func:`run_server`: query, cluster,
  size, send per-node payloads (values losslessly compressed), merge with the rule's strategy
  class (FedTSA's stage 2 on the run config's ``server-data``), evaluate, export each tier,
  write ``summary.json``.

Only :mod:`edge_sdk.flower.client`, :mod:`~edge_sdk.flower.server` and
:mod:`~edge_sdk.flower.records` import Flower; the rest of the SDK never does.
"""

from __future__ import annotations

from edge_sdk._lazy import lazy_exports

_LAZY = {
    "make_client_app": "edge_sdk.flower.client",
    "make_server_app": "edge_sdk.flower.server",
    "run_server": "edge_sdk.flower.server",
    "ServerRun": "edge_sdk.flower.server",
    "RunSettings": "edge_sdk.flower.config",
    "NodeSettings": "edge_sdk.flower.config",
    "Payload": "edge_sdk.flower.codec",
    "encode_payload": "edge_sdk.flower.codec",
    "decode_payload": "edge_sdk.flower.codec",
    "payload_sizes": "edge_sdk.flower.codec",
    "ServerDataSpec": "edge_sdk.flower.config",
    "load_server_data": "edge_sdk.flower.serverdata",
    "materialize": "edge_sdk.flower.codec",
    "make_strategy": "edge_sdk.flower.strategies",
    "strategy_names": "edge_sdk.flower.strategies",
    "PayloadError": "edge_sdk.flower._errors",
    "PayloadVersionError": "edge_sdk.flower._errors",
    "FederationError": "edge_sdk.flower._errors",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports("edge_sdk.flower", _LAZY, globals())
