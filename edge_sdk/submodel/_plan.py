"""The SubmodelPlan base class: what one client holds of the global model for one round."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from edge_sdk.errors import PlanMismatchError, SchemaError
from edge_sdk.submodel import _serial

__all__ = ["SubmodelPlan", "model_signature", "param_count"]

PLAN_MAGIC = b"EDGEPLAN"
PLAN_VERSION = 1

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
    def from_bytes(cls, data: bytes) -> SubmodelPlan:
        """Rebuild a plan written by :meth:`to_bytes` (any strategy)."""
        header, blobs = _serial.unpack(data, PLAN_MAGIC, PLAN_VERSION, "plan")
        kind = header.get("kind")
        sub = SubmodelPlan._registry.get(kind)  # type: ignore[arg-type]
        if sub is None:
            raise SchemaError(f"plan: unknown plan kind {kind!r}; known: {', '.join(sorted(SubmodelPlan._registry))}")
        try:
            signature = {n: (tuple(int(x) for x in s), bool(p)) for n, s, p in header["signature"]}
            return sub._from_parts(header, blobs, signature)
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"plan: malformed {kind} plan ({exc!r})") from exc

    @classmethod
    def _from_parts(cls, header: Mapping[str, Any], blobs: Mapping[str, torch.Tensor],
                    signature: Signature) -> SubmodelPlan:
        raise NotImplementedError
