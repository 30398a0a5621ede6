"""Built-in rules for ``call_module`` nodes: one small function per layer family.

Registered by class with :func:`~.rules.register_module_rule`; a subclass that keeps its base's
``forward`` uses the base's rule. A weight layer (conv, linear, embedding) marks its output
channels as produced (so prunable) and ties its input channels to its weight's columns; a
norm layer ties its affine parameters and running statistics to the channels it normalises;
``module_attrs`` records the constructor sizes to shrink in a submodel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch.fx as fx
from torch import nn

from edge_sdk.submodel.graph.dims import norm_dim
from edge_sdk.submodel.graph.op_rules import linear_core, passthrough, pool_rule
from edge_sdk.submodel.graph.rules import Fallback, default_module_rule, register_module_rule

if TYPE_CHECKING:
    from edge_sdk.submodel.graph.analysis import Analyser

__all__: list[str] = []

_ACTS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Hardswish,
         nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
         nn.Dropout3d, nn.AlphaDropout, nn.Identity)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
          nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample)


def _p(n: fx.Node, name: str) -> str:
    return f"{n.target}.{name}"


@register_module_rule(*_ACTS)
def _activation(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    return passthrough(an, n, args, kwargs, result)


@register_module_rule(nn.Softmax, nn.LogSoftmax)
def _softmax(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    d = an.tensor_desc(args[0])
    dim = mod.dim if mod.dim is not None else len(d) - 1
    an.fix_factors(d[norm_dim(dim, len(d))])
    return [list(f) for f in d]


@register_module_rule(*_POOLS)
def _pool(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    return pool_rule(an, n, args, kwargs, result)


@register_module_rule(nn.Flatten)
def _flatten(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    d = an.tensor_desc(args[0])
    nd = len(d)
    s, e = norm_dim(mod.start_dim, nd), norm_dim(mod.end_dim, nd)
    return [list(f) for f in d[:s]] + [[x for f in d[s:e + 1] for x in f]] + [list(f) for f in d[e + 1:]]


@register_module_rule(nn.Linear)
def _linear(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    x = an.tensor_desc(args[0])
    w = an.param(_p(n, "weight"))
    out = linear_core(an, x, _p(n, "weight"), w, _p(n, "bias") if mod.bias is not None else None)
    an.attrs[n.target] = {"in_features": w[1], "out_features": w[0]}
    return out


@register_module_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    if mod.padding_mode != "zeros":
        return default_module_rule(an, n, mod, args, kwargs, result)
    x = an.tensor_desc(args[0])
    w = an.param(_p(n, "weight"))
    g = mod.groups
    parts_in = an.split_f(x[1], [g, mod.in_channels // g])
    parts_out = an.split_f(w[0], [g, mod.out_channels // g])
    if parts_in is None or parts_out is None:
        raise Fallback("grouped convolution not aligned")
    an.union_f(parts_in[0], parts_out[0])
    an.union_f(parts_in[1], w[1])
    if g > 1:  # groups are kept whole; channels inside a group stay aligned
        an.fix_factors(parts_in[1])
        an.fix_factors(parts_out[1])
    an.mark_producer(w[0])
    if mod.bias is not None:
        an.union_f(w[0], an.param(_p(n, "bias"))[0])
    an.add_weight(_p(n, "weight"))
    an.attrs[n.target] = {"in_channels": x[1], "out_channels": w[0], "groups": parts_in[0]}
    out = [list(x[0]), list(w[0])]
    for s in result.shape[2:]:
        out.append(an.fresh([s])[0] if s != 1 else [])
    for f in x[2:]:
        an.fix_factors(f)
    return out


@register_module_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batch_norm(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    x = an.tensor_desc(args[0])
    for p in ("weight", "bias", "running_mean", "running_var"):
        if getattr(mod, p, None) is not None:
            an.union_f(x[1], an.param(_p(n, p))[0])
    if getattr(mod, "num_batches_tracked", None) is not None:
        an.param(_p(n, "num_batches_tracked"))
    an.attrs[n.target] = {"num_features": x[1]}
    return [list(f) for f in x]


@register_module_rule(nn.LayerNorm)
def _layer_norm(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    x = an.tensor_desc(args[0])
    k = len(mod.normalized_shape)
    for p in ("weight", "bias"):
        if getattr(mod, p, None) is not None:
            for a, b in zip(x[-k:], an.param(_p(n, p))):
                an.union_f(a, b)
    an.attrs[n.target] = {"normalized_shape": tuple(list(f) for f in x[-k:])}  # a tuple: a shape
    return [list(f) for f in x]


@register_module_rule(nn.GroupNorm)
def _group_norm(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    x = an.tensor_desc(args[0])
    parts = an.split_f(x[1], [mod.num_groups, mod.num_channels // mod.num_groups])
    if parts is None:
        raise Fallback("group norm not aligned")
    an.fix_factors(parts[1])
    for p in ("weight", "bias"):
        if getattr(mod, p, None) is not None:
            an.union_f(x[1], an.param(_p(n, p))[0])
    an.attrs[n.target] = {"num_channels": x[1], "num_groups": parts[0]}
    return [list(f) for f in x]


@register_module_rule(nn.Embedding)
def _embedding(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    x = an.tensor_desc(args[0])
    w = an.param(_p(n, "weight"))
    an.fix_factors(w[0])
    an.mark_producer(w[1])
    an.attrs[n.target] = {"embedding_dim": w[1]}
    an.add_weight(_p(n, "weight"))
    return [list(f) for f in x] + [list(w[1])]
