"""Scoped work-arounds for Brevitas 0.13.4 and qonnx 1.0.0 on onnx 1.23 / onnxruntime 1.31.

* Brevitas' ONNX managers refuse to export unless ``onnxoptimizer`` imports (it is in the
  ``fpga`` extra); :func:`brevitas_export_env` turns that into a clear error.
* qonnx 1.0.0 builds its single-node models with onnx's current IR version (14 with onnx
  1.23), which onnxruntime 1.31 rejects ("max supported IR version: 13"); its executor then
  fails on every standard op. :func:`qonnx_ir_fix` makes those models IR version 10.

``qonnx_ir_fix`` patches module attributes only inside a ``with`` block and restores them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


from edge_sdk.errors import MissingDependencyError

__all__ = ["brevitas_export_env", "qonnx_ir_fix", "QONNX_IR_VERSION", "require"]

log = logging.getLogger(__name__)

QONNX_IR_VERSION = 10


def require(module: str, extra: str = "fpga"):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip extra."""
    import importlib
    import warnings

    try:
        with warnings.catch_warnings():  # Brevitas warns about optional kernels on import
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this export needs {module.partition('.')[0]} (the {extra} extra): pip install \"edge-fl-sdk[{extra}]\""
        ) from exc


@contextlib.contextmanager
def brevitas_export_env() -> Iterator[None]:
    """Check that Brevitas' ONNX export can run: its managers need ``onnxoptimizer``."""
    manager = require("brevitas.export.onnx.manager")
    if getattr(manager, "opt", None) is None:
        raise MissingDependencyError(
            "Brevitas' ONNX export needs onnxoptimizer (the fpga extra): pip install \"edge-fl-sdk[fpga]\""
        )
    yield


@contextlib.contextmanager
def qonnx_ir_fix() -> Iterator[None]:
    """Make qonnx's executor build IR-version-10 node models that onnxruntime accepts."""
    onnx_exec = require("qonnx.core.onnx_exec")
    basic = require("qonnx.util.basic")
    # channels-last wrapped ops (what hls4ml's intake makes) build their node models too
    wrapped = require("qonnx.custom_op.channels_last.base_wrapped_op")
    originals = {mod: mod.qonnx_make_model for mod in (onnx_exec, basic, wrapped)}
    make = originals[basic]

    def make_model(graph, **kwargs):
        model = make(graph, **kwargs)
        model.ir_version = min(model.ir_version, QONNX_IR_VERSION)
        return model

    for mod in originals:
        mod.qonnx_make_model = make_model
    try:
        yield
    finally:
        for mod, fn in originals.items():
            mod.qonnx_make_model = fn
