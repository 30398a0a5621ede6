"""Deployment form of an ONNX file: short tensor names, no shape metadata, no dead weights.

Node names (the layer paths torch gives them, e.g. ``/layers/layers.1/conv2/Conv_quant``)
are kept so that reports and runtime errors still point at a layer; tensor names, which
each node repeats for every input, become short ids. The graph input and output keep
their names. The same form is applied to the fp32 baseline before sizes are compared.
"""

from __future__ import annotations

import onnx

__all__ = ["compact_model"]


def _short(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if i == 0:
            return "t" + out


def compact_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with short tensor names, no value_info/doc strings, no unused initializers."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for n in m.graph.node for a in n.attribute):
        return m  # subgraphs may name outer tensors: leave names alone
    g = m.graph
    used = {i for n in g.node for i in n.input if i} | {o.name for o in g.output}
    keep = [init for init in g.initializer if init.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]
    m.doc_string = ""
    g.doc_string = ""
    for n in g.node:
        n.doc_string = ""
    fixed = {i.name for i in g.input} | {o.name for o in g.output}
    mapping: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in fixed:
            return name
        if name not in mapping:
            mapping[name] = _short(len(mapping))
        return mapping[name]

    for init in g.initializer:
        init.name = rename(init.name)
    for n in g.node:
        for k, name in enumerate(n.input):
            n.input[k] = rename(name)
        for k, name in enumerate(n.output):
            n.output[k] = rename(name)
    # graph inputs that are initializers too (old-style models) follow their initializer
    for inp in g.input:
        if inp.name in mapping:
            inp.name = mapping[inp.name]
    return m
