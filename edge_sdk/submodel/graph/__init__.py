"""Channel-coupling analysis of a model traced with torch.fx (for structured extraction).

One job per module: :mod:`.dims` (the union-find of dimension spaces), :mod:`.analysis`
(tracing and the :class:`Analysis` result), :mod:`.rules` (the registry of per-layer and
per-operator rules, which users extend for their own layers), :mod:`.module_rules` and
:mod:`.op_rules` (the built-in rules), :mod:`.rewrite` (how graph nodes change in a submodel)
and :mod:`.builder` (the smaller GraphModule).
"""

from __future__ import annotations

from edge_sdk.submodel.graph.analysis import Analyser, Analysis, analyse
from edge_sdk.submodel.graph.builder import build_submodel
from edge_sdk.submodel.graph.dims import LeafDim, LeafDims, dim_indices, dim_size
from edge_sdk.submodel.graph.rules import (
    Fallback,
    default_module_rule,
    register_function_rule,
    register_method_rule,
    register_module_rule,
)

__all__ = [
    "Analysis",
    "Analyser",
    "analyse",
    "build_submodel",
    "dim_indices",
    "dim_size",
    "LeafDim",
    "LeafDims",
    "Fallback",
    "default_module_rule",
    "register_module_rule",
    "register_function_rule",
    "register_method_rule",
]
