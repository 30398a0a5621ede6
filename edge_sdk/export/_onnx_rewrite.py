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

After quantization, two exact rewrites of the QOperator graph suit onnxruntime's channels-last
int8 kernels (its NHWC transformer runs every QLinearConv channels-last and wraps the region
in Transposes, which it cancels against Transposes already in the graph):

* :func:`stem_space_to_depth`: a 2-d first convolution on 1-3 input channels becomes a
  convolution on ``f`` consecutive pixels of a row times the channels (``f*C`` a multiple of
  4, as the symmetric VNNI kernel wants) that writes ``f/stride`` output pixels as
  ``f/stride`` groups of output channels; the integer weights are the old ones moved to new
  places (zeros elsewhere), so the integer results are identical, and the reshapes in and
  out are free in channels-last memory.
* :func:`flatten_channels_last`: ``Flatten`` of a channels-last activation feeding a
  ``QGemm`` / ``QLinearMatMul`` flattens in (pixel, channel) order with the weight rows
  permuted to match, so the Transpose back to channels-first disappears.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_sdk.export.integer_check import producers_and_consumers

__all__ = ["rewrite_for_quantization", "pad_stem_channels", "stem_space_to_depth", "flatten_channels_last",
           "rewrite_for_ort_layout"]

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


# ----------------------------------------------------------------- after quantization


def _graph_maps(graph: onnx.GraphProto):
    return ({i.name: i for i in graph.initializer}, *producers_and_consumers(graph))


def _replace_nodes(graph: onnx.GraphProto, at: onnx.NodeProto, new: list[onnx.NodeProto],
                   drop: list[onnx.NodeProto]) -> None:
    """Put ``new`` where ``at`` is and remove ``at`` and ``drop`` (nodes known by their first output)."""
    key = lambda n: n.output[0]  # noqa: E731 - tensor names are unique in a graph
    gone = {key(n) for n in [at, *drop]}
    nodes = []
    for n in graph.node:
        if key(n) == key(at):
            nodes.extend(new)
        if key(n) not in gone:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)


def _space_to_depth_factor(channels: int, stride: int, width: int) -> int | None:
    for f in range(2, 17):
        if f % stride == 0 and (f * channels) % 4 == 0 and width % f == 0:
            return f
    return None


def stem_space_to_depth(model: onnx.ModelProto, shapes: dict[str, list[int]],
                        ranks: tuple[int, ...] = (2,)) -> tuple[onnx.ModelProto, list[str]]:
    """Rewrite a quantized first convolution on 1-3 input channels as a space-to-depth one.

    The convolution must be an operator-format ``QLinearConv`` (group 1, dilation 1, int8
    weights with zero points 0) whose input is the ``QuantizeLinear`` (per-tensor) of a graph
    input, directly or through the channel ``Pad`` of :func:`pad_stem_channels`; its output
    width must be ``W / stride`` and a block must hold more than one stride (so not a patch
    embedding, where it measured no gain). ``shapes`` gives tensor shapes (:func:`_ort.tensor_shapes`);
    the batch axis stays free (reshapes copy it), so a dynamic-batch graph works too.
    ``ranks``: the numbers of spatial axes rewritten (measured: a 2-d image stem went from 15
    to 8 us on this CPU; the 1-d stem of ``cnn1d`` gained 0.2 us for 2.4x its weight bytes).
    """
    changes: list[str] = []
    while True:  # one rewrite at a time: a rewrite rebuilds the node list
        change = _stem_space_to_depth_once(model.graph, shapes, ranks)
        if change is None:
            return model, changes
        changes.append(change)


def _stem_space_to_depth_once(graph: onnx.GraphProto, shapes, ranks) -> str | None:
    inits, producer, consumers = _graph_maps(graph)
    graph_inputs = {i.name for i in graph.input} - set(inits)
    outputs = {o.name for o in graph.output}
    for conv in graph.node:
        if conv.op_type != "QLinearConv" or conv.domain not in ("", "ai.onnx") or len(conv.input) < 8:
            continue
        quant, pad = producer.get(conv.input[0]), None
        if quant is not None and quant.op_type == "Pad" and _pads_channels_only(quant, inits):
            # the input quantized first (quantize_input_first), then the channel Pad
            pad, quant = quant, producer.get(quant.input[0])
            if (quant is None or quant.op_type != "QuantizeLinear" or quant.input[0] not in graph_inputs
                    or len(consumers.get(pad.output[0], [])) != 1 or pad.output[0] in outputs):
                continue
        if (quant is None or quant.op_type != "QuantizeLinear" or len(consumers.get(quant.output[0], [])) != 1
                or quant.output[0] in outputs):
            continue
        src = quant.input[0]
        if pad is None and src not in graph_inputs:
            pad = producer.get(src)
            if (pad is None or pad.op_type != "Pad" or pad.input[0] not in graph_inputs
                    or len(consumers.get(src, [])) != 1 or src in outputs or not _pads_channels_only(pad, inits)):
                continue
            src = pad.input[0]
        rewritten = _stem_nodes(conv, quant, src, inits, shapes, ranks)
        if rewritten is None:
            continue
        nodes, new_inits, f, channels = rewritten
        graph.initializer.extend(new_inits)
        _replace_nodes(graph, quant, nodes, [conv] + ([pad] if pad is not None else []))
        return (f"{conv.name}: stem as space-to-depth x{f} along the width "
                f"({channels} output channels{', channel Pad removed' if pad is not None else ''})")
    return None


def _pads_channels_only(pad: onnx.NodeProto, inits) -> bool:
    """A ``Pad`` that adds only channels (axis 1), as :func:`pad_stem_channels` writes it."""
    if len(pad.input) < 2 or pad.input[1] not in inits or len(pad.input) > 3 and pad.input[3]:
        return False
    pads = numpy_helper.to_array(inits[pad.input[1]]).reshape(-1)
    rank = pads.size // 2
    keep = np.ones(pads.size, bool)
    keep[[1, rank + 1]] = False
    return pads.size % 2 == 0 and rank >= 2 and not np.any(pads[keep])


def _stem_nodes(conv, quant, src, inits, shapes, ranks):
    const = lambda name: numpy_helper.to_array(inits[name]) if name in inits else None  # noqa: E731
    xs, ys = shapes.get(src), shapes.get(conv.output[0])
    w = const(conv.input[3])
    w_scale, w_zp = const(conv.input[4]), const(conv.input[5])
    x_scale, x_zp = const(quant.input[1]), const(quant.input[2]) if len(quant.input) > 2 else None
    bias = const(conv.input[8]) if len(conv.input) > 8 and conv.input[8] else None
    if xs is None or ys is None or w is None or w_scale is None or w_zp is None or x_scale is None:
        return None
    rank = w.ndim - 2
    if (rank not in ranks or len(xs) != rank + 2 or w.dtype != np.int8 or np.any(w_zp != 0)
            or x_scale.size != 1 or (x_zp is not None and x_zp.size != 1)
            or (len(conv.input) > 8 and conv.input[8] and bias is None)):
        return None
    channels = xs[1]
    if channels % 4 == 0 or w.shape[1] < channels or np.any(w[:, channels:]):
        return None  # only 1-3 channels (zero-padded to 4 at most by pad_stem_channels)
    w = w[:, :channels]
    if int(_attr(conv, "group", 1)) != 1 or any(d != 1 for d in _attr(conv, "dilations", [1] * rank)):
        return None
    if _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    strides = list(_attr(conv, "strides", [1] * rank))
    pads = list(_attr(conv, "pads", [0] * 2 * rank))
    stride, width, kernel, left = strides[-1], xs[-1], w.shape[-1], pads[rank - 1]
    f = _space_to_depth_factor(channels, stride, width)
    if f is None or ys[-1] * stride != width or f == stride:
        return None  # f == stride (a patch embedding): one output pixel per block, measured no gain
    phases, c_out = f // stride, w.shape[0]
    offsets = [stride * p - left + k for p in range(phases) for k in range(kernel)]
    d_min, d_max = min(o // f for o in offsets), max(o // f for o in offsets)
    new_w = np.zeros((phases * c_out, f * channels, *w.shape[2:-1], d_max - d_min + 1), np.int8)
    for p in range(phases):
        for k in range(kernel):
            d, e = divmod(stride * p - left + k, f)  # block and position in it of the input pixel
            new_w[p * c_out:(p + 1) * c_out, e * channels:(e + 1) * channels, ..., d - d_min] = w[..., k]
    base = conv.name or conv.output[0]
    names = lambda key: f"{base}_s2d_{key}"  # noqa: E731
    tile = lambda a: a if a.size == 1 else np.tile(a.reshape(-1), phases)  # noqa: E731
    new_pads = list(pads)
    new_pads[rank - 1], new_pads[2 * rank - 1] = -d_min, d_max
    spatial = xs[2:-1]  # the axes in front of the width are not regrouped
    new_inits = [
        numpy_helper.from_array(new_w, names("w")),
        numpy_helper.from_array(tile(w_scale).astype(w_scale.dtype), names("w_scale")),
        numpy_helper.from_array(tile(w_zp).astype(w_zp.dtype), names("w_zero_point")),
        numpy_helper.from_array(np.array([0, *spatial, width // f, f * channels], np.int64), names("in_shape")),
        numpy_helper.from_array(np.array([0, *ys[2:-1], width // stride, c_out], np.int64), names("out_shape")),
    ]
    if bias is not None:
        new_inits.append(numpy_helper.from_array(tile(bias).astype(np.int32), names("bias")))
    n_axes = rank + 2
    to_first, to_last = [0, n_axes - 1, *range(1, n_axes - 1)], [0, *range(2, n_axes), 1]
    # the input is quantized first (per tensor, so it commutes with the moves): no float op
    # runs before the graph's first QuantizeLinear
    nodes = [helper.make_node("QuantizeLinear", [src, *quant.input[1:]], [names("x_int")], name=quant.name)]
    x = names("x_int")
    if channels > 1:  # channels-last first; for one channel that is only a reshape
        nodes.append(helper.make_node("Transpose", [x], [names("x_nhwc")], name=names("in_channels_last"),
                                      perm=to_last))
        x = names("x_nhwc")
    nodes += [
        helper.make_node("Reshape", [x, names("in_shape")], [names("x_blocks")], name=names("in_blocks")),
        helper.make_node("Transpose", [names("x_blocks")], [names("xq")], name=names("in_channels_first"),
                         perm=to_first),
    ]
    inputs = list(conv.input)
    inputs[0], inputs[3], inputs[4], inputs[5] = names("xq"), names("w"), names("w_scale"), names("w_zero_point")
    if bias is not None:
        inputs[8] = names("bias")
    new_conv = helper.make_node("QLinearConv", inputs, [names("y")], name=conv.name,
                                kernel_shape=list(new_w.shape[2:]), pads=new_pads, strides=strides[:-1] + [1])
    nodes += [
        new_conv,
        helper.make_node("Transpose", [names("y")], [names("y_nhwc")], name=names("out_channels_last"), perm=to_last),
        helper.make_node("Reshape", [names("y_nhwc"), names("out_shape")], [names("y_pixels")],
                         name=names("out_pixels")),
        helper.make_node("Transpose", [names("y_pixels")], [conv.output[0]], name=names("out_channels_first"),
                         perm=to_first),
    ]
    return nodes, new_inits, f, phases * c_out


# ops that onnxruntime's NHWC transformer keeps channels-last in a quantized graph
_CHANNELS_LAST_PRODUCERS = frozenset(
    {"QLinearConv", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearAdd", "MaxPool"})


def flatten_channels_last(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> tuple[onnx.ModelProto, list[str]]:
    """Flatten channels-last activations before a quantized matmul (weight rows permuted).

    For ``Flatten(axis=1)`` of an ``(N, C, *S)`` output of a convolution / pooling / add that
    feeds only a ``QGemm`` or ``QLinearMatMul`` with a constant weight, a ``Transpose`` to
    ``(N, *S, C)`` goes in front of the Flatten and the weight's input rows are permuted
    from ``c*S + s`` to ``s*C + c`` order: the same products, summed in the same int32
    accumulator, so the result is identical; onnxruntime cancels the inserted Transpose
    against its own channels-last-to-first one.
    """
    changes: list[str] = []
    while True:  # one rewrite at a time: a rewrite rebuilds the node list
        change = _flatten_channels_last_once(model.graph, shapes)
        if change is None:
            return model, changes
        changes.append(change)


def _flatten_channels_last_once(graph: onnx.GraphProto, shapes) -> str | None:
    inits, producer, consumers = _graph_maps(graph)
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type != "Flatten" or int(_attr(node, "axis", 1)) != 1 or node.output[0] in outputs:
            continue
        src = producer.get(node.input[0])
        shape = shapes.get(node.input[0])
        users = consumers.get(node.output[0], [])
        if (src is None or src.op_type not in _CHANNELS_LAST_PRODUCERS or not shape or len(shape) < 3
                or len(users) != 1 or len(consumers.get(node.input[0], [])) != 1):
            continue
        user = users[0]
        if user.input[0] != node.output[0]:
            continue
        if user.op_type == "QGemm" and len(user.input) > 3 and not _attr(user, "transA", 0):
            w_index, transposed = 3, bool(_attr(user, "transB", 0))
        elif user.op_type == "QLinearMatMul" and len(user.input) > 3:
            w_index, transposed = 3, False
        else:
            continue
        if user.input[w_index] not in inits:
            continue
        w = numpy_helper.to_array(inits[user.input[w_index]])
        c, s = shape[1], int(np.prod(shape[2:]))
        if w.ndim != 2 or (w.shape[1] if transposed else w.shape[0]) != c * s:
            continue
        old_of_new = np.arange(c * s).reshape(c, s).T.reshape(-1)  # row s*C + c comes from c*S + s
        new_w = w[:, old_of_new] if transposed else w[old_of_new, :]
        base = node.name or node.output[0]
        w_name, t_name = f"{base}_channels_last_weight", f"{node.input[0]}_channels_last"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(new_w), w_name))
        user.input[w_index] = w_name
        transpose = helper.make_node("Transpose", [node.input[0]], [t_name], name=f"{base}_channels_last",
                                     perm=[0, *range(2, len(shape)), 1])
        node.input[0] = t_name
        _replace_nodes(graph, node, [transpose, node], [])
        return f"{node.name}: flattens channels-last ({user.op_type} weight rows permuted)"
    return None


def rewrite_for_ort_layout(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> tuple[onnx.ModelProto, list[str]]:
    """Both post-quantization rewrites (:func:`stem_space_to_depth`, :func:`flatten_channels_last`)."""
    model, changes = stem_space_to_depth(model, shapes)
    model, more = flatten_channels_last(model, shapes)
    return model, changes + more
