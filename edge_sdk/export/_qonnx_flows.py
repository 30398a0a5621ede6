"""Graph clean-ups after the QONNX export that make the file the named FPGA tool takes as it is.

The quantizer choices of each flow are config presets (:data:`edge_sdk.export.config.FLOWS`);
what cannot be chosen in Brevitas is rewritten here, exactly (the executed outputs are
verified against the Brevitas model afterwards, as for every QONNX file):

* ``finn``: 1-d convolutions become 2-d (the input gets a trailing axis of 1, as qonnx's
  ``Change3DTo4DTensors`` does on graphs without Quant nodes); a classifier over a map of
  more than one pixel becomes a convolution over the whole map (FINN's RemoveCNVtoFCFlatten
  keeps the Transpose + Flatten before it out of the dataflow otherwise); scalar ``Quant``
  parameters get shape ``(1,)`` (FINN's pinned qonnx crashes on a 0-d zero-point);
* ``hls4ml``: a ``GlobalAveragePool`` over a power-of-two number of pixels becomes a
  depthwise convolution with the weight 1/pixels (one step of a power-of-two Quant, so the
  same values): qonnx's channels-last conversion moves convolutions channels-last but leaves
  a ``Transpose`` before a ``GlobalAveragePool``, which breaks hls4ml's ``io_stream``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_sdk.export._compat import QONNX_IR_VERSION, qonnx_ir_fix, require

__all__ = ["apply_flow", "scalar_params_as_vectors", "global_pool_as_depthwise_conv", "classifier_as_conv"]


def apply_flow(model: onnx.ModelProto, flow: str | None) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` rewritten for ``flow`` (``None``: unchanged) and the list of what changed."""
    if flow == "finn":
        model, changes = _conv1d_as_2d(model)
        model, more = classifier_as_conv(model)
        model, most = scalar_params_as_vectors(model)
        return model, changes + more + most
    if flow == "hls4ml":
        model, changes = global_pool_as_depthwise_conv(model)
        return (_cleanup(model) if changes else model), changes
    return model, []


def _cleanup(model: onnx.ModelProto) -> onnx.ModelProto:
    """qonnx's clean-up (shapes inferred again, names made unique) after a rewrite."""
    modelwrapper = require("qonnx.core.modelwrapper")
    cleanup = require("qonnx.util.cleanup")
    with qonnx_ir_fix():
        proto = cleanup.cleanup_model(modelwrapper.ModelWrapper(model)).model
    proto.ir_version = min(proto.ir_version, QONNX_IR_VERSION)
    return proto


_SPATIAL_1D = {"Conv": ("kernel_shape", "strides", "dilations", "pads"),
               "MaxPool": ("kernel_shape", "strides", "dilations", "pads"),
               "AveragePool": ("kernel_shape", "strides", "pads")}


def _conv1d_as_2d(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """1-d convolutions and pools as 2-d ones over ``(L, 1)``: the input gets a trailing axis
    of 1, weights and per-channel scales a trailing 1, attributes a second (neutral) entry.
    Flatten sees the same order (``C*L*1``). qonnx's Change3DTo4DTensors refuses graphs with
    Quant nodes, so it is done here."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    if not convs or any(len(_weight_dims(n, inits, producer)) != 3 for n in convs):
        return model, []
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 3:
        return model, []
    dims.add().dim_value = 1
    for node in graph.node:
        names = _SPATIAL_1D.get(node.op_type, ())
        for attr in node.attribute:
            if attr.name in names:
                ints = list(attr.ints)
                del attr.ints[:]
                attr.ints.extend([ints[0], 0, ints[1], 0] if attr.name == "pads" else [ints[0], 1])
        if node.op_type == "Conv":
            name = node.input[1]
            while name not in inits:  # through the weight's Quant: its per-channel scale too
                quant = producer[name]
                for param in quant.input[1:]:
                    _append_axis(inits.get(param), 3)
                name = quant.input[0]
            _append_axis(inits[name], 3)
    del graph.value_info[:]
    return _cleanup(model), ["1-d convolutions as 2-d (the input gets a trailing axis of 1)"]


def _append_axis(init: onnx.TensorProto | None, rank: int) -> None:
    """Give a rank-``rank`` initializer a trailing axis of 1 (others are left alone)."""
    if init is not None and len(init.dims) == rank:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[..., None], init.name))


def _weight_dims(conv: onnx.NodeProto, inits, producer) -> list[int]:
    """Dims of a Conv's weight, looking through the Quant that feeds it."""
    name = conv.input[1]
    while name not in inits and name in producer:
        name = producer[name].input[0]
    return list(inits[name].dims) if name in inits else []


def classifier_as_conv(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """``Flatten`` of a ``(N, C, H, W)`` map with ``H*W > 1`` into a ``Gemm`` becomes a ``Conv``
    with the whole map as its kernel, then ``Flatten`` of the ``(N, M, 1, 1)`` result: the same
    sums. FINN moves a Transpose + Flatten between convolution and classifier out of the
    dataflow only when the map is 1 x 1 (and its MVAU would read the map as one vector)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    shapes = _shapes(model)
    changes: list[str] = []
    for flat in list(graph.node):
        shape = shapes.get(flat.input[0]) if flat.op_type == "Flatten" else None
        gemms = users.get(flat.output[0], [])
        if not shape or len(shape) != 4 or shape[2] * shape[3] == 1 or len(gemms) != 1:
            continue
        gemm = gemms[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
        quant = producer.get(gemm.input[1])
        if (gemm.op_type != "Gemm" or not attrs.get("transB") or attrs.get("transA") or gemm.input[0] != flat.output[0]
                or quant is None or quant.op_type != "Quant" or quant.input[0] not in inits):
            continue
        weight = numpy_helper.to_array(inits[quant.input[0]])
        weight4 = weight.reshape(weight.shape[0], *shape[1:])
        inits[quant.input[0]].CopyFrom(numpy_helper.from_array(weight4, quant.input[0]))
        for param in quant.input[1:]:
            init = inits.get(param)
            if init is not None and len(init.dims) == 2:  # per-output-channel scale (M, 1)
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).reshape(-1, 1, 1, 1), param))
        conv_out = f"{gemm.output[0]}_map"
        conv = helper.make_node("Conv", [flat.input[0], gemm.input[1], *gemm.input[2:3]], [conv_out],
                                name=f"{gemm.name}_as_conv", kernel_shape=list(shape[2:]), pads=[0, 0, 0, 0],
                                strides=[1, 1], dilations=[1, 1], group=1)
        new_flat = helper.make_node("Flatten", [conv_out], list(gemm.output), name=flat.name, axis=1)
        nodes = []
        for n in graph.node:
            if n is flat:
                continue
            nodes.extend([conv, new_flat] if n is gemm else [n])
        del graph.node[:]
        graph.node.extend(nodes)
        changes.append(f"{gemm.name}: classifier over a {shape[2]}x{shape[3]} map as a convolution")
    if changes:
        del graph.value_info[:]
        model = _cleanup(model)
    return model, changes


def scalar_params_as_vectors(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Give every 0-d scale / zero-point / bit-width initializer of a ``Quant`` shape ``(1,)``."""
    inits = {i.name: i for i in model.graph.initializer}
    done: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in ("Quant", "BipolarQuant", "Trunc"):
            continue
        for name in node.input[1:]:
            init = inits.get(name)
            if init is not None and len(init.dims) == 0 and name not in done:
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).reshape(1), name))
                done.add(name)
    keep = [vi for vi in model.graph.value_info if vi.name not in done]  # their old 0-d shapes
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return model, [f"{len(done)} scalar Quant parameters as shape (1,)"] if done else []


def global_pool_as_depthwise_conv(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Each ``GlobalAveragePool`` on ``(N, C, H, W)`` with ``H*W`` a power of two becomes a
    depthwise ``Conv`` (kernel ``H x W``) whose weight is one Quant step of 1/(H*W)."""
    graph = model.graph
    shapes = _shapes(model)
    changes: list[str] = []
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        shape = shapes.get(node.input[0]) if node.op_type == "GlobalAveragePool" else None
        pixels = int(np.prod(shape[2:])) if shape and len(shape) == 4 and all(shape[1:]) else 0
        if not pixels or pixels & (pixels - 1):
            nodes.append(node)
            continue
        channels, base = shape[1], node.name or node.output[0]
        step = np.float32(1.0 / pixels)
        names = {k: f"{base}_dw_{k}" for k in ("w", "scale", "zero", "bits", "wq")}
        graph.initializer.extend([
            numpy_helper.from_array(np.full((channels, 1, *shape[2:]), step, np.float32), names["w"]),
            numpy_helper.from_array(np.array(step, np.float32), names["scale"]),
            numpy_helper.from_array(np.array(0.0, np.float32), names["zero"]),
            numpy_helper.from_array(np.array(2.0, np.float32), names["bits"]),
        ])
        nodes.append(helper.make_node("Quant", [names["w"], names["scale"], names["zero"], names["bits"]],
                                      [names["wq"]], name=f"{base}_dw_quant", domain="qonnx.custom_op.general",
                                      signed=1, narrow=0, rounding_mode="ROUND"))
        nodes.append(helper.make_node("Conv", [node.input[0], names["wq"]], list(node.output), name=base,
                                      group=channels, kernel_shape=list(shape[2:]), pads=[0, 0, 0, 0],
                                      strides=[1, 1], dilations=[1, 1]))
        changes.append(f"{base}: GlobalAveragePool over {pixels} pixels as a depthwise convolution")
    if changes:
        del graph.node[:]
        graph.node.extend(nodes)
    return model, changes


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - custom Quant ops: keep whatever value_info there is
        inferred = model
    out: dict[str, list[int]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    return out
