"""The fx analysis: trace a model, run it once, and let the rules tie its dimension spaces.

A space is prunable when a Conv/Linear/Embedding output produces it and nothing fixes it.
Fixed are: the model's input and output dimensions, batch / spatial / token dimensions,
dimensions that are indexed, sliced, reduced, concatenated or soft-maxed, the head dimension
of attention (so heads are kept whole), and every dimension an operator the rules do not know
touches (a safe fallback that keeps those channels whole; listed in ``Analysis.fallbacks``).

The analysis runs once per architecture (cached by the caller); a plan then only picks kept
units per prunable leaf space (see :mod:`edge_sdk.submodel.graph.builder`).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from edge_sdk.errors import InvalidInputError
from edge_sdk.submodel.graph import module_rules as _module_rules  # noqa: F401  (registers the built-ins)
from edge_sdk.submodel.graph import op_rules as _op_rules  # noqa: F401  (registers the built-ins)
from edge_sdk.submodel.graph.dims import Desc, Factors, LeafDim, LeafDims, Spaces, norm_dim
from edge_sdk.submodel.graph.rewrite import ConstSize, Rewrite
from edge_sdk.submodel.graph.rules import (
    Fallback,
    function_rule_for,
    has_module_rule,
    method_rule_for,
    module_rule_for,
)

log = logging.getLogger(__name__)

__all__ = ["Analysis", "Analyser", "analyse"]


@dataclass
class Analysis:
    """Frozen result of the coupling analysis of one architecture."""

    graph: fx.Graph
    example_shape: tuple[int, ...]
    example_dtype: str
    leaf_sizes: list[int]  # size of each prunable leaf space
    param_dims: dict[str, LeafDims]  # state-dict name -> per-dim leaf lists
    module_attrs: dict[str, dict[str, Any]]  # call_module target -> attr -> LeafDim (tuple of them: a shape)
    rewrites: dict[str, Rewrite]  # node name -> how it changes in a submodel
    importance_params: list[str]  # weight tensors used for importance
    fallbacks: list[str] = field(default_factory=list)
    leaf_units: list[str] = field(default_factory=list)  # description per leaf (for reports)


def _is_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor)


class Analyser(fx.Interpreter):
    """Runs the traced graph and records, per node, the factor lists of its output dims.

    Rules use: :meth:`tensor_desc`, :meth:`param` (a parameter's description),
    :meth:`union_f` (tie two dims), :meth:`split_f`, :meth:`fix_factors` / :meth:`fix_desc`
    (never prune), :meth:`mark_producer` (a weight produces these channels),
    :meth:`add_weight` (counts for importance), :meth:`fresh`, :attr:`attrs` (module
    attributes to shrink), :attr:`rewrite_raw` (node rewrites) and :meth:`val`.
    """

    def __init__(self, gm: fx.GraphModule, model: nn.Module) -> None:
        super().__init__(gm)
        self.S = Spaces()
        self.descs: dict[fx.Node, Any] = {}
        self.pdims: dict[str, Desc] = {}
        self.attrs: dict[str, dict[str, Any]] = {}
        self.rewrite_raw: dict[str, Rewrite] = {}
        self.shape_descs: dict[fx.Node, Desc] = {}  # nodes holding x.shape / x.size()
        self.size_nodes: dict[fx.Node, tuple[Factors, int]] = {}  # int read from a tensor dim
        self.weights: list[str] = []
        self.fallbacks: list[str] = []
        self.modules = dict(gm.named_modules())
        self.tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}

    # ---- helpers for rules ----------------------------------------------------------------
    def fresh(self, shape: Sequence[int], fixed: bool = True, producer: bool = False) -> Desc:
        return [[self.S.new(s, fixed=fixed, producer=producer)] if s != 1 else [] for s in shape]

    def fix_desc(self, d: Any) -> None:
        if isinstance(d, list) and (not d or isinstance(d[0], list)):
            for f in d:
                for s in f:
                    self.S.fix(s)
        elif isinstance(d, (tuple, list)):
            for x in d:
                self.fix_desc(x)
        elif isinstance(d, dict):
            for x in d.values():
                self.fix_desc(x)

    def fix_factors(self, f: Factors) -> None:
        for s in f:
            self.S.fix(s)

    def mark_producer(self, f: Factors) -> None:
        """The spaces of ``f`` are produced by a weight (so they may be pruned)."""
        for s in f:
            self.S.mark_producer(s)

    def add_weight(self, name: str) -> None:
        """Count weight ``name`` in channel importance."""
        if name not in self.weights:
            self.weights.append(name)

    def union_f(self, a: Factors, b: Factors) -> None:
        la = [leaf for s in a for leaf in self.S.leaves(s)]
        lb = [leaf for s in b for leaf in self.S.leaves(s)]
        if not la and not lb:
            return
        self.S.align(la, lb)

    def split_f(self, f: Factors, sizes: Sequence[int]) -> list[Factors] | None:
        """Split a factor list into consecutive groups of the given sizes (refining)."""
        leaves = [leaf for s in f for leaf in self.S.leaves(s)]
        out: list[Factors] = []
        i = 0
        for size in sizes:
            if size == 1:
                out.append([])
                continue
            group: Factors = []
            prod = 1
            while prod < size:
                if i >= len(leaves):
                    return None
                leaf = self.S.find(leaves[i])
                if self.S.children[leaf]:
                    leaves[i:i + 1] = self.S.leaves(leaf)
                    continue
                s = self.S.size[leaf]
                need = size // prod
                if size % prod:
                    return None
                if s <= need:
                    if need % s:
                        return None
                    group.append(leaf)
                    prod *= s
                    i += 1
                elif s % need == 0:
                    leaves[i:i + 1] = self.S.refine(leaf, [need, s // need])
                else:
                    return None
            out.append(group)
        if i != len(leaves):
            return None
        return out

    def param(self, name: str) -> Desc:
        d = self.pdims.get(name)
        if d is None:
            t = self.tensors[name]
            d = self.fresh(tuple(t.shape), fixed=False)
            self.pdims[name] = d
        return d

    def desc_of(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self.descs.get(a)
        if isinstance(a, (tuple, list)):
            return type(a)(self.desc_of(x) for x in a)
        return None

    def tensor_desc(self, a: Any) -> Desc:
        """The description of a tensor argument (a Fallback when it is not one)."""
        d = self.desc_of(a)
        if d is None or not isinstance(d, list):
            raise Fallback("expected a tensor argument")
        return d

    def fresh_like(self, v: Any) -> Any:
        if _is_tensor(v):
            return self.fresh(v.shape)
        if isinstance(v, (tuple, list)):
            return type(v)(self.fresh_like(x) for x in v)
        return None

    def has_tensor(self, a: Any) -> bool:
        if isinstance(a, fx.Node):
            return self.descs.get(a) is not None
        if isinstance(a, (tuple, list)):
            return any(self.has_tensor(x) for x in a)
        return False

    @staticmethod
    def has_tensor_value(v: Any) -> bool:
        if _is_tensor(v):
            return True
        if isinstance(v, (tuple, list)):
            return any(Analyser.has_tensor_value(x) for x in v)
        return False

    def val(self, a: Any) -> Any:
        """Value of an argument as it was at run time."""
        if isinstance(a, fx.Node):
            return self.env[a]
        if isinstance(a, (tuple, list)):
            return type(a)(self.val(x) for x in a)
        return a

    def fallback(self, n: fx.Node, args: Any, kwargs: Any, result: Any, why: str = "") -> Any:
        for a in list(args) + list(kwargs.values()):
            self.fix_desc(self.desc_of(a))
        label = f"{n.op} {getattr(n.target, '__name__', n.target)} at {n.name}"
        self.fallbacks.append(label + (f" ({why})" if why else ""))
        log.info("structured extraction keeps channels whole around %s%s", label, f": {why}" if why else "")
        return self.fresh_like(result)

    # ---- interpreter ----------------------------------------------------------------------
    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        args = n.args
        kwargs = dict(n.kwargs)
        try:
            d = self.describe(n, args, kwargs, result)
        except Fallback as exc:
            d = self.fallback(n, args, kwargs, result, str(exc))
        if n.op == "call_module":  # every tensor of a leaf is part of the plan, whatever its rule did
            mod = self.modules[n.target]
            for name, _ in list(mod.named_parameters()) + list(mod.named_buffers()):
                self.param(f"{n.target}.{name}")
        self.descs[n] = d
        return result

    def describe(self, n: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
        if n.op == "placeholder":
            return self.fresh_like(result)
        if n.op == "output":
            self.fix_desc(self.desc_of(args[0]))
            return None
        if n.op == "get_attr":
            if n.target in self.tensors:
                return self.param(n.target)
            return self.fresh_like(result)
        if n.op == "call_module":
            mod = self.modules[n.target]
            return module_rule_for(mod)(self, n, mod, args, kwargs, result)
        if self._track_sizes(n, args, result):
            return None
        if n.op == "call_function":
            return function_rule_for(n.target)(self, n, args, kwargs, result)
        if n.op == "call_method":
            return method_rule_for(n.target)(self, n, args, kwargs, result)
        raise Fallback(f"node kind {n.op}")

    def _track_sizes(self, n: fx.Node, args: tuple, result: Any) -> bool:
        """Remember which tensor dimension an int (or a shape) was read from."""
        if n.op == "call_function" and n.target is getattr and len(args) > 1 and args[1] == "shape":
            d = self.descs.get(args[0])
            if isinstance(d, list):
                self.shape_descs[n] = d
            return True
        if n.op == "call_method" and n.target == "size":
            d = self.descs.get(args[0])
            if isinstance(d, list):
                if len(args) > 1 and isinstance(args[1], int):
                    self.size_nodes[n] = (d[norm_dim(args[1], len(d))], int(result))
                else:
                    self.shape_descs[n] = d
            return True
        if n.op == "call_function" and n.target is operator.getitem and args[0] in self.shape_descs:
            d = self.shape_descs[args[0]]
            if isinstance(args[1], int):
                self.size_nodes[n] = (d[norm_dim(args[1], len(d))], int(result))
            return True
        return False


class _Tracer(fx.Tracer):
    """torch.fx's tracer, plus: a layer with a registered rule is a leaf (not traced through)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return super().is_leaf_module(m, module_qualified_name) or has_module_rule(type(m))


def analyse(model: nn.Module, example_input: torch.Tensor) -> Analysis:
    """Trace ``model`` with torch.fx and find its coupled channel groups."""
    try:
        tracer = _Tracer()
        traced = tracer.trace(model)
        gm = fx.GraphModule(tracer.root, traced, type(model).__name__)
    except Exception as exc:  # fx raises many kinds of errors on untraceable code
        raise InvalidInputError(
            f"structured extraction needs a model torch.fx can trace; tracing "
            f"{type(model).__name__} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    an = Analyser(gm, model)
    was_training = model.training
    model.eval()
    gm.eval()
    try:
        with torch.no_grad():
            an.run(example_input)
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"structured extraction could not run {type(model).__name__} on an example input of "
            f"shape {list(example_input.shape)}: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    return _freeze(an, gm, example_input)


def _freeze(an: Analyser, gm: fx.GraphModule, example: torch.Tensor) -> Analysis:
    S = an.S
    leaf_index: dict[int, int] = {}
    leaf_sizes: list[int] = []

    def leafdim(f: Factors) -> LeafDim:
        out: LeafDim = []
        for s in f:
            for leaf in S.leaves(s):
                r = S.find(leaf)
                if S.producer[r] and not S.fixed[r] and S.size[r] > 1:
                    if r not in leaf_index:
                        leaf_index[r] = len(leaf_sizes)
                        leaf_sizes.append(S.size[r])
                    out.append((leaf_index[r], S.size[r]))
                else:  # -2: a channel-like (produced) but fixed leaf, -1: batch/token/spatial
                    out.append((-2 if S.producer[r] else -1, S.size[r]))
        return out

    param_dims = {name: [leafdim(f) for f in d] for name, d in an.pdims.items()}
    attrs: dict[str, dict[str, Any]] = {}
    for t, a in an.attrs.items():
        attrs[t] = {k: (tuple(leafdim(f) for f in v) if isinstance(v, tuple) else leafdim(v)) for k, v in a.items()}
    rewrites: dict[str, Rewrite] = {name: rw.freeze(leafdim) for name, rw in an.rewrite_raw.items()}
    for node, (f, value) in an.size_nodes.items():
        if any(j != -1 for j, _ in leafdim(f)):
            rewrites[node.name] = ConstSize(value)
    graph = fx.Graph()  # a copy that does not keep the traced model's modules alive
    graph.output(graph.graph_copy(gm.graph, {}))
    return Analysis(
        graph=graph,
        example_shape=tuple(example.shape),
        example_dtype=str(example.dtype).replace("torch.", ""),
        leaf_sizes=leaf_sizes,
        param_dims=param_dims,
        module_attrs=attrs,
        rewrites=rewrites,
        importance_params=[w for w in an.weights if w in param_dims],
        fallbacks=an.fallbacks,
        leaf_units=[""] * len(leaf_sizes),
    )
