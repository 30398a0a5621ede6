"""``python -m edge_sdk`` runs the ``edge-sdk`` command (same as ``python -m edge_sdk.cli``)."""

import sys

from edge_sdk.cli import main

sys.exit(main())
