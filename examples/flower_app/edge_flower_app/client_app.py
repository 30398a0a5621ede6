"""ClientApp: capability query, training of the node's submodel, local evaluation.

Node config keys (``flower-supernode --node-config "..."``): ``hw-profile`` (estimate the
report from a hardware profile instead of measuring), ``partition-id``, ``num-partitions``,
``dataset``, ``alpha``, ``seed`` (the node's non-IID share), ``cache-dir``, ``threads``.
"""

from edge_sdk.flower import make_client_app

app = make_client_app()
