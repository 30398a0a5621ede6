"""The SubmodelPlan base class: what one client holds of the global model for one round."""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edge_sdk import _decode
from edge_sdk._decode import Budget, DecodeLimits
from edge_sdk.errors import LimitExceededError, PlanMismatchError, SchemaError
from edge_sdk.submodel import _serial

__all__ = ["SubmodelPlan", "model_signature", "param_count", "check_index", "plan_fields"]

PLAN_MAGIC = b"EDGEPLAN"
PLAN_VERSION = 1  # the header schema; integrity comes from the container (see _serial)
# Where each plan kind is defined: from_bytes imports the module on first sight of a kind, so
# a fresh process reads every kind without importing the strategies first.
PLAN_KIND_MODULES = {
    "fiarse": "edge_sdk.submodel.fiarse",
    "structured": "edge_sdk.submodel.structured",
    "fedra": "edge_sdk.submodel.fedra",
}
_STRATEGY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_COMMON_FIELDS = ("kind", "strategy", "ratio", "round", "kept_fraction", "signature")

Signature = dict[str, tuple[tuple[int, ...], bool]]  # name -> (shape, is_parameter)


def model_signature(model: nn.Module) -> Signature:
    """State-dict names with shapes, and whether each entry is a parameter (vs a buffer)."""
    params = {name for name, _ in model.named_parameters()}
    return {name: (tuple(t.shape), name in params) for name, t in model.state_dict().items()}


def param_count(signature: Signature) -> int:
    total = 0
    for shape, is_param in signature.values():
        if is_param:
            n = 1
            for s in shape:
                n *= s
            total += n
    return total


class SubmodelPlan:
    """Base class of the plans; use :func:`edge_sdk.submodel.plan` / ``plan_fedra`` to make one.

    Attributes: ``strategy``, ``ratio`` (the requested size), ``round``, ``kept_fraction``
    (fraction of the global model's parameters the client holds) and ``signature`` (the
    global model's state-dict names and shapes, checked by :meth:`check_model`).
    """

    kind: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[SubmodelPlan]]] = {}

    def __init__(self, strategy: str, ratio: float, round: int, kept_fraction: float,
                 signature: Signature) -> None:
        self.strategy = strategy
        self.ratio = float(ratio)
        self.round = int(round)
        self.kept_fraction = float(kept_fraction)
        self.signature = dict(signature)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            SubmodelPlan._registry[cls.kind] = cls

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(strategy={self.strategy!r}, ratio={self.ratio:g}, "
                f"round={self.round}, kept_fraction={self.kept_fraction:.4f})")

    # ---- model checks -------------------------------------------------------------------
    def check_model(self, model: nn.Module) -> None:
        """Raise PlanMismatchError unless ``model`` has the recorded names and shapes."""
        sig = model_signature(model)
        if sig == self.signature:
            return
        missing = [n for n in self.signature if n not in sig]
        extra = [n for n in sig if n not in self.signature]
        if missing:
            msg = f"model lacks {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        elif extra:
            msg = f"model has unexpected {extra[0]!r}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
        else:
            name = next(n for n in sig if sig[n] != self.signature[n])
            msg = (f"{name!r} has shape {list(sig[name][0])}, the plan was made for "
                   f"{list(self.signature[name][0])}")
        raise PlanMismatchError(f"{self.strategy} plan does not match the model: {msg}; "
                                f"apply a plan only to the global model it was made from")

    # ---- what a client holds ------------------------------------------------------------
    def held_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the tensors a client update carries under this plan."""
        raise NotImplementedError

    def extract(self, global_model: nn.Module) -> nn.Module:
        """The client's submodel to train (a new module; the global model is not modified)."""
        raise NotImplementedError

    def gather(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The part of global tensor ``name`` a client holds (shaped as in its update)."""
        raise NotImplementedError

    def scatter(self, name: str, value: torch.Tensor, num: torch.Tensor, den: torch.Tensor,
                weight: float) -> None:
        """Add held-shaped ``value`` into ``num`` and ``weight`` into ``den`` where held."""
        raise NotImplementedError

    def scatter_add(self, name: str, value: torch.Tensor, base: torch.Tensor, num: torch.Tensor,
                    den: torch.Tensor, weight: float) -> None:
        """Add ``weight * (value - held part of base)`` into ``num`` and ``weight`` into ``den``.

        ``base`` is the global tensor ``name``; ``value`` the client's held part of it.
        """
        delta = (value.to(num.dtype) - self.gather(name, base).to(num.dtype)) * weight
        self.scatter(name, delta, num, den, weight)

    def same_as(self, other: SubmodelPlan) -> bool:
        """True when ``other`` holds exactly the same elements of the same model."""
        return type(other) is type(self) and other.strategy == self.strategy and other.signature == self.signature

    # ---- bytes --------------------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "strategy": self.strategy,
            "ratio": self.ratio,
            "round": self.round,
            "kept_fraction": self.kept_fraction,
            "signature": [[n, list(s), p] for n, (s, p) in self.signature.items()],
        }

    def _blobs(self) -> tuple[dict[str, torch.Tensor], set[str]]:
        return {}, set()

    def to_bytes(self) -> bytes:
        """Serialise without pickle (JSON header + raw/bit-packed tensors).

        Plans are treated as immutable once made: the bytes are computed once and cached.
        """
        cached = getattr(self, "_bytes_cache", None)
        if cached is None:
            cached = self._to_bytes()
            self._bytes_cache = cached
        return cached

    def _to_bytes(self) -> bytes:
        header = self._header()
        blobs, bits = self._blobs()
        return _serial.pack(PLAN_MAGIC, PLAN_VERSION, header, blobs, bits=bits)

    @classmethod
    def from_bytes(cls, data: bytes, *, limits: DecodeLimits | None = None,
                   budget: Budget | None = None) -> SubmodelPlan:
        """Rebuild a plan written by :meth:`to_bytes` (any strategy).

        Raises SchemaError (ChecksumError, LimitExceededError, SchemaVersionError) naming the
        field on anything malformed, altered or larger than ``limits`` allow; ``budget`` is
        the caller's when the plan is part of a larger document.
        """
        _, header, blobs = _serial.unpack_versions(data, PLAN_MAGIC, (PLAN_VERSION,), "plan",
                                                   budget=budget, limits=limits)
        kind = _decode.field(header, "kind", "plan")
        sub = _plan_class(kind)
        signature = _signature(_decode.field(header, "signature", "plan"), limits)
        try:
            return sub._from_parts(header, blobs, signature)
        except SchemaError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:  # a check missing above
            raise SchemaError(f"plan: malformed {kind} plan ({exc!r})") from exc

    @classmethod
    def _from_parts(cls, header: Mapping[str, Any], blobs: Mapping[str, torch.Tensor],
                    signature: Signature) -> SubmodelPlan:
        raise NotImplementedError


def _plan_class(kind: Any) -> type[SubmodelPlan]:
    known = sorted(set(SubmodelPlan._registry) | set(PLAN_KIND_MODULES))
    if isinstance(kind, str) and kind not in SubmodelPlan._registry and kind in PLAN_KIND_MODULES:
        importlib.import_module(PLAN_KIND_MODULES[kind])
    sub = SubmodelPlan._registry.get(kind) if isinstance(kind, str) else None
    if sub is None:
        raise SchemaError(f"plan: unknown plan kind {_decode.show(kind)}; known: {', '.join(known)}")
    return sub


def _signature(value: Any, limits: DecodeLimits | None) -> Signature:
    """The checked ``signature`` field: unique names, shapes, strict bools, bounded size."""
    lim = limits or _decode.LIMITS
    out: Signature = {}
    total = 0
    for i, entry in enumerate(_decode.check_list(value, "plan: signature")):
        name, shape, is_param = _decode.check_list(entry, f"plan: signature entry {i}", 3)
        name = _decode.check_str(name, f"plan: signature entry {i} name")
        if name in out:
            raise SchemaError(f"plan: signature lists {name!r} twice")
        where = f"plan: signature {name!r}"
        shape = _decode.check_shape(shape, f"{where} shape", lim)
        total += _decode.numel(shape)
        if total > lim.max_model_elements:
            raise LimitExceededError(f"plan: signature holds more than {lim.max_model_elements} elements")
        out[name] = (shape, _decode.check_bool(is_param, f"{where} is_parameter"))
    return out


def plan_fields(header: Mapping[str, Any], kind_fields: tuple[str, ...], strategies: tuple[str, ...] | None,
                optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The common plan fields, checked: ``strategy`` one of ``strategies`` (``None``: any
    lowercase name, for kinds whose strategies may be registered only where plans are made),
    ``ratio`` in (0, 1], ``round`` an integer >= 0, ``kept_fraction`` in [0, 1]; no field
    outside the common ones, ``kind_fields`` and ``optional``."""
    _decode.check_keys(header, _COMMON_FIELDS + kind_fields, ("version",) + optional, "plan")
    strategy = header["strategy"]
    if strategies is not None:
        _decode.check_choice(strategy, "plan: strategy", strategies)
    elif not isinstance(strategy, str) or not _STRATEGY_NAME.fullmatch(strategy):
        raise SchemaError(f"plan: strategy must be a lowercase name (letters, digits, '-', '_', '.'; at most 64), "
                          f"got {_decode.show(strategy)}")
    return {
        "strategy": strategy,
        "ratio": _decode.check_float(header["ratio"], "plan: ratio", 0.0, 1.0, lo_open=True),
        "round": _decode.check_int(header["round"], "plan: round"),
        "kept_fraction": _decode.check_float(header["kept_fraction"], "plan: kept_fraction", 0.0, 1.0),
    }


def check_index(blob: Any, size: int, where: str) -> np.ndarray:
    """An index blob as int64: a 1-d int32 tensor, strictly increasing, within [0, size)."""
    if not isinstance(blob, torch.Tensor) or blob.dtype != torch.int32 or blob.dim() != 1:
        got = f"{blob.dtype} {list(blob.shape)}" if isinstance(blob, torch.Tensor) else type(blob).__name__
        raise SchemaError(f"{where} must be a 1-d int32 tensor, got {got}")
    arr = blob.numpy()
    if arr.size and (int(arr[0]) < 0 or int(arr[-1]) >= size or not bool(np.all(arr[1:] > arr[:-1]))):
        raise SchemaError(f"{where} must be strictly increasing indices in [0, {size})")
    return arr.astype(np.int64)
