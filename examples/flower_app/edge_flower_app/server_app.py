"""ServerApp: query capabilities, cluster into tiers, send each node only its submodel,
merge with the chosen rule, evaluate on the nodes, export every tier, write summary.json."""

import logging

from edge_sdk.flower import make_server_app

_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
for _name in ("edge_sdk.flower", "edge_sdk.export"):
    _logger = logging.getLogger(_name)
    _logger.setLevel(logging.INFO)
    if not _logger.handlers:
        _logger.addHandler(_handler)

app = make_server_app()
