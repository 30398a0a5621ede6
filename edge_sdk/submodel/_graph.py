"""Channel-coupling analysis of a model traced with torch.fx (for structured extraction).

Every tensor dimension is described by a list of *factors*: ids of "spaces" whose sizes
multiply to the dimension's size, in row-major order (a flattened conv output of C channels
by L positions is ``[S_C, S_L]``). Operations tie spaces together (union-find): a residual
add ties the channel spaces of both operands, a Linear ties its input's last dimension to
its weight's columns, a reshape that splits a dimension *refines* a space into sub-spaces
(``qkv -> (3, heads, head_dim)``). A space is prunable when a Conv/Linear/Embedding output
produces it and nothing fixes it. Fixed are: the model's input and output dimensions,
batch / spatial / token dimensions, dimensions that are indexed, sliced, reduced,
concatenated or soft-maxed, the head dimension of attention (so heads are kept whole), and
every dimension an operator the analysis does not know touches (a safe fallback that keeps
those channels whole; they are listed in ``Analysis.fallbacks``).

The analysis runs once per architecture (cached); a plan then only picks kept units per
prunable leaf space, and :func:`build_submodel` slices tensors, shrinks leaf modules and
rewrites shape constants of reshape-like calls in a copy of the traced graph.
"""

from __future__ import annotations

import copy
import logging
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from edge_sdk.errors import InvalidInputError

log = logging.getLogger(__name__)

__all__ = ["Analysis", "analyse", "build_submodel", "LeafDims"]

Factors = list[int]
Desc = list[Factors]  # one factor list per tensor dim
LeafDim = list[tuple[int, int]]  # [(prunable leaf index, or -1 / -2 if not prunable, size)]
LeafDims = list[LeafDim]


class _Spaces:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: list[bool] = []
        self.producer: list[bool] = []
        self.children: list[list[int] | None] = []

    def new(self, size: int, *, fixed: bool = False, producer: bool = False) -> int:
        i = len(self.parent)
        self.parent.append(i)
        self.size.append(int(size))
        self.fixed.append(fixed)
        self.producer.append(producer)
        self.children.append(None)
        return i

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def fix(self, i: int) -> None:
        r = self.find(i)
        self.fixed[r] = True
        for c in self.children[r] or ():
            self.fix(c)

    def mark_producer(self, i: int) -> None:
        r = self.find(i)
        self.producer[r] = True
        for c in self.children[r] or ():
            self.mark_producer(c)

    def leaves(self, i: int) -> list[int]:
        r = self.find(i)
        ch = self.children[r]
        if not ch:
            return [r]
        out: list[int] = []
        for c in ch:
            out.extend(self.leaves(c))
        return out

    def refine(self, leaf: int, sizes: Sequence[int]) -> list[int]:
        r = self.find(leaf)
        assert self.children[r] is None and math.prod(sizes) == self.size[r]
        kids = [self.new(s, fixed=self.fixed[r], producer=self.producer[r]) for s in sizes]
        self.children[r] = kids
        return kids

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            self.fix(ra)
            self.fix(rb)
            return
        ca, cb = self.children[ra], self.children[rb]
        self.parent[rb] = ra
        fixed = self.fixed[ra] or self.fixed[rb]
        producer = self.producer[ra] or self.producer[rb]
        if ca is None and cb is not None:
            self.children[ra] = cb
        elif ca is not None and cb is not None:
            la, lb = self.leaves_of_children(ca), self.leaves_of_children(cb)
            self.align(la, lb)
        if fixed:
            self.fix(ra)
        if producer:
            self.mark_producer(ra)

    def leaves_of_children(self, kids: list[int]) -> list[int]:
        out: list[int] = []
        for c in kids:
            out.extend(self.leaves(c))
        return out

    def align(self, la: list[int], lb: list[int]) -> bool:
        """Union two leaf sequences of equal total size, refining where boundaries differ."""
        la, lb = list(la), list(lb)
        i = j = 0
        while i < len(la) and j < len(lb):
            a, b = self.find(la[i]), self.find(lb[j])
            if self.children[a]:
                la[i:i + 1] = self.leaves(a)
                continue
            if self.children[b]:
                lb[j:j + 1] = self.leaves(b)
                continue
            sa, sb = self.size[a], self.size[b]
            if sa == sb:
                self.union(a, b)
                i += 1
                j += 1
            elif sa > sb and sa % sb == 0:
                la[i:i + 1] = self.refine(a, [sb, sa // sb])
            elif sb > sa and sb % sa == 0:
                lb[j:j + 1] = self.refine(b, [sa, sb // sa])
            else:
                for x in la + lb:
                    self.fix(x)
                return False
        return True


def _is_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor)


@dataclass
class Analysis:
    """Frozen result of the coupling analysis of one architecture."""

    graph: fx.Graph
    example_shape: tuple[int, ...]
    example_dtype: str
    leaf_sizes: list[int]  # size of each prunable leaf space
    param_dims: dict[str, LeafDims]  # state-dict name -> per-dim leaf lists
    module_attrs: dict[str, dict[str, Any]]  # call_module target -> attr -> LeafDim (or list)
    rewrites: dict[str, tuple[str, Any]]  # node name -> (kind, info)
    importance_params: list[str]  # weight tensors used for importance
    fallbacks: list[str] = field(default_factory=list)
    leaf_units: list[str] = field(default_factory=list)  # description per leaf (for reports)


class _Analyser(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, model: nn.Module) -> None:
        super().__init__(gm)
        self.S = _Spaces()
        self.descs: dict[fx.Node, Any] = {}
        self.pdims: dict[str, Desc] = {}
        self.attrs: dict[str, dict[str, Any]] = {}
        self.rewrite_raw: dict[str, tuple[str, Any]] = {}
        self.shape_descs: dict[fx.Node, Desc] = {}  # nodes holding x.shape / x.size()
        self.size_nodes: dict[fx.Node, tuple[Factors, int]] = {}  # int read from a tensor dim
        self.weights: list[str] = []
        self.fallbacks: list[str] = []
        self.modules = dict(gm.named_modules())
        self.tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}

    # ---- helpers ------------------------------------------------------------------------
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

    def union_f(self, a: Factors, b: Factors) -> None:
        la = [l for s in a for l in self.S.leaves(s)]
        lb = [l for s in b for l in self.S.leaves(s)]
        if not la and not lb:
            return
        self.S.align(la, lb)

    def split_f(self, f: Factors, sizes: Sequence[int]) -> list[Factors] | None:
        """Split a factor list into consecutive groups of the given sizes (refining)."""
        leaves = [l for s in f for l in self.S.leaves(s)]
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

    def fallback(self, n: fx.Node, args: Any, kwargs: Any, result: Any, why: str = "") -> Any:
        for a in list(args) + list(kwargs.values()):
            self.fix_desc(self.desc_of(a))
        label = f"{n.op} {getattr(n.target, '__name__', n.target)} at {n.name}"
        self.fallbacks.append(label + (f" ({why})" if why else ""))
        log.info("structured extraction keeps channels whole around %s%s", label, f": {why}" if why else "")
        return self.fresh_like(result)

    def fresh_like(self, v: Any) -> Any:
        if _is_tensor(v):
            return self.fresh(v.shape)
        if isinstance(v, (tuple, list)):
            return type(v)(self.fresh_like(x) for x in v)
        return None

    # ---- interpreter ----------------------------------------------------------------------
    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        args = n.args
        kwargs = dict(n.kwargs)
        try:
            d = self.describe(n, args, kwargs, result)
        except _Fallback as exc:
            d = self.fallback(n, args, kwargs, result, str(exc))
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
            return _module_rule(self, n, mod, args, kwargs, result)
        if self._track_sizes(n, args, result):
            return None
        if n.op in ("call_function", "call_method"):
            tensor_in = any(self._has_tensor(a) for a in list(args) + list(kwargs.values()))
            rule = _FUNC_RULES.get(n.target) if n.op == "call_function" else _METHOD_RULES.get(n.target)
            if rule is not None:
                return rule(self, n, args, kwargs, result)
            if n.op == "call_function" and n.target in _CREATE_FUNCS:
                return _create_rule(self, n, args, kwargs, result)
            if not tensor_in and not self._has_tensor_value(result):
                return None
            if not tensor_in:
                return self.fresh_like(result)
            raise _Fallback("operator not known to the analysis")
        raise _Fallback(f"node kind {n.op}")

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
                    self.size_nodes[n] = (d[_norm_dim(args[1], len(d))], int(result))
                else:
                    self.shape_descs[n] = d
            return True
        if n.op == "call_function" and n.target is operator.getitem and args[0] in self.shape_descs:
            d = self.shape_descs[args[0]]
            if isinstance(args[1], int):
                self.size_nodes[n] = (d[_norm_dim(args[1], len(d))], int(result))
            return True
        return False

    def _has_tensor(self, a: Any) -> bool:
        if isinstance(a, fx.Node):
            return self.descs.get(a) is not None and self._desc_is_tensorish(self.descs[a])
        if isinstance(a, (tuple, list)):
            return any(self._has_tensor(x) for x in a)
        return False

    @staticmethod
    def _desc_is_tensorish(d: Any) -> bool:
        return d is not None

    @staticmethod
    def _has_tensor_value(v: Any) -> bool:
        if _is_tensor(v):
            return True
        if isinstance(v, (tuple, list)):
            return any(_Analyser._has_tensor_value(x) for x in v)
        return False

    # value of an argument as it was at run time
    def val(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self.env[a]
        if isinstance(a, (tuple, list)):
            return type(a)(self.val(x) for x in a)
        return a


class _Fallback(Exception):
    pass


# ---- rules -----------------------------------------------------------------------------------

def _tensor_desc(an: _Analyser, a: Any) -> Desc:
    d = an.desc_of(a)
    if d is None or not isinstance(d, list):
        raise _Fallback("expected a tensor argument")
    return d


def _norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _broadcast(an: _Analyser, descs: list[Desc], shapes: list[tuple[int, ...]], out_shape) -> Desc:
    nd = len(out_shape)
    out: Desc = []
    for k in range(nd):
        chosen: Factors | None = None
        for d, s in zip(descs, shapes):
            j = len(s) - nd + k
            if j < 0 or s[j] == 1:
                continue
            if chosen is None:
                chosen = d[j]
            else:
                an.union_f(chosen, d[j])
        out.append(list(chosen) if chosen is not None else ([] if out_shape[k] == 1 else an.fresh([out_shape[k]])[0]))
    return out


def _elementwise(an: _Analyser, n, args, kwargs, result):
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, fx.Node) and _is_tensor(an.env.get(a))]
    if not _is_tensor(result):
        return None
    if not tensors:
        return an.fresh(result.shape)
    descs = [_tensor_desc(an, a) for a in tensors]
    shapes = [tuple(an.env[a].shape) for a in tensors]
    return _broadcast(an, descs, shapes, tuple(result.shape))


def _passthrough(an: _Analyser, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    if not _is_tensor(result) or tuple(result.shape) != tuple(an.env[args[0]].shape):
        raise _Fallback("shape changed in a pass-through op")
    return [list(f) for f in d]


def _reshape_to(an: _Analyser, d: Desc, out_shape: Sequence[int]) -> Desc:
    flat = [s for f in d for s in f]
    groups = an.split_f(flat, [int(s) for s in out_shape])
    if groups is None:
        raise _Fallback("reshape not aligned with channel structure")
    return groups


def _shape_args(args: tuple, start: int) -> tuple[list[Any], bool]:
    rest = list(args[start:])
    if len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)):
        return list(rest[0]), True
    return rest, False


def _reshape_rule(an: _Analyser, n, args, kwargs, result):
    if "shape" in kwargs or "size" in kwargs:
        raise _Fallback("shape given by keyword")
    d = _tensor_desc(an, args[0])
    out = _reshape_to(an, d, result.shape)
    start = 1
    spec, packed = _shape_args(args, start)
    if len(spec) == len(out) and not isinstance(spec, fx.Node):
        an.rewrite_raw[n.name] = ("shape", (start, packed, out))
    return out


def _view_as_rule(an: _Analyser, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    out = _reshape_to(an, d, result.shape)
    an_other = _tensor_desc(an, args[1])
    for a, b in zip(out, an_other):
        an.union_f(a, b)
    return out


def _flatten_rule(an: _Analyser, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    nd = len(d)
    start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
    end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
    start, end = _norm_dim(start, nd), _norm_dim(end, nd)
    if nd == 0:
        return []
    merged = [s for f in d[start:end + 1] for s in f]
    return [list(f) for f in d[:start]] + [merged] + [list(f) for f in d[end + 1:]]


def _unflatten_rule(an: _Analyser, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    dim = _norm_dim(args[1] if len(args) > 1 else kwargs["dim"], len(d))
    sizes = list(result.shape[dim:dim + len(result.shape) - len(d) + 1])
    groups = an.split_f(d[dim], sizes)
    if groups is None:
        raise _Fallback("unflatten not aligned")
    an.rewrite_raw[n.name] = ("unflatten", (dim, groups))
    return [list(f) for f in d[:dim]] + groups + [list(f) for f in d[dim + 1:]]


def _permute_rule(an: _Analyser, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    dims = list(args[1:]) if n.op == "call_method" else list(args[1])
    if n.op == "call_method" and len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = list(dims[0])
    if "dims" in kwargs:
        dims = list(kwargs["dims"])
    return [list(d[_norm_dim(int(i), len(d))]) for i in dims]


def _transpose_rule(an: _Analyser, n, args, kwargs, result):
    d = [list(f) for f in _tensor_desc(an, args[0])]
    if n.target in ("t",) or len(args) < 3:
        if len(d) < 2:
            return d
        a, b = 0, 1
    else:
        a, b = _norm_dim(args[1], len(d)), _norm_dim(args[2], len(d))
    d[a], d[b] = d[b], d[a]
    return d


def _mT_rule(an, n, args, kwargs, result):
    d = [list(f) for f in _tensor_desc(an, args[0])]
    d[-1], d[-2] = d[-2], d[-1]
    return d


def _squeeze_rule(an: _Analyser, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    return [f for f in d if f] if len(result.shape) < len(d) else [list(f) for f in d]


def _unsqueeze_rule(an: _Analyser, n, args, kwargs, result):
    d = [list(f) for f in _tensor_desc(an, args[0])]
    dim = args[1] if len(args) > 1 else kwargs["dim"]
    dim = dim + len(d) + 1 if dim < 0 else dim
    d.insert(dim, [])
    return d


def _expand_rule(an: _Analyser, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    out_shape = tuple(result.shape)
    in_shape = tuple(an.env[args[0]].shape)
    k = len(out_shape) - len(in_shape)
    out: Desc = []
    for i, s in enumerate(out_shape):
        j = i - k
        if j >= 0 and in_shape[j] == s:
            out.append(list(d[j]))
        else:
            out.append(an.fresh([s])[0] if s != 1 else [])
    spec, packed = _shape_args(args, 1)
    if len(spec) == len(out):
        an.rewrite_raw[n.name] = ("shape", (1, packed, out))
    return out


def _getitem_rule(an: _Analyser, n, args, kwargs, result):
    base, idx = args[0], args[1]
    bd = an.desc_of(base)
    if bd is None:
        return an.fresh_like(result) if _is_tensor(result) else None
    if isinstance(bd, tuple) or (isinstance(an.env.get(base), (tuple, list)) and not _is_tensor(an.env.get(base))):
        if isinstance(idx, int):
            return bd[idx]
        raise _Fallback("indexing a tuple of tensors with a non-integer")
    d = bd
    if not isinstance(idx, tuple):
        idx = (idx,)
    if any(isinstance(i, fx.Node) for i in idx):
        raise _Fallback("tensor or dynamic index")
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    out: Desc = []
    pos = 0
    shape_in = tuple(an.env[base].shape)
    for i in idx:
        if i is Ellipsis:
            span = len(d) - n_real
            out.extend(list(f) for f in d[pos:pos + span])
            pos += span
        elif i is None:
            out.append([])
        elif isinstance(i, int):
            an.fix_factors(d[pos])
            pos += 1
        elif isinstance(i, slice):
            if i == slice(None) or (i.start in (None, 0) and i.step in (None, 1) and
                                    (i.stop is None or i.stop >= shape_in[pos])):
                out.append(list(d[pos]))
            else:
                an.fix_factors(d[pos])
                size = len(range(*i.indices(shape_in[pos])))
                out.append(an.fresh([size])[0] if size != 1 else [])
            pos += 1
        else:
            raise _Fallback(f"index {i!r}")
    out.extend(list(f) for f in d[pos:])
    if len(out) != len(result.shape):
        raise _Fallback("index bookkeeping")
    return out


def _split_like(an: _Analyser, n, args, kwargs, result, kind: str):
    d = _tensor_desc(an, args[0])
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    dim = _norm_dim(dim, len(d))
    sizes = [t.shape[dim] for t in result]
    if len(set(sizes)) != 1:
        raise _Fallback("unequal split")
    groups = an.split_f(d[dim], [len(sizes), sizes[0]])
    if groups is None:
        raise _Fallback("split not aligned")
    an.fix_factors(groups[0])
    if kind == "split":
        an.rewrite_raw[n.name] = ("split", groups[1])
    return tuple([list(f) for f in d[:dim]] + [list(groups[1])] + [list(f) for f in d[dim + 1:]] for _ in sizes)


def _chunk_rule(an, n, args, kwargs, result):
    return _split_like(an, n, args, kwargs, result, "chunk")


def _split_rule(an, n, args, kwargs, result):
    if not isinstance(args[1] if len(args) > 1 else kwargs.get("split_size_or_sections"), int):
        raise _Fallback("split with a list of sizes")
    return _split_like(an, n, args, kwargs, result, "split")


def _unbind_rule(an, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    dim = _norm_dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), len(d))
    an.fix_factors(d[dim])
    return tuple([list(f) for i, f in enumerate(d) if i != dim] for _ in result)


def _reduce_rule(an: _Analyser, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = kwargs.get("keepdim", args[2] if len(args) > 2 and isinstance(args[2], bool) else False)
    if dim is None:
        an.fix_desc(d)
        return an.fresh_like(result)
    dims = [dim] if isinstance(dim, int) else list(dim)
    dims = [_norm_dim(x, len(d)) for x in dims]
    out: Desc = []
    for i, f in enumerate(d):
        if i in dims:
            an.fix_factors(f)
            if keep:
                out.append([])
        else:
            out.append(list(f))
    if isinstance(result, tuple):  # max(dim) -> (values, indices)
        return tuple(out for _ in result)
    return out


def _softmax_rule(an: _Analyser, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if dim is None:
        an.fix_desc(d)
    else:
        an.fix_factors(d[_norm_dim(dim, len(d))])
    return [list(f) for f in d]


def _pool_rule(an: _Analyser, n, args, kwargs, result):
    d = _tensor_desc(an, args[0])
    if len(d) < 3 or len(result.shape) != len(d):
        raise _Fallback("pooling input rank")
    out = [list(f) for f in d[:2]]
    for s in result.shape[2:]:
        out.append(an.fresh([s])[0] if s != 1 else [])
    for f in d[2:]:
        an.fix_factors(f)
    return out


def _cat_rule(an: _Analyser, n, args, kwargs, result):
    tensors = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    descs = [_tensor_desc(an, t) for t in tensors]
    nd = len(result.shape)
    dim = _norm_dim(dim, nd)
    for d in descs:
        an.fix_factors(d[dim])
    out: Desc = []
    for i in range(nd):
        if i == dim:
            out.append(an.fresh([result.shape[i]])[0] if result.shape[i] != 1 else [])
            continue
        f0 = descs[0][i]
        for d in descs[1:]:
            an.union_f(f0, d[i])
        out.append(list(f0))
    return out


def _stack_rule(an: _Analyser, n, args, kwargs, result):
    tensors = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    descs = [_tensor_desc(an, t) for t in tensors]
    dim = _norm_dim(dim, len(result.shape))
    base = [list(f) for f in descs[0]]
    for d in descs[1:]:
        for a, b in zip(base, d):
            an.union_f(a, b)
    base.insert(dim, an.fresh([result.shape[dim]])[0] if result.shape[dim] != 1 else [])
    return base


def _linear_core(an: _Analyser, x: Desc, wname: str | None, w_desc: Desc | None, bname: str | None) -> Desc:
    assert w_desc is not None
    an.union_f(x[-1], w_desc[1])
    for s in w_desc[0]:
        an.S.mark_producer(s)
    if bname is not None:
        an.union_f(w_desc[0], an.param(bname)[0])
    if wname is not None and wname not in an.weights:
        an.weights.append(wname)
    return [list(f) for f in x[:-1]] + [list(w_desc[0])]


def _f_linear_rule(an: _Analyser, n, args, kwargs, result):
    x = _tensor_desc(an, args[0])
    w = args[1] if len(args) > 1 else kwargs["weight"]
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    if not (isinstance(w, fx.Node) and w.op == "get_attr"):
        raise _Fallback("F.linear with a computed weight")
    bname = b.target if isinstance(b, fx.Node) and b.op == "get_attr" else None
    if b is not None and bname is None:
        raise _Fallback("F.linear with a computed bias")
    return _linear_core(an, x, w.target, an.param(w.target), bname)


def _matmul_rule(an: _Analyser, n, args, kwargs, result):
    a, b = args[0], args[1]
    da, db = _tensor_desc(an, a), _tensor_desc(an, b)
    sa, sb = tuple(an.env[a].shape), tuple(an.env[b].shape)
    if len(sa) < 2 or len(sb) < 2:
        raise _Fallback("matmul with a vector")
    an.union_f(da[-1], db[-2])
    if not (isinstance(b, fx.Node) and b.op == "get_attr") and not (isinstance(a, fx.Node) and a.op == "get_attr"):
        an.fix_factors(da[-1])  # activation x activation (attention scores): keep heads whole
    else:
        for s in db[-1]:
            an.S.mark_producer(s)
        if isinstance(b, fx.Node) and b.op == "get_attr" and b.target not in an.weights:
            an.weights.append(b.target)
    batch = _broadcast(an, [da[:-2], db[:-2]], [sa[:-2], sb[:-2]], tuple(result.shape[:-2]))
    return batch + [list(da[-2]), list(db[-1])]


def _sdpa_rule(an: _Analyser, n, args, kwargs, result):
    q, k, v = args[0], args[1], args[2]
    dq, dk, dv = _tensor_desc(an, q), _tensor_desc(an, k), _tensor_desc(an, v)
    sq, sk, sv = (tuple(an.env[t].shape) for t in (q, k, v))
    mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
    if isinstance(mask, fx.Node):
        an.fix_desc(an.desc_of(mask))
    an.union_f(dq[-1], dk[-1])
    an.fix_factors(dq[-1])
    an.fix_factors(dv[-1])
    an.union_f(dk[-2], dv[-2])
    an.fix_factors(dk[-2])
    an.fix_factors(dq[-2])
    batch = _broadcast(an, [dq[:-2], dk[:-2], dv[:-2]], [sq[:-2], sk[:-2], sv[:-2]], tuple(result.shape[:-2]))
    return batch + [list(dq[-2]), list(dv[-1])]


def _layer_norm_fn_rule(an: _Analyser, n, args, kwargs, result):
    x = _tensor_desc(an, args[0])
    shape = args[1] if len(args) > 1 else kwargs["normalized_shape"]
    k = len(shape)
    for key, pos in (("weight", 2), ("bias", 3)):
        t = args[pos] if len(args) > pos else kwargs.get(key)
        if isinstance(t, fx.Node):
            td = _tensor_desc(an, t)
            for a, b in zip(x[-k:], td[-k:]):
                an.union_f(a, b)
    an.rewrite_raw[n.name] = ("layer_norm", [list(f) for f in x[-k:]])
    return [list(f) for f in x]


def _create_rule(an: _Analyser, n, args, kwargs, result):
    if not _is_tensor(result):
        return None
    out = an.fresh(result.shape, fixed=False)
    start = 1 if n.op == "call_method" else 0
    spec, packed = _shape_args(args, start)
    if "size" not in kwargs and len(spec) == len(out) and all(isinstance(s, (int, fx.Node)) for s in spec):
        an.rewrite_raw[n.name] = ("shape", (start, packed, out))
    else:
        an.fix_desc(out)
    return out


def _shape_only(an, n, args, kwargs, result):
    return None


_UNARY = [F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.mish, F.elu, F.leaky_relu, F.hardswish,
          F.hardsigmoid, F.hardtanh, F.sigmoid, F.tanh, torch.sigmoid, torch.tanh, torch.exp,
          torch.abs, torch.neg, torch.clamp, torch.sqrt, torch.square, torch.erf, F.dropout,
          F.dropout1d, F.dropout2d, F.alpha_dropout, torch.nn.functional.softplus, operator.neg,
          operator.pos, torch.clone, torch.detach, torch.nan_to_num, torch.rsqrt, torch.log]
_BINARY = [operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
           operator.imul, operator.itruediv, operator.pow, torch.add, torch.sub, torch.mul, torch.div,
           torch.maximum, torch.minimum, torch.where, torch.pow]
_CREATE_FUNCS = {torch.zeros, torch.ones, torch.empty, torch.full, torch.randn, torch.rand}

_FUNC_RULES: dict[Any, Callable] = {}
for _f in _UNARY + _BINARY:
    _FUNC_RULES[_f] = _elementwise
_FUNC_RULES.update({
    torch.reshape: _reshape_rule,
    torch.flatten: _flatten_rule,
    torch.unflatten: _unflatten_rule,
    torch.permute: _permute_rule,
    torch.transpose: _transpose_rule,
    torch.squeeze: _squeeze_rule,
    torch.unsqueeze: _unsqueeze_rule,
    torch.chunk: _chunk_rule,
    torch.split: _split_rule,
    torch.unbind: _unbind_rule,
    operator.getitem: _getitem_rule,
    torch.mean: _reduce_rule,
    torch.sum: _reduce_rule,
    torch.amax: _reduce_rule,
    torch.softmax: _softmax_rule,
    F.softmax: _softmax_rule,
    F.log_softmax: _softmax_rule,
    F.normalize: _softmax_rule,
    torch.cat: _cat_rule,
    torch.concat: _cat_rule,
    torch.stack: _stack_rule,
    F.linear: _f_linear_rule,
    torch.matmul: _matmul_rule,
    operator.matmul: _matmul_rule,
    torch.bmm: _matmul_rule,
    F.scaled_dot_product_attention: _sdpa_rule,
    F.layer_norm: _layer_norm_fn_rule,
    F.adaptive_avg_pool1d: _pool_rule, F.adaptive_avg_pool2d: _pool_rule,
    F.adaptive_max_pool1d: _pool_rule, F.adaptive_max_pool2d: _pool_rule,
    F.avg_pool1d: _pool_rule, F.avg_pool2d: _pool_rule,
    F.max_pool1d: _pool_rule, F.max_pool2d: _pool_rule, F.interpolate: _pool_rule,
    getattr: _shape_only,
})
_METHOD_RULES: dict[str, Callable] = {m: _elementwise for m in (
    "relu", "relu_", "sigmoid", "tanh", "exp", "abs", "neg", "clamp", "clamp_", "sqrt", "square",
    "contiguous", "clone", "detach", "float", "double", "half", "to", "type", "type_as", "add", "add_",
    "sub", "sub_", "mul", "mul_", "div", "div_", "pow", "rsqrt", "masked_fill", "erf", "gelu", "log")}
_METHOD_RULES.update({
    "reshape": _reshape_rule, "view": _reshape_rule, "view_as": _view_as_rule,
    "reshape_as": _view_as_rule, "flatten": _flatten_rule, "unflatten": _unflatten_rule,
    "permute": _permute_rule, "transpose": _transpose_rule, "t": _transpose_rule, "squeeze": _squeeze_rule,
    "unsqueeze": _unsqueeze_rule, "expand": _expand_rule, "chunk": _chunk_rule, "split": _split_rule,
    "unbind": _unbind_rule, "mean": _reduce_rule, "sum": _reduce_rule, "amax": _reduce_rule,
    "max": _reduce_rule, "softmax": _softmax_rule, "log_softmax": _softmax_rule, "matmul": _matmul_rule,
    "size": _shape_only, "dim": _shape_only,
    "new_zeros": _create_rule, "new_ones": _create_rule, "new_empty": _create_rule,
})


_ACTS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Hardswish,
         nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
         nn.Dropout3d, nn.AlphaDropout, nn.Identity)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
          nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward)


def _module_rule(an: _Analyser, n: fx.Node, mod: nn.Module, args, kwargs, result):
    t = n.target
    pname = lambda p: f"{t}.{p}"  # noqa: E731
    if isinstance(mod, _ACTS) and not isinstance(mod, nn.Softmax):
        return _passthrough(an, n, args, kwargs, result)
    if isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
        d = _tensor_desc(an, args[0])
        dim = mod.dim if mod.dim is not None else len(d) - 1
        an.fix_factors(d[_norm_dim(dim, len(d))])
        return [list(f) for f in d]
    if isinstance(mod, _POOLS):
        d = _tensor_desc(an, args[0])
        nsp = len(result.shape) - 2
        out = [list(f) for f in d[:2]]
        for s in result.shape[2:]:
            out.append(an.fresh([s])[0] if s != 1 else [])
        for f in d[2:]:
            an.fix_factors(f)
        if len(d) < 2 or nsp < 0:
            raise _Fallback("pooling input rank")
        return out
    if isinstance(mod, nn.Flatten):
        d = _tensor_desc(an, args[0])
        nd = len(d)
        s, e = _norm_dim(mod.start_dim, nd), _norm_dim(mod.end_dim, nd)
        return [list(f) for f in d[:s]] + [[x for f in d[s:e + 1] for x in f]] + [list(f) for f in d[e + 1:]]
    if isinstance(mod, nn.Linear) and type(mod).forward is nn.Linear.forward:
        x = _tensor_desc(an, args[0])
        out = _linear_core(an, x, pname("weight"), an.param(pname("weight")),
                           pname("bias") if mod.bias is not None else None)
        w = an.param(pname("weight"))
        an.attrs[t] = {"in_features": w[1], "out_features": w[0]}
        return out
    if isinstance(mod, _CONVS) and type(mod).forward in _CONV_FORWARDS and mod.padding_mode == "zeros":
        x = _tensor_desc(an, args[0])
        w = an.param(pname("weight"))
        g = mod.groups
        cin, cout = mod.in_channels, mod.out_channels
        parts_in = an.split_f(x[1], [g, cin // g])
        parts_out = an.split_f(w[0], [g, cout // g])
        if parts_in is None or parts_out is None:
            raise _Fallback("grouped convolution not aligned")
        an.union_f(parts_in[0], parts_out[0])
        an.union_f(parts_in[1], w[1])
        if g > 1:  # groups are kept whole; channels inside a group stay aligned
            an.fix_factors(parts_in[1])
            an.fix_factors(parts_out[1])
        for s in w[0]:
            an.S.mark_producer(s)
        if mod.bias is not None:
            an.union_f(w[0], an.param(pname("bias"))[0])
        if pname("weight") not in an.weights:
            an.weights.append(pname("weight"))
        an.attrs[t] = {"in_channels": x[1], "out_channels": w[0], "groups": parts_in[0]}
        out = [list(x[0]), list(w[0])]
        for s in result.shape[2:]:
            out.append(an.fresh([s])[0] if s != 1 else [])
        for f in x[2:]:
            an.fix_factors(f)
        return out
    if isinstance(mod, _BNS) and type(mod).forward is nn.modules.batchnorm._BatchNorm.forward:
        x = _tensor_desc(an, args[0])
        for p in ("weight", "bias", "running_mean", "running_var"):
            if getattr(mod, p, None) is not None:
                an.union_f(x[1], an.param(pname(p))[0])
        if getattr(mod, "num_batches_tracked", None) is not None:
            an.param(pname("num_batches_tracked"))
        an.attrs[t] = {"num_features": x[1]}
        return [list(f) for f in x]
    if isinstance(mod, nn.LayerNorm) and type(mod).forward is nn.LayerNorm.forward:
        x = _tensor_desc(an, args[0])
        k = len(mod.normalized_shape)
        for p in ("weight", "bias"):
            if getattr(mod, p, None) is not None:
                pd = an.param(pname(p))
                for a, b in zip(x[-k:], pd):
                    an.union_f(a, b)
        an.attrs[t] = {"normalized_shape": [list(f) for f in x[-k:]]}
        return [list(f) for f in x]
    if isinstance(mod, nn.GroupNorm) and type(mod).forward is nn.GroupNorm.forward:
        x = _tensor_desc(an, args[0])
        parts = an.split_f(x[1], [mod.num_groups, mod.num_channels // mod.num_groups])
        if parts is None:
            raise _Fallback("group norm not aligned")
        an.fix_factors(parts[1])
        for p in ("weight", "bias"):
            if getattr(mod, p, None) is not None:
                an.union_f(x[1], an.param(pname(p))[0])
        an.attrs[t] = {"num_channels": x[1], "num_groups": parts[0]}
        return [list(f) for f in x]
    if isinstance(mod, nn.Embedding) and type(mod).forward is nn.Embedding.forward:
        x = _tensor_desc(an, args[0])
        w = an.param(pname("weight"))
        an.fix_factors(w[0])
        for s in w[1]:
            an.S.mark_producer(s)
        an.attrs[t] = {"embedding_dim": w[1]}
        if pname("weight") not in an.weights:
            an.weights.append(pname("weight"))
        return [list(f) for f in x] + [list(w[1])]
    # unknown leaf module: keep its parameters and every touched channel whole
    for name, _ in mod.named_parameters():
        an.fix_desc(an.param(pname(name)))
    for name, _ in mod.named_buffers():
        an.fix_desc(an.param(pname(name)))
    raise _Fallback(f"module type {type(mod).__name__}")


# ---- public entry points ---------------------------------------------------------------------

def analyse(model: nn.Module, example_input: torch.Tensor) -> Analysis:
    """Trace ``model`` with torch.fx and find its coupled channel groups."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds of errors on untraceable code
        raise InvalidInputError(
            f"structured extraction needs a model torch.fx can trace; tracing "
            f"{type(model).__name__} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    an = _Analyser(gm, model)
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


def _freeze(an: _Analyser, gm: fx.GraphModule, example: torch.Tensor) -> Analysis:
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
        attrs[t] = {k: ([leafdim(f) for f in v] if k == "normalized_shape" else leafdim(v)) for k, v in a.items()}
    rewrites: dict[str, tuple[str, Any]] = {}
    for name, (kind, info) in an.rewrite_raw.items():
        if kind == "shape":
            start, packed, out = info
            rewrites[name] = (kind, (start, packed, [leafdim(f) for f in out]))
        elif kind == "unflatten":
            dim, groups = info
            rewrites[name] = (kind, (dim, [leafdim(f) for f in groups]))
        elif kind == "split":
            rewrites[name] = (kind, leafdim(info))
        elif kind == "layer_norm":
            rewrites[name] = (kind, [leafdim(f) for f in info])
    for node, (f, value) in an.size_nodes.items():
        # a size read from a channel-like dimension keeps the global model's value wherever it
        # is used (e.g. an attention scale c // heads); reshape-like calls get their own rewrite
        if any(j != -1 for j, _ in leafdim(f)):
            rewrites[node.name] = ("const", value)
    units = [""] * len(leaf_sizes)
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
        leaf_units=units,
    )


# ---- kept indices ----------------------------------------------------------------------------

def dim_indices(ld: LeafDim, keep: Sequence[np.ndarray]) -> np.ndarray | None:
    """Kept indices of one tensor dimension (None when everything is kept)."""
    if all(i < 0 or len(keep[i]) == s for i, s in ld):
        return None
    idx = np.zeros(1, dtype=np.int64)
    for i, s in ld:
        k = np.arange(s, dtype=np.int64) if i < 0 else keep[i]
        idx = (idx[:, None] * s + k[None, :]).reshape(-1)
    return idx


def dim_size(ld: LeafDim, counts: Sequence[int]) -> int:
    n = 1
    for i, s in ld:
        n *= s if i < 0 else counts[i]
    return n


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
            root[new.target] = _shrink_module(modules[new.target], new.target, an, counts, sliced)
        elif old.op == "get_attr" and new.target not in root:
            if new.target in tensors:
                t = sliced(new.target)
                orig = tensors[new.target]
                root[new.target] = nn.Parameter(t, requires_grad=orig.requires_grad) if isinstance(orig, nn.Parameter) else t
            else:
                root[new.target] = copy.deepcopy(_get_attr(model, new.target))
        rw = an.rewrites.get(old.name)
        if rw is not None:
            _apply_rewrite(new, rw, counts)
    gm = fx.GraphModule(root, graph, class_name=type(model).__name__ + "Submodel")
    gm.train(model.training)
    return gm


def _get_attr(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _shrink_module(mod: nn.Module, target: str, an: Analysis, counts: Sequence[int],
                   sliced: Callable[[str], torch.Tensor]) -> nn.Module:
    attrs = an.module_attrs.get(target)
    has_state = any(True for _ in mod.parameters()) or any(True for _ in mod.buffers())
    if attrs is None:
        return copy.deepcopy(mod) if has_state else copy.copy(mod)
    new = copy.copy(mod)
    new._parameters = dict(mod._parameters)  # type: ignore[assignment]
    new._buffers = dict(mod._buffers)  # type: ignore[assignment]
    new._modules = dict(mod._modules)  # type: ignore[assignment]
    for pn, p in mod._parameters.items():
        if p is not None:
            new._parameters[pn] = nn.Parameter(sliced(f"{target}.{pn}"), requires_grad=p.requires_grad)
    for bn, b in mod._buffers.items():
        if b is not None:
            new._buffers[bn] = sliced(f"{target}.{bn}")
    for key, ld in attrs.items():
        if key == "normalized_shape":
            new.normalized_shape = tuple(dim_size(x, counts) for x in ld)
        else:
            setattr(new, key, dim_size(ld, counts))
    return new


def _apply_rewrite(node: fx.Node, rw: tuple[str, Any], counts: Sequence[int]) -> None:
    kind, info = rw
    if kind == "shape":
        start, packed, dims = info
        args = list(node.args)
        spec = list(args[start]) if packed else args[start:]
        changed = False
        for i, ld in enumerate(dims):
            # channel-like dims become constants (a size computed from another tensor's shape
            # would be wrong after slicing); batch / token / spatial sizes stay dynamic
            channel_like = any(j != -1 for j, _ in ld)
            if channel_like and not (isinstance(spec[i], int) and spec[i] == -1):
                new = dim_size(ld, counts)
                if spec[i] != new:
                    spec[i] = new
                    changed = True
        if changed:
            if packed:
                args[start] = type(args[start])(spec) if not isinstance(args[start], torch.Size) else tuple(spec)
            else:
                args[start:] = spec
            node.args = tuple(args)
    elif kind == "const":
        for user in list(node.users):
            user.args = fx.node.map_arg(user.args, lambda a: info if a is node else a)
            user.kwargs = fx.node.map_arg(user.kwargs, lambda a: info if a is node else a)
    elif kind == "unflatten":
        dim, groups = info
        args = list(node.args)
        args[2] = tuple(dim_size(ld, counts) for ld in groups)
        node.args = tuple(args)
    elif kind == "split":
        args = list(node.args)
        args[1] = dim_size(info, counts)
        node.args = tuple(args)
    elif kind == "layer_norm":
        args = list(node.args)
        if len(args) > 1:
            args[1] = tuple(dim_size(ld, counts) for ld in info)
            node.args = tuple(args)
        else:
            kw = dict(node.kwargs)
            kw["normalized_shape"] = tuple(dim_size(ld, counts) for ld in info)
            node.kwargs = kw

