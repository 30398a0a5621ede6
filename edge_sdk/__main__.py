"""``python -m edge_sdk`` runs the ``edge-sdk`` command (same as ``python -m edge_sdk.cli``)."""

from edge_sdk.cli import run

run()
