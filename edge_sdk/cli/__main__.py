"""``python -m edge_sdk.cli`` runs the ``edge-sdk`` command."""

from edge_sdk.cli import run

run()
