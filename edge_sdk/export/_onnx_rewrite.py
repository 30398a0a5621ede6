"""Exact float-graph rewrites that let onnxruntime's QOperator quantizer cover more ops.

* ``BatchNormalization`` left standalone (not folded into a Conv, e.g. the token BatchNorm
  of an integer-friendly transformer) becomes ``Mul`` + ``Add`` with per-channel constants;
  onnxruntime quantizes those as ``QLinearMul`` / ``QLinearAdd`` but has no quantized
  BatchNormalization in operator format.
* ``Gather`` with one constant index on an activation (``qkv[0]``, ``x[:, 0]``) becomes
  ``Split`` + ``Squeeze``: onnxruntime 1.31's operator-format quantizer only quantizes a
  Gather whose data is a weight (an embedding table), so an activation Gather would
  otherwise dequantize to float, while Split and Squeeze are quantized (same scale).

Both rewrites are exact in float arithmetic; shapes must be static (export with a fixed batch).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["rewrite_for_quantization", "pad_stem_channels"]

log = logging.getLogger(__name__)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _shapes(model: onnx.ModelProto) -> tuple[dict[str, list[int | None]], dict[str, int]]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    out: dict[str, list[int | None]] = {}
    types: dict[str, int] = {}
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        tt = vi.type.tensor_type
        types[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for init in inferred.graph.initializer:
        out[init.name] = list(init.dims)
        types[init.name] = init.data_type
    return out, types


def rewrite_for_quantization(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Apply the rewrites; returns the new model and a list of what was changed."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    const_values = {
        n.output[0]: numpy_helper.to_array(_attr(n, "value"))
        for n in graph.node
        if n.op_type == "Constant" and _attr(n, "value") is not None
    }
    shapes, types = _shapes(model)
    # torch's exporter shares equal initializers through Identity nodes
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    changes: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []

    def const(name: str) -> np.ndarray | None:
        for _ in range(8):
            if name not in alias:
                break
            name = alias[name]
        if name in inits:
            return numpy_helper.to_array(inits[name])
        return const_values.get(name)

    for node in graph.node:
        if node.op_type == "BatchNormalization" and len(node.output) == 1:
            replaced = _batchnorm_to_affine(node, const, shapes, new_inits)
            if replaced:
                new_nodes.extend(replaced)
                changes.append(f"{node.name}: BatchNormalization -> Mul+Add")
                continue
        if node.op_type == "Gather" and opset >= 13 and types.get(node.input[0]) == onnx.TensorProto.FLOAT:
            replaced = _gather_to_split(node, const, shapes, inits, new_inits)
            if replaced:
                new_nodes.extend(replaced)
                changes.append(f"{node.name}: Gather -> Split+Squeeze")
                continue
        new_nodes.append(node)
    if changes:
        del graph.node[:]
        graph.node.extend(new_nodes)
        graph.initializer.extend(new_inits)
        log.debug("rewrites: %s", "; ".join(changes))
    return model, changes


def _batchnorm_to_affine(node, const, shapes, new_inits):
    x, scale, bias, mean, var = list(node.input) + [""] * (5 - len(node.input))
    arrays = [const(n) for n in (scale, bias, mean, var)]
    rank = len(shapes.get(x) or [])
    if any(a is None for a in arrays) or rank < 2:
        return None
    scale_v, bias_v, mean_v, var_v = (a.astype(np.float64) for a in arrays)
    eps = float(_attr(node, "epsilon", 1e-5))
    s = scale_v / np.sqrt(var_v + eps)
    t = bias_v - mean_v * s
    shape = [s.shape[0]] + [1] * (rank - 2)
    base = node.name or node.output[0]
    s_name, t_name, mid = f"{base}_affine_scale", f"{base}_affine_shift", f"{node.output[0]}_scaled"
    new_inits.append(numpy_helper.from_array(s.reshape(shape).astype(np.float32), s_name))
    new_inits.append(numpy_helper.from_array(t.reshape(shape).astype(np.float32), t_name))
    return [
        helper.make_node("Mul", [x, s_name], [mid], name=f"{base}_mul"),
        helper.make_node("Add", [mid, t_name], [node.output[0]], name=f"{base}_add"),
    ]


def _gather_to_split(node, const, shapes, inits, new_inits):
    data, index_name = node.input[0], node.input[1]
    if data in inits:  # an embedding table: onnxruntime quantizes that Gather itself
        return None
    index = const(index_name)
    shape = shapes.get(data)
    if index is None or index.size != 1 or not shape or any(d is None for d in shape):
        return None
    axis = int(_attr(node, "axis", 0))
    axis = axis + len(shape) if axis < 0 else axis
    size = shape[axis]
    i = int(index.reshape(-1)[0])
    i = i + size if i < 0 else i
    if not 0 <= i < size:
        return None
    pieces = [p for p in (i, 1, size - i - 1) if p > 0]
    keep = 1 if i > 0 else 0  # position of the selected piece among the outputs
    base = node.name or node.output[0]
    split_name, axes_name = f"{base}_split_sizes", f"{base}_squeeze_axes"
    new_inits.append(numpy_helper.from_array(np.array(pieces, dtype=np.int64), split_name))
    outs = [f"{base}_part{k}" for k in range(len(pieces))]
    if index.ndim != 0:  # a 1-element index keeps the axis: the split piece is the output
        outs[keep] = node.output[0]
    nodes = [helper.make_node("Split", [data, split_name], outs, name=f"{base}_split", axis=axis)]
    if index.ndim == 0:  # scalar index drops the axis
        new_inits.append(numpy_helper.from_array(np.array([axis], dtype=np.int64), axes_name))
        nodes.append(
            helper.make_node("Squeeze", [outs[keep], axes_name], [node.output[0]], name=f"{base}_squeeze")
        )
    return nodes


def pad_stem_channels(model: onnx.ModelProto, multiple: int = 4) -> tuple[onnx.ModelProto, list[str]]:
    """Zero-pad the input channels of a 2-d Conv fed by the graph input up to ``multiple``.

    onnxruntime's int8 convolution kernels handle one to three input channels slowly (an
    image stem on grey or RGB input ran slower in int8 than in fp32); padding the input
    with zero channels and the weights with zero filters gives the same result exactly.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    graph_inputs = {i.name for i in graph.input} - set(inits)
    changes: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if (
            node.op_type == "Conv"
            and node.input[0] in graph_inputs
            and len(node.input) > 1
            and node.input[1] in inits
            and int(_attr(node, "group", 1)) == 1
        ):
            w = numpy_helper.to_array(inits[node.input[1]])
            c_in = w.shape[1]
            if w.ndim == 4 and c_in % multiple:  # 2-d only: measured no gain on Conv1d
                extra = multiple - c_in % multiple
                padded = np.concatenate([w, np.zeros((w.shape[0], extra, *w.shape[2:]), w.dtype)], axis=1)
                base = node.name or node.output[0]
                w_name, pads_name, x_name = f"{base}_w_padded", f"{base}_in_pads", f"{base}_input_padded"
                rank = w.ndim
                pads = np.zeros(2 * rank, dtype=np.int64)
                pads[rank + 1] = extra  # end of the channel axis
                graph.initializer.extend([numpy_helper.from_array(padded, w_name),
                                          numpy_helper.from_array(pads, pads_name)])
                new_nodes.append(helper.make_node("Pad", [node.input[0], pads_name], [x_name],
                                                  name=f"{base}_pad_channels", mode="constant"))
                node.input[0] = x_name
                node.input[1] = w_name
                changes.append(f"{node.name}: input channels {c_in} -> {c_in + extra} (zero-padded)")
        new_nodes.append(node)
    if changes:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return model, changes
