"""Quantize the graph input first: no float op may run before the first ``QuantizeLinear``.

onnxruntime's quantizer puts the input's ``QuantizeLinear`` after the ops that only move
data (the stem's channel ``Pad``, a ``Reshape`` / ``Transpose``), so the graph starts in
float. A per-tensor quantizer commutes with those ops (a constant ``Pad`` then pads with the
zero point, the quantized value of 0), so it is moved in front of them: the same integers,
and an integer-only graph from its input.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_sdk.export.integer_check import producers_and_consumers

__all__ = ["quantize_input_first", "MOVABLE_OPS"]

# ops that only move or copy values, so that Q(op(x)) == op(Q(x)) for a per-tensor Q
MOVABLE_OPS = frozenset({"Pad", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _chain_to_input(quant: onnx.NodeProto, producer, consumers, graph_inputs: set[str]) -> list[onnx.NodeProto] | None:
    """The movable ops between a graph input and ``quant`` (input first), or None."""
    chain: list[onnx.NodeProto] = []
    tensor = quant.input[0]
    while tensor not in graph_inputs:
        node = producer.get(tensor)
        if node is None or node.op_type not in MOVABLE_OPS or len(consumers.get(tensor, [])) != 1:
            return None
        if node.op_type == "Pad" and _attr(node, "mode", b"constant") not in (b"constant", "constant"):
            return None
        chain.append(node)
        tensor = node.input[0]
    if len(consumers.get(tensor, [])) != 1:  # the float input is read elsewhere too
        return None
    return chain[::-1]


def quantize_input_first(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Move each per-tensor ``QuantizeLinear`` reached from a graph input through data-moving
    ops to the input itself; returns the model (changed in place) and what was moved."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    graph_inputs = {i.name for i in graph.input} - set(inits)
    producer, consumers = producers_and_consumers(graph)
    changes: list[str] = []
    for quant in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        scale = inits.get(quant.input[1]) if len(quant.input) > 1 else None
        if scale is None or int(np.prod(scale.dims)) != 1:
            continue
        chain = _chain_to_input(quant, producer, consumers, graph_inputs)
        if not chain:
            continue
        zp = inits.get(quant.input[2]) if len(quant.input) > 2 and quant.input[2] else None
        zero = numpy_helper.to_array(zp).reshape(()) if zp is not None else np.array(0, np.uint8)
        source, q_out = chain[0].input[0], f"{chain[0].input[0]}_quantized"
        out_name = quant.output[0]
        quant.input[0], quant.output[0] = source, q_out
        chain[0].input[0] = q_out
        chain[-1].output[0] = out_name
        for node in chain:
            if node.op_type == "Pad":
                _pad_with_zero_point(graph, node, zero)
        stale = {n.output[0] for n in chain}
        keep = [vi for vi in graph.value_info if vi.name not in stale]
        del graph.value_info[:]
        graph.value_info.extend(keep)
        nodes = [n for n in graph.node if n is not quant]
        at = next(i for i, n in enumerate(nodes) if n is chain[0])
        nodes.insert(at, quant)
        del graph.node[:]
        graph.node.extend(nodes)
        changes.append(f"{quant.name or out_name}: input quantized before "
                       f"{', '.join(n.op_type for n in chain)}")
        producer, consumers = producers_and_consumers(graph)
    return model, changes


def _pad_with_zero_point(graph: onnx.GraphProto, pad: onnx.NodeProto, zero: np.ndarray) -> None:
    """A constant Pad of the quantized tensor pads with the zero point (0 quantized)."""
    name = f"{pad.name or pad.output[0]}_zero_point"
    graph.initializer.append(numpy_helper.from_array(zero.astype(zero.dtype).reshape(()), name))
    inputs = list(pad.input) + [""] * (3 - len(pad.input))
    inputs[2] = name
    del pad.input[:]
    pad.input.extend(inputs)
