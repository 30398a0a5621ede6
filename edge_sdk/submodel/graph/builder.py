"""The submodel builder: a physically smaller copy of the traced graph for given kept units.

It slices every tensor along its kept indices, shrinks each leaf module (its tensors and the
constructor sizes the analysis recorded, e.g. ``out_channels``) and applies the analysis'
rewrites to the shape constants of reshape-like calls.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from edge_sdk.submodel.graph.analysis import Analysis
from edge_sdk.submodel.graph.dims import dim_size

__all__ = ["build_submodel"]


def build_submodel(model: nn.Module, an: Analysis, keep: Sequence[np.ndarray],
                   index_map: dict[str, list[torch.Tensor | None]]) -> fx.GraphModule:
    """A physically smaller GraphModule holding the kept slices of ``model``'s tensors."""
    counts = [len(k) for k in keep]
    modules = dict(model.named_modules())
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    root: dict[str, Any] = {}

    def sliced(name: str) -> torch.Tensor:
        """A new tensor (never a view of the global model's storage)."""
        t = tensors[name].detach()
        copied = False
        for dim, idx in enumerate(index_map.get(name, [])):
            if idx is not None:
                t = t.index_select(dim, idx)
                copied = True
        return t if copied else t.clone()

    graph = fx.Graph()
    val_map: dict[fx.Node, fx.Node] = {}
    out = graph.graph_copy(an.graph, val_map)
    graph.output(out)
    for old, new in val_map.items():
        if old.op == "call_module" and new.target not in root:
            root[new.target] = _shrink_module(modules[new.target], new.target, an, counts, sliced, index_map)
        elif old.op == "get_attr" and new.target not in root:
            if new.target in tensors:
                t = sliced(new.target)
                orig = tensors[new.target]
                root[new.target] = nn.Parameter(t, requires_grad=orig.requires_grad) if isinstance(orig, nn.Parameter) else t
            else:
                root[new.target] = copy.deepcopy(_get_attr(model, new.target))
        rw = an.rewrites.get(old.name)
        if rw is not None:
            rw.apply(new, counts)
    gm = fx.GraphModule(root, graph, class_name=type(model).__name__ + "Submodel")
    gm.train(model.training)
    return gm


def _get_attr(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _shrink_module(mod: nn.Module, target: str, an: Analysis, counts: Sequence[int],
                   sliced: Callable[[str], torch.Tensor],
                   index_map: dict[str, list[torch.Tensor | None]]) -> nn.Module:
    """A copy of leaf ``mod`` with its own tensors sliced and the recorded sizes shrunk."""
    attrs = an.module_attrs.get(target)
    own = [f"{target}.{n}" for n, t in list(mod._parameters.items()) + list(mod._buffers.items()) if t is not None]
    if attrs is None and not any(i is not None for name in own for i in index_map.get(name, ())):
        has_state = any(True for _ in mod.parameters()) or any(True for _ in mod.buffers())
        return copy.deepcopy(mod) if has_state else copy.copy(mod)
    new = copy.copy(mod)
    new._parameters = dict(mod._parameters)  # type: ignore[assignment]
    new._buffers = dict(mod._buffers)  # type: ignore[assignment]
    new._modules = {k: copy.deepcopy(v) for k, v in mod._modules.items()}  # type: ignore[assignment]
    for pn, p in mod._parameters.items():
        if p is not None:
            new._parameters[pn] = nn.Parameter(sliced(f"{target}.{pn}"), requires_grad=p.requires_grad)
    for bn, b in mod._buffers.items():
        if b is not None:
            new._buffers[bn] = sliced(f"{target}.{bn}")
    for key, ld in (attrs or {}).items():  # a tuple of leaf dims is a shape (normalized_shape)
        setattr(new, key, tuple(dim_size(x, counts) for x in ld) if isinstance(ld, tuple) else dim_size(ld, counts))
    return new
