"""FIARSE: parameter-level importance-aware submodel extraction (Wu et al., NeurIPS 2024).

As in the released code (github.com/HarliWu/FIARSE, ``model_utils.py`` / ``resnet_masked.py``):

* importance of an element is its magnitude ``|theta|``;
* the maskable set is the weights **and biases** of every Conv/Linear (and Embedding) layer —
  the released ``to_vector`` concatenates bias after weight, so biases compete for the same
  threshold; we keep that;
* one global top-k threshold over the whole maskable set (``scope="global"``), or the same
  fraction inside each tensor (``scope="layer"``, the released ``fiarse_layerwise`` variant);
* every other parameter (normalisation layers, token / position embeddings, ...) and every
  buffer is always held;
* masks are recomputed from the current global model each round. Because all sizes rank the
  same scores, a smaller size's mask is a subset of a larger one's (nested submodels).

The size budget (``budget``):

* ``"maskable"`` (default, the released code's ``generate_mask``): ``k = int(ratio * maskable)``
  of the maskable elements are held; the always-held parameters come on top, so the held
  fraction of *all* parameters is a little above the ratio.
* ``"all"``: the held fraction of all parameters equals the ratio
  (``k = round(ratio * total) - always_held``). With small models and small ratios the
  always-held norm parameters then eat much of the budget (cnn1d width 3 at 1/64: 38 %), so
  FIARSE's submodel holds fewer conv/linear weights than a HeteroFL slice of the same size.

Ties at the threshold are broken by position, so kept counts are exact and nesting holds even
with ties. ``FiarsePlan.maskable_fraction`` is the share of maskable elements held,
``kept_fraction`` the share of all parameters.

Local training multiplies each masked tensor by its mask in the forward pass. Two gradient
modes (``FiarseSubmodel.gradient``):

* ``"hard"`` ("hard mask (released code)"): the gradient of ``theta * m`` is ``g * m``. This
  is what the released code in effect trains with (its ``Bern`` returns a bool mask, through which autograd passes no
  gradient) and it is the cheapest.
* ``"surrogate"`` ("surrogate gradient (paper)", default): the paper's threshold-controlled
  biased gradient. It scored 2.7
  and 2.5 points higher than the hard mask in average global accuracy on both benchmark
  tables (bench/bench_fiarse_table*.md) for a few percent more step time. The released ``Bern``
  function differentiates the step ``1[|theta| >= tau]`` as ``2 tau / (|theta| + tau)^2``, so
  a held element receives ``g * (1 + 2 tau |theta| / (|theta| + tau)^2)``: up to 1.5x for
  elements at the threshold, tending to 1x far above it.

The held set is the plan's mask for the whole round (the released code re-evaluates
``|theta| >= tau`` every forward, which can only drop elements during local training since
unheld elements receive no gradient); fixing it keeps the update exactly what the plan says.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk import _decode
from edge_sdk.errors import InvalidInputError, PlanMismatchError, SchemaError
from edge_sdk.submodel._plan import Signature, SubmodelPlan, model_signature, param_count, plan_fields

__all__ = ["FiarsePlan", "FiarseSubmodel", "plan_fiarse", "maskable_names", "GRADIENT_MODES", "BUDGETS"]

log = logging.getLogger(__name__)

GRADIENT_MODES = ("hard", "surrogate")
SCOPES = ("global", "layer")
BUDGETS = ("maskable", "all")
_MASKABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding)


def maskable_names(model: nn.Module) -> list[str]:
    """Weights and biases of Conv/Linear/Embedding layers, in module order."""
    names = []
    for mod_name, module in model.named_modules():
        if isinstance(module, _MASKABLE_TYPES):
            for pname in ("weight", "bias"):
                p = getattr(module, pname, None)
                if isinstance(p, nn.Parameter) and p.requires_grad:
                    names.append(f"{mod_name}.{pname}" if mod_name else pname)
    return names


def _kth_largest_exact(absvals: list[np.ndarray], k: int) -> float:
    """Exact k-th largest (1-based) of non-negative values spread over several flat arrays.

    For float32, a radix select on the bit patterns (ordered like the values when
    non-negative): one histogram of the top 16 bits, then an exact selection inside the one
    bin that holds the answer. Other dtypes: one partition of the concatenation.
    """
    if any(a.dtype != np.float32 for a in absvals):
        arr = np.concatenate(absvals)
        return float(np.partition(arr, arr.size - k)[arr.size - k])
    bins = 1 << 15
    hist = np.zeros(bins, dtype=np.int64)
    for a in absvals:
        hist += np.bincount(a.view(np.int32) >> 16, minlength=bins)
    csum = np.cumsum(hist[::-1])
    idx = int(np.searchsorted(csum, k))
    b = bins - 1 - idx
    above = int(csum[idx] - hist[b])
    cand = np.concatenate([a[(a.view(np.int32) >> 16) == b] for a in absvals])
    need = k - above
    return float(np.partition(cand, cand.size - need)[cand.size - need])


def _map_abs(fn: Callable[[np.ndarray], Any], values: list[np.ndarray]) -> list[Any]:
    """``[fn(|v|) for v in values]`` on torch's intra-op thread count (numpy releases the GIL).

    ``|v|`` is written into one scratch buffer per worker and dtype, so no fresh array of
    millions of magnitudes is faulted in on every call; ``fn`` must not keep its argument.
    """
    threads = min(torch.get_num_threads(), len(values))
    order = sorted(range(len(values)), key=lambda i: -values[i].size)
    groups: list[list[int]] = [[] for _ in range(max(threads, 1))]
    loads = [0] * len(groups)
    for i in order:  # largest first onto the least loaded worker
        w = loads.index(min(loads))
        groups[w].append(i)
        loads[w] += values[i].size

    def work(group: list[int]) -> dict[int, Any]:
        scratch: dict[np.dtype, np.ndarray] = {}
        out = {}
        for i in group:
            v = values[i].reshape(-1)
            buf = scratch.get(v.dtype)
            if buf is None or buf.size < v.size:
                buf = scratch[v.dtype] = np.empty(max(values[j].size for j in group), dtype=v.dtype)
            out[i] = fn(np.abs(v, out=buf[:v.size]))
        return out

    if threads <= 1:
        results = [work(order)]
    else:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(work, groups))
    merged = {i: r for part in results for i, r in part.items()}
    return [merged[i] for i in range(len(values))]


_SAMPLE = 1 << 16
_BAND_SIGMAS = 6.0


@dataclass
class _Band:
    """One pass's result: per tensor, the mask of magnitudes >= hi and the positions and
    magnitudes of those in [lo, hi); ``above`` counts the former over all tensors."""

    above_masks: list[np.ndarray]
    positions: list[np.ndarray]
    magnitudes: list[np.ndarray]
    above: int


def _sampled_band(flat: list[np.ndarray], k: int) -> _Band | None:
    """The band [lo, hi) around the k-th largest magnitude, from a seeded sample of 65,536
    (six standard deviations of the sample quantile either side), and one pass over the data;
    ``None`` when the band misses the k-th largest (odds about 1e-9) or the data is small."""
    n = sum(v.size for v in flat)
    if n <= 4 * _SAMPLE:
        return None
    rng = np.random.default_rng(0)
    sample = np.abs(np.concatenate([v[rng.integers(0, v.size, -(-_SAMPLE * v.size // n))] for v in flat if v.size]))
    s = sample.size
    q = k / n
    margin = _BAND_SIGMAS * np.sqrt(max(q * (1.0 - q), 1.0 / s) * s) + 2.0
    i_hi, i_lo = int(q * s - margin), int(np.ceil(q * s + margin))  # ranks from the top
    if i_lo >= s:
        return None
    picked = np.partition(sample, [s - 1 - i_lo] + ([s - 1 - i_hi] if i_hi >= 0 else []))
    lo = picked[s - 1 - i_lo]
    hi = picked[s - 1 - i_hi] if i_hi >= 0 else np.float32(np.inf)

    def scan(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        above = a >= hi
        pos = np.flatnonzero((a >= lo) & ~above)
        return above, pos, a[pos]

    parts = _map_abs(scan, flat)
    band = _Band([p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts], 0)
    band.above = sum(int(np.count_nonzero(m)) for m in band.above_masks)
    need = k - band.above
    if need <= 0 or need > sum(m.size for m in band.magnitudes):
        log.debug("fiarse threshold: sampled band missed (need %d); exact radix select", need)
        return None
    return band


def _band_kth(band: _Band, k: int) -> float:
    cand = np.concatenate(band.magnitudes)
    need = k - band.above
    return float(np.partition(cand, cand.size - need)[cand.size - need])


def _top_masks(values: list[np.ndarray], k: int) -> tuple[list[torch.Tensor], float]:
    """Masks of exactly the ``k`` largest magnitudes over all arrays (ties by position) and tau.

    The sampled band (:func:`_sampled_band`) narrows the search for tau to the few
    magnitudes inside it, and the masks come out of the same pass: everything at or above
    ``hi``, plus the band's magnitudes above tau, plus ties at tau in position order. If the
    band misses, the radix select finds the same tau more slowly. Each pass works one tensor
    at a time (no concatenation of millions of values) with numpy, whose comparisons and
    compaction are several times faster than torch's on CPU, on torch's thread count.
    """
    n = sum(v.size for v in values)
    if k <= 0:
        return [torch.zeros(v.shape, dtype=torch.bool) for v in values], float("inf")
    if k >= n:
        return [torch.ones(v.shape, dtype=torch.bool) for v in values], \
            (min(float(np.abs(v).min()) for v in values if v.size) if n else 0.0)
    flat = [v.reshape(-1) for v in values]
    band = _sampled_band(flat, k)
    if band is None:
        tau = values[0].dtype.type(_kth_largest_exact([np.abs(v) for v in flat], k))
        masks = _map_abs(lambda a: a > tau, flat)
        ties = [np.flatnonzero(np.abs(v) == tau) for v in flat]
    else:
        tau = values[0].dtype.type(_band_kth(band, k))
        masks = band.above_masks
        for m, pos, mag in zip(masks, band.positions, band.magnitudes):
            m[pos[mag > tau]] = True
        ties = [pos[mag == tau] for pos, mag in zip(band.positions, band.magnitudes)]
    missing = k - sum(int(np.count_nonzero(m)) for m in masks)
    for m, tie in zip(masks, ties):  # fill with magnitudes equal to tau, in position order
        if missing <= 0:
            break
        m[tie[:missing]] = True
        missing -= min(missing, tie.size)
    return [torch.from_numpy(m.reshape(v.shape)) for m, v in zip(masks, values)], float(tau)


class FiarsePlan(SubmodelPlan):
    """Element masks for the maskable tensors; everything else is held whole."""

    kind = "fiarse"

    def __init__(self, ratio: float, round: int, kept_fraction: float, signature: Signature,
                 masks: Mapping[str, torch.Tensor], thresholds: Mapping[str, float], scope: str,
                 budget: str = "maskable") -> None:
        super().__init__("fiarse", ratio, round, kept_fraction, signature)
        self.masks = {n: m.to(torch.bool) for n, m in masks.items()}
        self.thresholds = {n: float(t) for n, t in thresholds.items()}
        self.scope = scope
        self.budget = budget
        self._flat_idx: dict[str, torch.Tensor] = {}
        self._held: dict[str, tuple[int, ...]] | None = None

    @property
    def maskable_fraction(self) -> float:
        """Share of the maskable (conv/linear/embedding) elements this plan holds."""
        held, maskable = _mask_counts(self.masks)
        return held / maskable if maskable else 1.0

    @property
    def held_parameters(self) -> int:
        """Parameters a client holds and uploads (every element of an unmasked tensor)."""
        held, maskable = _mask_counts(self.masks)
        return param_count(self.signature) - maskable + held

    def flat_index(self, name: str) -> torch.Tensor:
        idx = self._flat_idx.get(name)
        if idx is None:
            idx = torch.nonzero(self.masks[name].reshape(-1)).reshape(-1)
            self._flat_idx[name] = idx
        return idx

    def held_shapes(self) -> dict[str, tuple[int, ...]]:
        if self._held is None:
            out = {}
            for name, (shape, _) in self.signature.items():
                if name in self.masks:
                    out[name] = (int(self.flat_index(name).numel()),)
                else:
                    out[name] = shape
            self._held = out
        return dict(self._held)

    def extract(self, global_model: nn.Module) -> FiarseSubmodel:
        self.check_model(global_model)
        return FiarseSubmodel(copy.deepcopy(global_model), self.masks, self.thresholds)

    def collect(self, submodel: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors the client uploads: held elements of masked tensors, the rest whole."""
        if not isinstance(submodel, FiarseSubmodel):
            raise PlanMismatchError("fiarse plan: the submodel is not a FiarseSubmodel; "
                                    "train the module returned by plan.extract(global_model)")
        self.check_model(submodel.model)
        state = submodel.model.state_dict()
        out = {}
        for name, t in state.items():
            t = t.detach()
            out[name] = t.reshape(-1)[self.flat_index(name)].clone() if name in self.masks else t.clone()
        return out

    def gather(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        if name in self.masks:
            return tensor.reshape(-1)[self.flat_index(name)]
        return tensor

    def scatter(self, name: str, value: torch.Tensor, num: torch.Tensor, den: torch.Tensor,
                weight: float) -> None:
        if name in self.masks:
            idx = self.flat_index(name)
            num.view(-1).index_add_(0, idx, value.reshape(-1).to(num.dtype))
            den.view(-1).index_add_(0, idx, torch.full((idx.numel(),), weight, dtype=den.dtype))
        else:
            num.add_(value.to(num.dtype))
            den.add_(weight)

    def same_as(self, other: SubmodelPlan) -> bool:
        if not super().same_as(other) or not isinstance(other, FiarsePlan):
            return False
        if other is self:
            return True
        if other.thresholds != self.thresholds or other.masks.keys() != self.masks.keys():
            return False
        return all(torch.equal(self.masks[n], other.masks[n]) for n in self.masks)

    def _header(self) -> dict[str, Any]:
        h = super()._header()
        h["scope"] = self.scope
        h["budget"] = self.budget
        h["thresholds"] = self.thresholds
        return h

    def _blobs(self) -> tuple[dict[str, torch.Tensor], set[str]]:
        blobs = {f"mask:{n}": m for n, m in self.masks.items()}
        return blobs, set(blobs)

    @classmethod
    def _from_parts(cls, header, blobs, signature):  # type: ignore[no-untyped-def]
        """Checked: one bool mask per masked parameter, shaped as in the signature; one
        threshold (>= 0, or +inf for an empty mask) per mask; kept_fraction as the masks say."""
        f = plan_fields(header, ("scope", "thresholds"), ("fiarse",), optional=("budget",))
        scope = _decode.check_choice(header["scope"], "plan: scope", SCOPES)
        budget = _decode.check_choice(header.get("budget", "all"), "plan: budget", BUDGETS)
        masks: dict[str, torch.Tensor] = {}
        for key, m in blobs.items():
            if not key.startswith("mask:"):
                raise SchemaError(f"plan: unknown blob {key!r}; a fiarse plan holds mask:NAME blobs")
            name = key[5:]
            shape, is_param = signature.get(name, (None, False))
            if not is_param or m.dtype != torch.bool or tuple(m.shape) != shape:
                raise SchemaError(f"plan: mask {name!r} ({m.dtype}, {list(m.shape)}) is not a bool mask of a "
                                  f"parameter of the signature" + (f" (shape {list(shape)})" if shape else ""))
            masks[name] = m
        thresholds = _decode.check_dict(header["thresholds"], "plan: thresholds")
        if list(thresholds) != list(masks):
            raise SchemaError("plan: thresholds must name exactly the masked tensors, in mask order")
        for name, tau in thresholds.items():
            _decode.check_float(tau, f"plan: threshold of {name!r}", 0.0, sys.float_info.max, allow_inf=True)
        total = param_count(signature)
        held_masked, maskable = _mask_counts(masks)
        held = total - maskable + held_masked
        if abs((held / total if total else 1.0) - f["kept_fraction"]) > 1e-9:
            raise SchemaError(f"plan: kept_fraction {f['kept_fraction']!r} is not what the masks hold "
                              f"({held} of {total} parameters)")
        return cls(f["ratio"], f["round"], f["kept_fraction"], signature, masks, thresholds, scope, budget)


def plan_fiarse(model: nn.Module, ratio: float, *, round: int = 0, scope: str = "global",
                budget: str = "maskable") -> FiarsePlan:
    """The top-k magnitude masks of ``model`` at size ``ratio`` (``budget``: see the module docstring)."""
    if scope not in SCOPES:
        raise InvalidInputError(f"fiarse: scope={scope!r} is not accepted; expected one of {', '.join(SCOPES)}")
    if budget not in BUDGETS:
        raise InvalidInputError(f"fiarse: budget={budget!r} is not accepted; expected one of {', '.join(BUDGETS)}")
    signature = model_signature(model)
    params = dict(model.named_parameters())
    names = maskable_names(model)
    total = param_count(signature)
    maskable = sum(params[n].numel() for n in names)
    always = total - maskable
    if budget == "maskable":
        k = min(maskable, int(ratio * maskable))
    else:
        k = min(maskable, max(0, int(round_half(ratio * total)) - always))
    masks: dict[str, torch.Tensor] = {}
    thresholds: dict[str, float] = {}
    with torch.no_grad():
        values = [_as_array(params[n]) for n in names]
        if scope == "global":
            tensor_masks, tau = _top_masks(values, k)
            for n, m in zip(names, tensor_masks):
                masks[n] = m
                thresholds[n] = tau
        else:
            frac = k / maskable if maskable else 0.0
            for n, v in zip(names, values):
                (m,), tau = _top_masks([v], int(round_half(frac * v.size)))
                masks[n] = m
                thresholds[n] = tau
    held = always + _mask_counts(masks)[0]
    return FiarsePlan(ratio, round, held / total if total else 1.0, signature, masks, thresholds, scope, budget)


def _mask_counts(masks: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(elements held, elements masked) over a plan's masks."""
    return (sum(int(torch.count_nonzero(m)) for m in masks.values()),
            sum(m.numel() for m in masks.values()))


def _as_array(p: torch.Tensor) -> np.ndarray:
    """``p`` as a numpy array (no copy): float32 / float64 as they are, other floats widened."""
    t = p.detach()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t.cpu().numpy()


def round_half(x: float) -> int:
    """Round half up (Python's round() is banker's rounding)."""
    return int(x + 0.5)


class _MaskedWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, mask: torch.Tensor, tau: float, surrogate: bool) -> torch.Tensor:
        ctx.save_for_backward(w, mask)
        ctx.tau = tau
        ctx.surrogate = surrogate
        return w * mask

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):  # type: ignore[override]
        w, mask = ctx.saved_tensors
        grad = g * mask
        if ctx.surrogate and ctx.tau > 0 and ctx.tau != float("inf"):
            a = w.abs()
            grad = grad * (1.0 + 2.0 * ctx.tau * a / (a + ctx.tau) ** 2)
        return grad, None, None, None


class FiarseSubmodel(nn.Module):
    """A copy of the global model whose forward multiplies each masked tensor by its mask.

    ``gradient`` is ``"surrogate"`` (default) or ``"hard"`` (see the module docstring);
    :func:`edge_sdk.training.train_local` sets it from its ``fiarse_gradient`` argument.
    ``dense()`` returns a plain copy with the unheld elements zeroed (for export).
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor],
                 thresholds: Mapping[str, float], gradient: str = "surrogate") -> None:
        super().__init__()
        self.model = model
        self._names = list(masks)
        for i, name in enumerate(self._names):
            # the plan's own mask tensors, shared read-only (a copy would only cost memory)
            self.register_buffer(f"_mask{i}", masks[name].to(torch.bool), persistent=False)
        self.thresholds = dict(thresholds)
        self.gradient = gradient

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, f"_mask{i}") for i, n in enumerate(self._names)}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.gradient not in GRADIENT_MODES:
            raise InvalidInputError(f"fiarse: gradient={self.gradient!r} is not accepted; "
                                    f"expected one of {', '.join(GRADIENT_MODES)}")
        surrogate = self.gradient == "surrogate"
        params = dict(self.model.named_parameters())
        masked = {}
        for i, name in enumerate(self._names):
            w = params[name]
            mask = getattr(self, f"_mask{i}")
            masked[name] = _MaskedWeight.apply(w, mask.to(w.dtype), self.thresholds.get(name, 0.0), surrogate)
        return torch.func.functional_call(self.model, masked, args, kwargs, strict=False)

    def dense(self) -> nn.Module:
        out = copy.deepcopy(self.model)
        params = dict(out.named_parameters())
        with torch.no_grad():
            for name, mask in self.masks.items():
                params[name].mul_(mask.to(params[name].dtype))
        return out
