"""Integer-only check of an ONNX graph.

A graph is integer-only when every tensor between the input's ``QuantizeLinear`` and the
output's ``DequantizeLinear`` is an integer tensor. Element types come from the model's
``value_info`` (ONNX shape inference) and, where that is silent (contrib ops such as
``com.microsoft.QGemm``), from per-op rules below. Initializers (scales, zero points,
biases) are not activations and are not looked at.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Union

import onnx
from onnx import TensorProto

from edge_sdk.errors import InvalidInputError
from edge_sdk.export._report import FloatOp, IntegerOnlyReport

__all__ = ["check_integer_only", "tensor_elem_types", "graph_style", "QDQ_INTEGER_OPS"]

ModelLike = Union[str, "os.PathLike[str]", onnx.ModelProto]

FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
)
# ops that only move or reshape data (allowed next to the graph's input/output boundary)
LAYOUT_OPS = frozenset(
    {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Split", "Slice",
     "Gather", "Concat", "Expand", "Tile", "Pad"}
)  # fmt: skip
# ops that read only a tensor's shape, never its values
SHAPE_OPS = frozenset({"Shape", "Size"})
_QUANT_TYPES = frozenset({TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16})
_INT64_OUT = frozenset({"Shape", "Size", "NonZero", "ArgMax", "ArgMin"})
_INT32_OUT = frozenset({"MatMulInteger", "ConvInteger", "MatMulIntegerToFloat"})


def _load(model: ModelLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(os.fspath(model), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - missing file, not protobuf, ...
        raise InvalidInputError(f"cannot read ONNX model {model}: {exc}") from exc


def tensor_elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type (a ``TensorProto`` enum) of every tensor name of the main graph."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - contrib ops can upset inference; rules below cover them
        inferred = model
    graph = inferred.graph
    types: dict[str, int] = {}
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    for node in graph.node:  # graphs are topologically sorted; fill gaps by op rules
        outs = [o for o in node.output if o and o not in types]
        if not outs:
            continue
        for i, out in enumerate(node.output):
            if out and out not in types:
                t = _rule_type(node, i, types)
                if t:
                    types[out] = t
    return types


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _input_type(node: onnx.NodeProto, index: int, types: dict[str, int]) -> int:
    if index < len(node.input) and node.input[index]:
        return types.get(node.input[index], 0)
    return 0


def _rule_type(node: onnx.NodeProto, out_index: int, types: dict[str, int]) -> int:
    op = node.op_type
    if op == "Constant":
        value = _attr(node, "value")
        return value.data_type if value is not None else 0
    if op == "QuantizeLinear":
        out_dtype = _attr(node, "output_dtype", 0)
        return out_dtype or _input_type(node, 2, types) or TensorProto.UINT8
    if op == "DequantizeLinear":
        return _input_type(node, 1, types) or TensorProto.FLOAT
    if op == "DynamicQuantizeLinear":
        return (TensorProto.UINT8, TensorProto.FLOAT, TensorProto.UINT8)[out_index]
    if op == "Cast":
        return int(_attr(node, "to", 0))
    if op in _INT64_OUT:
        return TensorProto.INT64
    if op in _INT32_OUT:
        return TensorProto.FLOAT if op == "MatMulIntegerToFloat" else TensorProto.INT32
    if op == "QGemm":  # without y_scale (input 7) QGemm outputs float
        if len(node.input) > 7 and node.input[7]:
            return _input_type(node, 8, types) or _input_type(node, 0, types)
        return TensorProto.FLOAT
    if op.startswith("QLinear") or op == "QAttention":
        # the output zero point is the last 8/16-bit integer input (bias inputs are int32)
        for name in reversed(node.input):
            if name and types.get(name) in _QUANT_TYPES:
                return types[name]
        return _input_type(node, 0, types)
    for name in node.input:  # most ops keep the type of their first typed input
        if name and types.get(name):
            return types[name]
    return 0


def producers_and_consumers(graph: onnx.GraphProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    """The node producing each tensor name, and the nodes reading it."""
    producer = {o: n for n in graph.node for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)
    return producer, consumers


# ops with an exact integer kernel that a runtime uses when every float input comes from a
# DequantizeLinear and every output goes to a QuantizeLinear (QDQ / QCDQ graphs); a chain of
# them between DequantizeLinear and QuantizeLinear nodes fuses too (Conv -> Relu). Ops that
# need float arithmetic inside (Sigmoid, Softmax, norms) are not here: they are reported.
QDQ_INTEGER_OPS = frozenset(
    {"Conv", "MatMul", "Gemm", "Add", "Mul", "Relu", "Clip", "MaxPool", "AveragePool",
     "GlobalAveragePool", "GlobalMaxPool", "Concat"} | LAYOUT_OPS
)  # fmt: skip
_QOPERATOR_PREFIXES = ("QLinear", "QGemm", "QAttention", "ConvInteger", "MatMulInteger", "DynamicQuantize")


def graph_style(model: onnx.ModelProto) -> str:
    """``qoperator`` when the graph holds integer operators (QLinearConv, QGemm ...), else ``qdq``."""
    return "qoperator" if any(n.op_type.startswith(_QOPERATOR_PREFIXES) for n in model.graph.node) else "qdq"


def check_integer_only(model: ModelLike, *, style: str = "auto") -> IntegerOnlyReport:
    """List every node that computes on float tensors inside the quantized region.

    The check starts at the graph input: the input must go straight into ``QuantizeLinear``
    nodes (or shape-reading ops), so a float op before the first quantizer (a stem ``Pad`` or
    ``Reshape``) is reported. At the output, the ``DequantizeLinear`` nodes feeding a graph
    output (possibly through layout ops) are the boundary. ``style``: ``qoperator`` reports
    every other node with a float activation input or output; ``qdq`` (QuantizeLinear ->
    DequantizeLinear around standard ops) accepts a node a runtime fuses into an integer
    kernel (:data:`QDQ_INTEGER_OPS`, all its float inputs from DequantizeLinear of integers or
    from such nodes, all its outputs into QuantizeLinear or such nodes, float constants only
    through DequantizeLinear) and reports the others with the Q/DQ nodes around them;
    ``auto`` picks by :func:`graph_style`. A graph with no quantize node at all is reported
    with all its compute nodes as float ops.
    """
    proto = _load(model)
    if style == "auto":
        style = graph_style(proto)
    if style not in ("qoperator", "qdq"):
        raise InvalidInputError(f"style={style!r} is not accepted; expected auto, qoperator or qdq")
    graph = proto.graph
    types = tensor_elem_types(proto)
    initializers = {i.name for i in graph.initializer}
    constants = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    static = initializers | constants
    graph_inputs = {i.name for i in graph.input} - initializers
    graph_outputs = {o.name for o in graph.output}

    producer, consumers = producers_and_consumers(graph)

    def is_float(name: str) -> bool:
        return bool(name) and name not in static and types.get(name, 0) in FLOAT_TYPES

    boundary_ids: set[int] = set()
    for t in graph_inputs:  # input side: only the input's own quantizers
        for n in consumers.get(t, []):
            if n.op_type == "QuantizeLinear" or n.op_type in SHAPE_OPS:
                boundary_ids.add(id(n))
    # output side: walk backward from graph outputs through layout ops to DequantizeLinear
    frontier = list(graph_outputs)
    seen: set[str] = set()
    while frontier:
        t = frontier.pop()
        if t in seen:
            continue
        seen.add(t)
        n = producer.get(t)
        if n is None:
            continue
        if n.op_type == "DequantizeLinear" or n.op_type in LAYOUT_OPS:
            boundary_ids.add(id(n))
            if n.op_type in LAYOUT_OPS:
                frontier.extend(i for i in n.input[:1] if i)
    has_quantize = any(n.op_type == "QuantizeLinear" for n in graph.node)
    fused = _qdq_fused(graph, producer, consumers, types, is_float, graph_outputs, boundary_ids) \
        if style == "qdq" and has_quantize else set()

    float_ops: list[FloatOp] = []
    boundary: list[FloatOp] = []
    for n in graph.node:
        if n.op_type == "Constant":
            continue
        touches_float = any(is_float(i) for i in n.input) or any(is_float(o) for o in n.output)
        item = FloatOp(n.name or f"<unnamed {n.op_type}>", n.op_type, n.domain)
        if id(n) in boundary_ids and has_quantize:
            if touches_float:
                boundary.append(item)
            continue
        if n.op_type in SHAPE_OPS and not any(is_float(o) for o in n.output):
            continue
        if touches_float and id(n) not in fused:
            float_ops.append(item)
    integer_only = bool(graph.node) and not float_ops
    return IntegerOnlyReport(
        integer_only=integer_only,
        float_ops=float_ops,
        boundary=boundary,
        node_count=len(graph.node),
        op_counts=dict(Counter(n.op_type for n in graph.node)),
        style=style,
    )


def _qdq_fused(graph, producer, consumers, types, is_float, graph_outputs, boundary_ids) -> set[int]:
    """ids of the nodes of a QDQ graph that run as integer kernels, with their Q/DQ nodes."""
    integer = lambda name: types.get(name, 0) in _QUANT_TYPES or types.get(name, 0) == TensorProto.INT32  # noqa: E731
    ops = {id(n): n for n in graph.node
           if n.op_type in QDQ_INTEGER_OPS and (any(is_float(i) for i in n.input) or any(is_float(o) for o in n.output))}
    dq_ok = {id(n) for n in graph.node if n.op_type == "DequantizeLinear" and integer(n.input[0])}

    def fed_ok(name: str) -> bool:  # a float input of a candidate
        src = producer.get(name)
        return src is not None and (id(src) in dq_ok or id(src) in ops)

    changed = True
    while changed:
        changed = False
        for key, n in list(ops.items()):
            inputs_ok = all(fed_ok(i) for i in n.input if i and types.get(i, 0) in FLOAT_TYPES)
            outputs_ok = all(
                o not in graph_outputs and consumers.get(o)
                and all(c.op_type == "QuantizeLinear" or id(c) in ops for c in consumers[o])
                for o in n.output if o
            )
            if not (inputs_ok and outputs_ok):
                del ops[key]
                changed = True
    fused = set(ops)
    for n in graph.node:  # the Q/DQ nodes that only border fused nodes are integer markers
        if n.op_type == "DequantizeLinear" and id(n) in dq_ok:
            users = [c for o in n.output for c in consumers.get(o, [])]
            if all(id(c) in fused or id(c) in boundary_ids for c in users):
                fused.add(id(n))
        elif n.op_type == "QuantizeLinear" and not is_float(n.output[0]):
            src = producer.get(n.input[0])
            if src is not None and (id(src) in fused or src.op_type == "DequantizeLinear"):
                fused.add(id(n))
    return fused
