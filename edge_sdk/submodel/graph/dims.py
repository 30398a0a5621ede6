"""Dimension spaces: the union-find that ties tensor dimensions into channel groups.

Every tensor dimension is described by a list of *factors*: ids of spaces whose sizes
multiply to the dimension's size, in row-major order (a flattened conv output of C channels
by L positions is ``[S_C, S_L]``). Operations tie spaces together (:meth:`Spaces.union`), and
a reshape that splits a dimension *refines* a space into sub-spaces (``qkv -> (3, heads,
head_dim)``). After the analysis every dimension is a :data:`LeafDim`: its leaf spaces, each
either a prunable channel group (its index) or a fixed one (-1 batch/token/spatial, -2 a
channel-like space that must stay whole).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["Factors", "Desc", "LeafDim", "LeafDims", "Spaces", "norm_dim", "dim_indices", "dim_size"]

Factors = list[int]
Desc = list[Factors]  # one factor list per tensor dim
LeafDim = list[tuple[int, int]]  # [(prunable leaf index, or -1 / -2 if not prunable, size)]
LeafDims = list[LeafDim]


class Spaces:
    """Union-find over dimension spaces, with refinement into ordered sub-spaces.

    A root carries its size, whether it is fixed (never pruned), whether a weight produces it
    (only produced spaces are prunable) and its children when it has been refined.
    """

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


def norm_dim(dim: int, ndim: int) -> int:
    """A non-negative dimension index (Python's negative indexing resolved)."""
    return dim + ndim if dim < 0 else dim


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
    """Size of one tensor dimension in a submodel keeping ``counts[i]`` units of leaf ``i``."""
    n = 1
    for i, s in ld:
        n *= s if i < 0 else counts[i]
    return n
