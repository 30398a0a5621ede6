"""torch -> float ONNX with the TorchScript exporter (``dynamo=False``), errors named by layer."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import warnings
from typing import Iterator

import torch
from torch import nn

from edge_sdk.errors import ExportError, UnsupportedOpError

__all__ = ["export_float_onnx", "capture_native_stderr", "layer_of_aten_op", "INPUT_NAME", "OUTPUT_NAME"]

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_ATEN_OP = re.compile(r"'((?:aten|prim|quantized)::[A-Za-z0-9_.]+)'")


@contextlib.contextmanager
def capture_native_stderr() -> Iterator[io.StringIO]:
    """Redirect file descriptor 2 (C++ code writes there) into a buffer for the block.

    torch's TorchScript exporter dumps its whole IR graph to stderr when an export fails;
    the CLI promises one line, so the dump goes to the debug log instead.
    """
    buffer = io.StringIO()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to capture
        yield buffer
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            yield buffer
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buffer.write(tmp.read().decode("utf-8", "replace"))
    if buffer.getvalue().strip():
        log.debug("native stderr during export:\n%s", buffer.getvalue())


def layer_of_aten_op(model: nn.Module, example: torch.Tensor, op_name: str) -> str | None:
    """The module path (e.g. ``blocks.0.attn``) whose forward calls ``op_name`` (``aten::x``)."""
    try:
        with warnings.catch_warnings(), capture_native_stderr():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False, strict=False)
        for node in traced.inlined_graph.nodes():
            if node.kind() == op_name:
                scope = node.scopeName()
                return scope.removeprefix("__module.").removeprefix("__module") or "<model>"
    except Exception as exc:  # noqa: BLE001 - best effort only, the export error is reported anyway
        log.debug("could not locate %s by tracing: %s", op_name, exc)
    return None


def export_float_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str,
    *,
    opset: int = 17,
    dynamic_batch: bool = False,
) -> None:
    """Export ``model`` (eval mode, float32) to ``path`` with ``torch.onnx.export(dynamo=False)``.

    Input is named ``input`` and output ``logits``. An operator the exporter does not support
    raises :class:`UnsupportedOpError` naming the operator and the layer that calls it.
    """
    kwargs = {}
    if dynamic_batch:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    try:
        with warnings.catch_warnings(), capture_native_stderr(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                path,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                do_constant_folding=True,
                **kwargs,
            )
    except Exception as exc:  # noqa: BLE001 - mapped to typed errors below
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        match = _ATEN_OP.search(str(exc))
        if match is not None or isinstance(exc, torch.onnx.errors.UnsupportedOperatorError):
            op = match.group(1) if match else "an operator"
            layer = layer_of_aten_op(model, example, op) if match else None
            where = f"layer '{layer}'" if layer else "the model"
            raise UnsupportedOpError(
                f"{where} uses {op}, which the ONNX exporter does not support at opset {opset}: "
                f"{message}; replace that layer or choose another opset"
            ) from exc
        raise ExportError(f"torch.onnx.export failed: {message}") from exc
