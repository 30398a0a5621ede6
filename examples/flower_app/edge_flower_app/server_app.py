"""ServerApp: query capabilities, cluster into tiers, send each node only its submodel,
merge with the chosen rule, evaluate on the nodes, export every tier, write summary.json."""

import logging

from edge_sdk.flower import make_server_app

_FORMAT = "%(levelname)s %(name)s: %(message)s"


def _configure_logging() -> None:
    """Configure logging once, in this process (the ServerApp runs in its own process).

    * ``edge_sdk`` gets one handler at INFO and does not propagate, so each of its lines is
      printed once, prefixed with its logger's name.
    * The root logger gets a WARNING handler before anything logs: a library calling
      ``logging.warning(...)`` on the root logger (onnxruntime's quantizer does) would
      otherwise run ``logging.basicConfig()`` itself, and every line propagating to the root
      (edge_sdk's, Flower's DEBUG lines) would then be printed a second time.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
    sdk = logging.getLogger("edge_sdk")
    sdk.setLevel(logging.INFO)
    sdk.propagate = False
    if not sdk.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        sdk.addHandler(handler)


_configure_logging()
app = make_server_app()
