"""Structured (channel / neuron / head level) submodels: fiarse-structured, HeteroFL, FedRolex.

All three keep, in every prunable channel group that :mod:`edge_sdk.submodel.graph` finds,
the same fraction ``w`` of its units; ``w`` is searched so that the submodel holds the
requested fraction of the global model's parameters (``w`` comes out near ``sqrt(ratio)``
since most tensors are sliced in two dimensions). They differ only in *which* units:

* ``fiarse-structured``: the units of largest importance, where the importance of a unit
  (a channel, a neuron, an attention head) is the squared L2 norm of all conv / linear /
  embedding weight entries that belong to it, summed over every coupled tensor (the rows of
  the layers that produce it and the columns of the layers that consume it);
* ``heterofl``: the leftmost units (a static nested slice);
* ``fedrolex``: a window of consecutive units (cyclic) that starts at ``round mod size``, so
  it moves by one unit each round.

Each is a channel selector registered in :mod:`edge_sdk.submodel.selectors`, where a new
selection rule is one class. The ``fiarse-structured`` strategy trains with a parametrized
form of the importance selector (:class:`~edge_sdk.submodel.selectors.ExploringImportanceSelector`:
part of the kept units explored at random or by a rolling window, passed as ``selector=``);
its plans carry the name ``fiarse-structured`` and decode like the others.

The plan stores the kept indices of every tensor dimension, so updates scatter back into
the global model (:meth:`StructuredPlan.scatter`), and ``extract`` returns a physically
smaller ``torch.fx.GraphModule`` whose state-dict names are the global model's.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import InvalidInputError, PlanMismatchError
from edge_sdk.submodel._plan import Signature, SubmodelPlan, model_signature, param_count
from edge_sdk.submodel.graph import Analysis, analyse, build_submodel, dim_indices
from edge_sdk.submodel.graph.rules import rules_version
from edge_sdk.submodel.selectors import (SELECTORS, ChannelSelector, SelectionContext, checked_selection, get_selector,
                                         make_rng)

log = logging.getLogger(__name__)

__all__ = ["StructuredPlan", "plan_structured", "STRUCTURED_STRATEGIES", "analysis_for"]

#: live read-only view of the registered channel selectors: ``in`` / iteration give their names
STRUCTURED_STRATEGIES = SELECTORS

_CACHE: OrderedDict[Any, Analysis] = OrderedDict()
_CACHE_SIZE = 8


def _arch_key(model: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> Any:
    mods = tuple((n, type(m)) for n, m in model.named_modules())
    sig = tuple((n, tuple(t.shape)) for n, t in model.state_dict().items())
    return (type(model), mods, sig, shape, dtype, rules_version())


def analysis_for(model: nn.Module, example: torch.Tensor) -> Analysis:
    """The (cached) coupling analysis of ``model``'s architecture."""
    key = _arch_key(model, tuple(example.shape), example.dtype)
    an = _CACHE.get(key)
    if an is None:
        an = analyse(model, example)
        _CACHE[key] = an
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return an


def example_for(model: nn.Module, example_input: torch.Tensor | None) -> torch.Tensor:
    if example_input is not None:
        if not isinstance(example_input, torch.Tensor):
            raise InvalidInputError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
        return example_input.detach()
    cfg = getattr(model, "config", None)
    shape = getattr(cfg, "input_shape", None)
    if shape is None:
        raise InvalidInputError(
            f"structured extraction of {type(model).__name__} needs example_input (a batch "
            f"tensor); it can be omitted only for models with config.input_shape")
    return torch.zeros((2, *shape))


def _round_half(x: float) -> int:
    return int(x + 0.5)


class StructuredPlan(SubmodelPlan):
    """Kept indices per tensor dimension; ``extract`` builds a smaller dense GraphModule."""

    kind = "structured"

    def __init__(self, strategy: str, ratio: float, round: int, kept_fraction: float, signature: Signature,
                 width: float, keep: list[np.ndarray], leaf_sizes: list[int],
                 index_map: Mapping[str, list[torch.Tensor | None]], example_shape: tuple[int, ...],
                 example_dtype: str) -> None:
        super().__init__(strategy, ratio, round, kept_fraction, signature)
        self.width = float(width)
        self.keep = [np.asarray(k, dtype=np.int64) for k in keep]
        self.leaf_sizes = [int(s) for s in leaf_sizes]
        self.index_map = {n: list(v) for n, v in index_map.items()}
        self.example_shape = tuple(int(s) for s in example_shape)
        self.example_dtype = example_dtype
        self._lin: dict[str, Any] = {}

    def held_shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for name, dims in self.index_map.items():
            shape = self.signature[name][0]
            out[name] = tuple(s if idx is None else int(idx.numel()) for s, idx in zip(shape, dims))
        return out

    def _example(self) -> torch.Tensor:
        dtype = getattr(torch, self.example_dtype, torch.float32)
        return torch.zeros(self.example_shape, dtype=dtype)

    def extract(self, global_model: nn.Module) -> nn.Module:
        self.check_model(global_model)
        an = analysis_for(global_model, self._example())
        if an.leaf_sizes != self.leaf_sizes or set(an.param_dims) != set(self.index_map):
            raise PlanMismatchError(
                f"{self.strategy} plan does not match the model's channel structure "
                f"({len(an.leaf_sizes)} channel groups found, plan has {len(self.leaf_sizes)}); "
                f"apply a plan only to the global model it was made from")
        return build_submodel(global_model, an, self.keep, self.index_map)

    def collect(self, submodel: nn.Module) -> dict[str, torch.Tensor]:
        state = submodel.state_dict()
        expected = self.held_shapes()
        if set(state) != set(expected):
            missing = sorted(set(expected) - set(state))
            extra = sorted(set(state) - set(expected))
            raise PlanMismatchError(f"{self.strategy} plan: submodel tensors differ from the plan "
                                    f"(missing {missing[:3]}, unexpected {extra[:3]}); train the module "
                                    f"returned by plan.extract(global_model)")
        for name, t in state.items():
            if tuple(t.shape) != expected[name]:
                raise PlanMismatchError(f"{self.strategy} plan: submodel tensor {name!r} has shape "
                                        f"{list(t.shape)}, the plan holds {list(expected[name])}")
        return {n: t.detach().clone() for n, t in state.items()}

    def _index(self, name: str) -> tuple[Any, ...] | None:
        """Advanced index selecting the held block (None when held whole).

        Sliced dimensions (and any full dimension between them) get broadcast index tensors;
        full trailing dimensions stay plain slices, so kernels move as contiguous rows.
        """
        cached = self._lin.get(name)
        if cached is not None:
            return cached if cached != () else None
        dims = self.index_map[name]
        shape = self.signature[name][0]
        last = max((d for d, idx in enumerate(dims) if idx is not None), default=-1)
        if last < 0:
            self._lin[name] = ()
            return None
        ix: list[Any] = []
        for d in range(last + 1):
            idx = dims[d] if dims[d] is not None else torch.arange(shape[d])
            view = [1] * (last + 1)
            view[d] = -1
            ix.append(idx.reshape(view))
        out = tuple(ix)
        self._lin[name] = out
        return out

    def gather(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        ix = self._index(name)
        return tensor if ix is None else tensor[ix]

    def scatter(self, name: str, value: torch.Tensor, num: torch.Tensor, den: torch.Tensor,
                weight: float) -> None:
        ix = self._index(name)
        if ix is None:
            num.add_(value.to(num.dtype))
            den.add_(weight)
        else:
            num.index_put_(ix, value.to(num.dtype), accumulate=True)
            den.index_put_(ix, torch.tensor(weight, dtype=den.dtype), accumulate=True)

    def same_as(self, other: SubmodelPlan) -> bool:
        if not super().same_as(other) or not isinstance(other, StructuredPlan):
            return False
        return other is self or (other.leaf_sizes == self.leaf_sizes and len(other.keep) == len(self.keep)
                                 and all(np.array_equal(a, b) for a, b in zip(self.keep, other.keep)))

    # ---- bytes --------------------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        h = super()._header()
        h.update(width=self.width, leaf_sizes=self.leaf_sizes, example_shape=list(self.example_shape),
                 example_dtype=self.example_dtype)
        table: dict[str, list[str | None]] = {}
        self._dedup: dict[bytes, str] = {}
        self._dedup_blobs: dict[str, torch.Tensor] = {}
        for name, dims in self.index_map.items():
            row: list[str | None] = []
            for idx in dims:
                if idx is None:
                    row.append(None)
                    continue
                arr = idx.to(torch.int32)
                raw = arr.numpy().tobytes()
                key = self._dedup.get(raw)
                if key is None:
                    key = f"idx:{len(self._dedup)}"
                    self._dedup[raw] = key
                    self._dedup_blobs[key] = arr
                row.append(key)
            table[name] = row
        h["index_map"] = table
        return h

    def _blobs(self) -> tuple[dict[str, torch.Tensor], set[str]]:
        blobs = {f"keep:{i}": torch.from_numpy(k.astype(np.int32)) for i, k in enumerate(self.keep)}
        blobs.update(self._dedup_blobs)
        return blobs, set()

    @classmethod
    def _from_parts(cls, header, blobs, signature):  # type: ignore[no-untyped-def]
        """Checked: a keep blob per channel group and index blobs, each strictly increasing and
        in range of its group / dimension, every blob used; a bounded example shape."""
        from edge_sdk import _decode  # the shared decoding checks (imported where they are used)
        from edge_sdk.errors import SchemaError
        from edge_sdk.submodel._plan import check_index, plan_fields
        from edge_sdk.submodel._serial import _DTYPES

        f = plan_fields(header, ("width", "leaf_sizes", "example_shape", "example_dtype", "index_map"),
                        None)  # any selector name: it may be registered only on the server
        width = _decode.check_float(header["width"], "plan: width", 0.0, 1.0)
        leaf_sizes = [_decode.check_int(s, f"plan: leaf_sizes[{i}]", 1)
                      for i, s in enumerate(_decode.check_list(header["leaf_sizes"], "plan: leaf_sizes"))]
        keep = [check_index(blobs.get(f"keep:{i}"), s, f"plan: blob keep:{i}") for i, s in enumerate(leaf_sizes)]
        used = {f"keep:{i}" for i in range(len(leaf_sizes))}
        shared: dict[str, torch.Tensor] = {}  # one tensor per index blob, however often it is used
        index_map: dict[str, list[torch.Tensor | None]] = {}
        for name, row in _decode.check_dict(header["index_map"], "plan: index_map").items():
            shape = signature.get(name, (None,))[0]
            if shape is None or len(_decode.check_list(row, f"plan: index_map {name!r}")) != len(shape):
                raise SchemaError(f"plan: index_map entry {name!r} does not match the signature")
            index_map[name] = []
            for d, key in enumerate(row):
                if key is not None:
                    key = _decode.check_choice(key, f"plan: index_map {name!r} dim {d} blob",
                                               [k for k in blobs if k.startswith("idx:")])
                    if key not in shared:
                        shared[key] = torch.from_numpy(check_index(blobs[key], 1 << 62, f"plan: blob {key}"))
                    idx = shared[key]
                    if idx.numel() and int(idx[-1]) >= shape[d]:
                        raise SchemaError(f"plan: blob {key} indexes past dimension {d} ({shape[d]}) of {name!r}")
                    used.add(key)
                index_map[name].append(None if key is None else shared[key])
        if set(blobs) != used:
            raise SchemaError(f"plan: blob {sorted(set(blobs) - used)[0]!r} is not used by the plan")
        example_shape = _decode.check_shape(header["example_shape"], "plan: example_shape")
        if not 0 < _decode.numel(example_shape) <= _decode.LIMITS.max_example_elements:
            raise SchemaError(f"plan: example_shape {list(example_shape)} must hold 1 to "
                              f"{_decode.LIMITS.max_example_elements} elements")
        example_dtype = _decode.check_choice(header["example_dtype"], "plan: example_dtype", _DTYPES)
        return cls(f["strategy"], f["ratio"], f["round"], f["kept_fraction"], signature, width, keep, leaf_sizes,
                   index_map, example_shape, example_dtype)


def _choose_counts(an: Analysis, signature: Signature, ratio: float) -> tuple[float, list[int], float]:
    total = param_count(signature)
    terms = []  # (fixed product, [leaf ids]) per parameter held by the graph
    for name, dims in an.param_dims.items():
        if not signature.get(name, ((), False))[1]:
            continue
        fixed = 1
        leaves: list[int] = []
        for ld in dims:
            for i, s in ld:
                if i < 0:
                    fixed *= s
                else:
                    leaves.append(i)
        terms.append((fixed, leaves))
    sizes = an.leaf_sizes

    def counts_at(w: float) -> list[int]:
        return [min(s, max(1, _round_half(w * s))) for s in sizes]

    def frac(c: list[int]) -> float:
        held = 0
        for fixed, leaves in terms:
            n = fixed
            for i in leaves:
                n *= c[i]
            held += n
        return held / total if total else 1.0

    if ratio >= 1.0:
        c = list(sizes)
        return 1.0, c, frac(c)
    lo, hi = 0.0, 1.0
    if frac(counts_at(lo)) >= ratio:
        c = counts_at(lo)
        return lo, c, frac(c)
    for _ in range(40):
        mid = (lo + hi) / 2
        if frac(counts_at(mid)) >= ratio:
            hi = mid
        else:
            lo = mid
    c_lo, c_hi = counts_at(lo), counts_at(hi)
    f_lo, f_hi = frac(c_lo), frac(c_hi)
    if abs(f_lo - ratio) < abs(f_hi - ratio):
        return lo, c_lo, f_lo
    return hi, c_hi, f_hi


def plan_structured(strategy: str, model: nn.Module, ratio: float, *, round: int = 0,
                    example_input: torch.Tensor | None = None,
                    rng: np.random.Generator | int | None = None,
                    selector: ChannelSelector | None = None) -> StructuredPlan:
    """A channel-level plan: the width is searched for ``ratio``, the registered selector
    ``strategy`` picks the kept units (``rng`` defaults to one seeded by the round).

    ``selector``: a selector instance to use instead of the registered one (a parametrized
    form of ``strategy``, e.g. :class:`~edge_sdk.submodel.selectors.ExploringImportanceSelector`);
    the plan still carries the name ``strategy``."""
    if selector is None:
        selector = get_selector(strategy)
    elif not isinstance(selector, ChannelSelector):
        raise InvalidInputError(f"selector must be a ChannelSelector, got {type(selector).__name__}")
    else:
        get_selector(strategy)  # the name the plan carries must be a registered one
    example = example_for(model, example_input)
    an = analysis_for(model, example)
    signature = model_signature(model)
    width, counts, kept = _choose_counts(an, signature, ratio)
    ctx = SelectionContext(model=model, analysis=an, counts=counts, leaf_sizes=list(an.leaf_sizes), round=round,
                           rng=make_rng(rng, round))
    keep = checked_selection(selector, ctx)
    index_map: dict[str, list[torch.Tensor | None]] = {}
    for name, dims in an.param_dims.items():
        row = []
        for ld in dims:
            idx = dim_indices(ld, keep)
            row.append(None if idx is None else torch.from_numpy(idx))
        index_map[name] = row
    plan = StructuredPlan(strategy, ratio, round, kept, signature, width, keep, an.leaf_sizes, index_map,
                          tuple(example.shape), str(example.dtype).replace("torch.", ""))
    return plan

