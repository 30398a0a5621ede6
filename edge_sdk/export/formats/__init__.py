"""Export formats as registered objects: ``format_names()``, ``get_format(name)``.

A format is one module here with an :class:`ExportFormat` subclass decorated with
:func:`register_format`, imported below (outside the package, import your module before
use). Formats import their exporters only when they write, so listing them is cheap.
"""

from __future__ import annotations

from edge_sdk.export.formats._base import ExportFormat, FitResult
from edge_sdk.export.formats._registry import format_names, get_format, register_format

# the built-in formats, in the order `edge-sdk export --help` lists them
from edge_sdk.export.formats import int8_onnx, qonnx, qcdq  # noqa: E402,F401  isort: skip

__all__ = ["ExportFormat", "FitResult", "register_format", "format_names", "get_format"]
