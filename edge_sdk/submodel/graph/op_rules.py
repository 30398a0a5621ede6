"""Built-in rules for ``call_function`` / ``call_method`` nodes (torch and tensor operators).

Each rule is registered beside its definition; :mod:`.rules` explains the rule signature.
Elementwise operators broadcast their operands' dimensions together; reshape-like operators
regroup factors (refining spaces) and record a :class:`~.rewrite.Rewrite` for sizes written
into the graph; reductions, indexing, concatenation and softmax fix the dimensions they act on.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from edge_sdk.submodel.graph.dims import Desc, Factors, norm_dim
from edge_sdk.submodel.graph.rewrite import LayerNormShape, ShapeArgs, SplitSize, UnflattenSizes
from edge_sdk.submodel.graph.rules import Fallback, register_function_rule, register_method_rule

if TYPE_CHECKING:
    from edge_sdk.submodel.graph.analysis import Analyser

__all__ = ["broadcast", "elementwise", "passthrough", "linear_core", "pool_rule", "shape_args"]


def _is_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor)


def broadcast(an: Analyser, descs: list[Desc], shapes: list[tuple[int, ...]], out_shape) -> Desc:
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


def elementwise(an: Analyser, n, args, kwargs, result):
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, fx.Node) and _is_tensor(an.env.get(a))]
    if not _is_tensor(result):
        return None
    if not tensors:
        return an.fresh(result.shape)
    descs = [an.tensor_desc(a) for a in tensors]
    shapes = [tuple(an.env[a].shape) for a in tensors]
    return broadcast(an, descs, shapes, tuple(result.shape))


def passthrough(an: Analyser, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
    if not _is_tensor(result) or tuple(result.shape) != tuple(an.env[args[0]].shape):
        raise Fallback("shape changed in a pass-through op")
    return [list(f) for f in d]


def _reshape_to(an: Analyser, d: Desc, out_shape: Sequence[int]) -> Desc:
    flat = [s for f in d for s in f]
    groups = an.split_f(flat, [int(s) for s in out_shape])
    if groups is None:
        raise Fallback("reshape not aligned with channel structure")
    return groups


def shape_args(args: tuple, start: int) -> tuple[list[Any], bool]:
    rest = list(args[start:])
    if len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)):
        return list(rest[0]), True
    return rest, False


@register_function_rule(torch.reshape)
@register_method_rule("reshape", "view")
def _reshape_rule(an: Analyser, n, args, kwargs, result):
    if "shape" in kwargs or "size" in kwargs:
        raise Fallback("shape given by keyword")
    d = an.tensor_desc(args[0])
    out = _reshape_to(an, d, result.shape)
    start = 1
    spec, packed = shape_args(args, start)
    if len(spec) == len(out) and not isinstance(spec, fx.Node):
        an.rewrite_raw[n.name] = ShapeArgs(start, packed, out)
    return out


@register_method_rule("view_as", "reshape_as")
def _view_as_rule(an: Analyser, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
    out = _reshape_to(an, d, result.shape)
    an_other = an.tensor_desc(args[1])
    for a, b in zip(out, an_other):
        an.union_f(a, b)
    return out


@register_function_rule(torch.flatten)
@register_method_rule("flatten")
def _flatten_rule(an: Analyser, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
    nd = len(d)
    start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
    end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
    start, end = norm_dim(start, nd), norm_dim(end, nd)
    if nd == 0:
        return []
    merged = [s for f in d[start:end + 1] for s in f]
    return [list(f) for f in d[:start]] + [merged] + [list(f) for f in d[end + 1:]]


@register_function_rule(torch.unflatten)
@register_method_rule("unflatten")
def _unflatten_rule(an: Analyser, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
    dim = norm_dim(args[1] if len(args) > 1 else kwargs["dim"], len(d))
    sizes = list(result.shape[dim:dim + len(result.shape) - len(d) + 1])
    groups = an.split_f(d[dim], sizes)
    if groups is None:
        raise Fallback("unflatten not aligned")
    an.rewrite_raw[n.name] = UnflattenSizes(dim, groups)
    return [list(f) for f in d[:dim]] + groups + [list(f) for f in d[dim + 1:]]


@register_function_rule(torch.permute)
@register_method_rule("permute")
def _permute_rule(an: Analyser, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
    dims = list(args[1:]) if n.op == "call_method" else list(args[1])
    if n.op == "call_method" and len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = list(dims[0])
    if "dims" in kwargs:
        dims = list(kwargs["dims"])
    return [list(d[norm_dim(int(i), len(d))]) for i in dims]


@register_function_rule(torch.transpose)
@register_method_rule("transpose", "t")
def _transpose_rule(an: Analyser, n, args, kwargs, result):
    d = [list(f) for f in an.tensor_desc(args[0])]
    if n.target in ("t",) or len(args) < 3:
        if len(d) < 2:
            return d
        a, b = 0, 1
    else:
        a, b = norm_dim(args[1], len(d)), norm_dim(args[2], len(d))
    d[a], d[b] = d[b], d[a]
    return d


@register_function_rule(torch.squeeze)
@register_method_rule("squeeze")
def _squeeze_rule(an: Analyser, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
    return [f for f in d if f] if len(result.shape) < len(d) else [list(f) for f in d]


@register_function_rule(torch.unsqueeze)
@register_method_rule("unsqueeze")
def _unsqueeze_rule(an: Analyser, n, args, kwargs, result):
    d = [list(f) for f in an.tensor_desc(args[0])]
    dim = args[1] if len(args) > 1 else kwargs["dim"]
    dim = dim + len(d) + 1 if dim < 0 else dim
    d.insert(dim, [])
    return d


@register_method_rule("expand")
def _expand_rule(an: Analyser, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
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
    spec, packed = shape_args(args, 1)
    if len(spec) == len(out):
        an.rewrite_raw[n.name] = ShapeArgs(1, packed, out)
    return out


@register_function_rule(operator.getitem)
def _getitem_rule(an: Analyser, n, args, kwargs, result):
    base, idx = args[0], args[1]
    bd = an.desc_of(base)
    if bd is None:
        return an.fresh_like(result) if _is_tensor(result) else None
    if isinstance(bd, tuple) or (isinstance(an.env.get(base), (tuple, list)) and not _is_tensor(an.env.get(base))):
        if isinstance(idx, int):
            return bd[idx]
        raise Fallback("indexing a tuple of tensors with a non-integer")
    d = bd
    if not isinstance(idx, tuple):
        idx = (idx,)
    if any(isinstance(i, fx.Node) for i in idx):
        raise Fallback("tensor or dynamic index")
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
            raise Fallback(f"index {i!r}")
    out.extend(list(f) for f in d[pos:])
    if len(out) != len(result.shape):
        raise Fallback("index bookkeeping")
    return out


def _split_like(an: Analyser, n, args, kwargs, result, kind: str):
    d = an.tensor_desc(args[0])
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    dim = norm_dim(dim, len(d))
    sizes = [t.shape[dim] for t in result]
    if len(set(sizes)) != 1:
        raise Fallback("unequal split")
    groups = an.split_f(d[dim], [len(sizes), sizes[0]])
    if groups is None:
        raise Fallback("split not aligned")
    an.fix_factors(groups[0])
    if kind == "split":
        an.rewrite_raw[n.name] = SplitSize(groups[1])
    return tuple([list(f) for f in d[:dim]] + [list(groups[1])] + [list(f) for f in d[dim + 1:]] for _ in sizes)


@register_function_rule(torch.chunk)
@register_method_rule("chunk")
def _chunk_rule(an, n, args, kwargs, result):
    return _split_like(an, n, args, kwargs, result, "chunk")


@register_function_rule(torch.split)
@register_method_rule("split")
def _split_rule(an, n, args, kwargs, result):
    if not isinstance(args[1] if len(args) > 1 else kwargs.get("split_size_or_sections"), int):
        raise Fallback("split with a list of sizes")
    return _split_like(an, n, args, kwargs, result, "split")


@register_function_rule(torch.unbind)
@register_method_rule("unbind")
def _unbind_rule(an, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
    dim = norm_dim(args[1] if len(args) > 1 else kwargs.get("dim", 0), len(d))
    an.fix_factors(d[dim])
    return tuple([list(f) for i, f in enumerate(d) if i != dim] for _ in result)


@register_function_rule(torch.mean, torch.sum, torch.amax)
@register_method_rule("mean", "sum", "amax", "max")
def _reduce_rule(an: Analyser, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = kwargs.get("keepdim", args[2] if len(args) > 2 and isinstance(args[2], bool) else False)
    if dim is None:
        an.fix_desc(d)
        return an.fresh_like(result)
    dims = [dim] if isinstance(dim, int) else list(dim)
    dims = [norm_dim(x, len(d)) for x in dims]
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


@register_function_rule(torch.softmax, F.softmax, F.log_softmax, F.normalize)
@register_method_rule("softmax", "log_softmax")
def _softmax_rule(an: Analyser, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if dim is None:
        an.fix_desc(d)
    else:
        an.fix_factors(d[norm_dim(dim, len(d))])
    return [list(f) for f in d]


@register_function_rule(F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                        F.avg_pool1d, F.avg_pool2d, F.max_pool1d, F.max_pool2d, F.interpolate)
def pool_rule(an: Analyser, n, args, kwargs, result):
    d = an.tensor_desc(args[0])
    if len(d) < 3 or len(result.shape) != len(d):
        raise Fallback("pooling input rank")
    out = [list(f) for f in d[:2]]
    for s in result.shape[2:]:
        out.append(an.fresh([s])[0] if s != 1 else [])
    for f in d[2:]:
        an.fix_factors(f)
    return out


@register_function_rule(torch.cat, torch.concat)
def _cat_rule(an: Analyser, n, args, kwargs, result):
    tensors = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    descs = [an.tensor_desc(t) for t in tensors]
    nd = len(result.shape)
    dim = norm_dim(dim, nd)
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


@register_function_rule(torch.stack)
def _stack_rule(an: Analyser, n, args, kwargs, result):
    tensors = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    descs = [an.tensor_desc(t) for t in tensors]
    dim = norm_dim(dim, len(result.shape))
    base = [list(f) for f in descs[0]]
    for d in descs[1:]:
        for a, b in zip(base, d):
            an.union_f(a, b)
    base.insert(dim, an.fresh([result.shape[dim]])[0] if result.shape[dim] != 1 else [])
    return base


def linear_core(an: Analyser, x: Desc, wname: str | None, w_desc: Desc | None, bname: str | None) -> Desc:
    assert w_desc is not None
    an.union_f(x[-1], w_desc[1])
    an.mark_producer(w_desc[0])
    if bname is not None:
        an.union_f(w_desc[0], an.param(bname)[0])
    if wname is not None:
        an.add_weight(wname)
    return [list(f) for f in x[:-1]] + [list(w_desc[0])]


@register_function_rule(F.linear)
def _f_linear_rule(an: Analyser, n, args, kwargs, result):
    x = an.tensor_desc(args[0])
    w = args[1] if len(args) > 1 else kwargs["weight"]
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    if not (isinstance(w, fx.Node) and w.op == "get_attr"):
        raise Fallback("F.linear with a computed weight")
    bname = b.target if isinstance(b, fx.Node) and b.op == "get_attr" else None
    if b is not None and bname is None:
        raise Fallback("F.linear with a computed bias")
    return linear_core(an, x, w.target, an.param(w.target), bname)


@register_function_rule(torch.matmul, operator.matmul, torch.bmm)
@register_method_rule("matmul")
def _matmul_rule(an: Analyser, n, args, kwargs, result):
    a, b = args[0], args[1]
    da, db = an.tensor_desc(a), an.tensor_desc(b)
    sa, sb = tuple(an.env[a].shape), tuple(an.env[b].shape)
    if len(sa) < 2 or len(sb) < 2:
        raise Fallback("matmul with a vector")
    an.union_f(da[-1], db[-2])
    if not (isinstance(b, fx.Node) and b.op == "get_attr") and not (isinstance(a, fx.Node) and a.op == "get_attr"):
        an.fix_factors(da[-1])  # activation x activation (attention scores): keep heads whole
    else:
        an.mark_producer(db[-1])
        if isinstance(b, fx.Node) and b.op == "get_attr":
            an.add_weight(b.target)
    batch = broadcast(an, [da[:-2], db[:-2]], [sa[:-2], sb[:-2]], tuple(result.shape[:-2]))
    return batch + [list(da[-2]), list(db[-1])]


@register_function_rule(F.scaled_dot_product_attention)
def _sdpa_rule(an: Analyser, n, args, kwargs, result):
    q, k, v = args[0], args[1], args[2]
    dq, dk, dv = an.tensor_desc(q), an.tensor_desc(k), an.tensor_desc(v)
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
    batch = broadcast(an, [dq[:-2], dk[:-2], dv[:-2]], [sq[:-2], sk[:-2], sv[:-2]], tuple(result.shape[:-2]))
    return batch + [list(dq[-2]), list(dv[-1])]


@register_function_rule(F.layer_norm)
def _layer_norm_fn_rule(an: Analyser, n, args, kwargs, result):
    x = an.tensor_desc(args[0])
    shape = args[1] if len(args) > 1 else kwargs["normalized_shape"]
    k = len(shape)
    for key, pos in (("weight", 2), ("bias", 3)):
        t = args[pos] if len(args) > pos else kwargs.get(key)
        if isinstance(t, fx.Node):
            td = an.tensor_desc(t)
            for a, b in zip(x[-k:], td[-k:]):
                an.union_f(a, b)
    an.rewrite_raw[n.name] = LayerNormShape([list(f) for f in x[-k:]])
    return [list(f) for f in x]


@register_function_rule(torch.zeros, torch.ones, torch.empty, torch.full, torch.randn, torch.rand)
@register_method_rule("new_zeros", "new_ones", "new_empty")
def _create_rule(an: Analyser, n, args, kwargs, result):
    if not _is_tensor(result):
        return None
    out = an.fresh(result.shape, fixed=False)
    start = 1 if n.op == "call_method" else 0
    spec, packed = shape_args(args, start)
    if "size" not in kwargs and len(spec) == len(out) and all(isinstance(s, (int, fx.Node)) for s in spec):
        an.rewrite_raw[n.name] = ShapeArgs(start, packed, out)
    else:
        an.fix_desc(out)
    return out


@register_function_rule(getattr)
@register_method_rule("size", "dim")
def _shape_only(an, n, args, kwargs, result):
    return None


_UNARY = (F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.mish, F.elu, F.leaky_relu, F.hardswish,
          F.hardsigmoid, F.hardtanh, F.sigmoid, F.tanh, torch.sigmoid, torch.tanh, torch.exp,
          torch.abs, torch.neg, torch.clamp, torch.sqrt, torch.square, torch.erf, F.dropout,
          F.dropout1d, F.dropout2d, F.alpha_dropout, F.softplus, operator.neg,
          operator.pos, torch.clone, torch.detach, torch.nan_to_num, torch.rsqrt, torch.log)
_BINARY = (operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
           operator.imul, operator.itruediv, operator.pow, torch.add, torch.sub, torch.mul, torch.div,
           torch.maximum, torch.minimum, torch.where, torch.pow)
_ELEMENTWISE_METHODS = (
    "relu", "relu_", "sigmoid", "tanh", "exp", "abs", "neg", "clamp", "clamp_", "sqrt", "square",
    "contiguous", "clone", "detach", "float", "double", "half", "to", "type", "type_as", "add", "add_",
    "sub", "sub_", "mul", "mul_", "div", "div_", "pow", "rsqrt", "masked_fill", "erf", "gelu", "log")
register_function_rule(*_UNARY, *_BINARY)(elementwise)
register_method_rule(*_ELEMENTWISE_METHODS)(elementwise)
