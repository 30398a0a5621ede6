"""Graph rewrites: how a node of the traced graph changes when channels are removed.

A rule that sees a channel-sized constant in a node's arguments (a reshape's target shape,
an unflatten's sizes, a split size, a functional layer norm's shape) records a
:class:`Rewrite` holding the factor lists of those sizes. :meth:`Rewrite.freeze` turns them
into leaf dimensions once the analysis is done; :meth:`Rewrite.apply` writes the
submodel's sizes into the copied node.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from edge_sdk.submodel.graph.dims import Factors, LeafDim, dim_size

__all__ = ["Rewrite", "ShapeArgs", "ConstSize", "UnflattenSizes", "SplitSize", "LayerNormShape"]

Freeze = Callable[[Factors], LeafDim]


def _sizes(dims: Sequence[Any], counts: Sequence[int]) -> tuple[int, ...]:
    return tuple(dim_size(ld, counts) for ld in dims)


def _set_arg(node: fx.Node, i: int, value: Any) -> None:
    args = list(node.args)
    args[i] = value
    node.args = tuple(args)


class Rewrite(abc.ABC):
    """One node's argument that depends on the number of kept channels."""

    @abc.abstractmethod
    def freeze(self, leafdim: Freeze) -> Rewrite:
        """The same rewrite with factor lists replaced by leaf dimensions."""

    @abc.abstractmethod
    def apply(self, node: fx.Node, counts: Sequence[int]) -> None:
        """Edit ``node`` (in the submodel's graph) for ``counts`` kept units per leaf."""


@dataclass
class ShapeArgs(Rewrite):
    """A shape given from argument ``start`` on (packed: one tuple argument), as in reshape."""

    start: int
    packed: bool
    dims: list[Any]

    def freeze(self, leafdim: Freeze) -> Rewrite:
        return ShapeArgs(self.start, self.packed, [leafdim(f) for f in self.dims])

    def apply(self, node: fx.Node, counts: Sequence[int]) -> None:
        args = list(node.args)
        start = self.start
        spec = list(args[start]) if self.packed else args[start:]
        changed = False
        for i, ld in enumerate(self.dims):
            # channel-like dims become constants (a size computed from another tensor's shape
            # would be wrong after slicing); batch / token / spatial sizes stay dynamic
            channel_like = any(j != -1 for j, _ in ld)
            if channel_like and not (isinstance(spec[i], int) and spec[i] == -1):
                new = dim_size(ld, counts)
                if spec[i] != new:
                    spec[i] = new
                    changed = True
        if changed:
            if self.packed:
                args[start] = type(args[start])(spec) if not isinstance(args[start], torch.Size) else tuple(spec)
            else:
                args[start:] = spec
            node.args = tuple(args)


@dataclass
class ConstSize(Rewrite):
    """An int read from a channel-like dimension keeps the global model's value where used
    (e.g. an attention scale ``c // heads``); reshape-like calls get their own rewrite."""

    value: int

    def freeze(self, leafdim: Freeze) -> Rewrite:
        return self

    def apply(self, node: fx.Node, counts: Sequence[int]) -> None:
        for user in list(node.users):
            user.args = fx.node.map_arg(user.args, lambda a: self.value if a is node else a)
            user.kwargs = fx.node.map_arg(user.kwargs, lambda a: self.value if a is node else a)


@dataclass
class UnflattenSizes(Rewrite):
    """``unflatten(dim, sizes)``: the sizes are argument 2."""

    dim: int
    groups: list[Any]

    def freeze(self, leafdim: Freeze) -> Rewrite:
        return UnflattenSizes(self.dim, [leafdim(f) for f in self.groups])

    def apply(self, node: fx.Node, counts: Sequence[int]) -> None:
        _set_arg(node, 2, _sizes(self.groups, counts))


@dataclass
class SplitSize(Rewrite):
    """``split(size, dim)``: the size of each equal piece is argument 1."""

    dim: Any

    def freeze(self, leafdim: Freeze) -> Rewrite:
        return SplitSize(leafdim(self.dim))

    def apply(self, node: fx.Node, counts: Sequence[int]) -> None:
        _set_arg(node, 1, dim_size(self.dim, counts))


@dataclass
class LayerNormShape(Rewrite):
    """``F.layer_norm(x, normalized_shape, ...)``: positional or keyword shape."""

    dims: list[Any]

    def freeze(self, leafdim: Freeze) -> Rewrite:
        return LayerNormShape([leafdim(f) for f in self.dims])

    def apply(self, node: fx.Node, counts: Sequence[int]) -> None:
        if len(node.args) > 1:
            _set_arg(node, 1, _sizes(self.dims, counts))
        else:
            kw = dict(node.kwargs)
            kw["normalized_shape"] = _sizes(self.dims, counts)
            node.kwargs = kw
