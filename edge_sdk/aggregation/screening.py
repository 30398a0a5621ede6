"""Checks on a round's updates before any merge rule runs (issue #11).

Each failure raises :class:`~edge_sdk.errors.UpdateRejectedError` naming the update, and
the global model is left as it was (a server drops that update and merges the rest):

* its plan is not the one the server assigned it (``assigned``),
* a tensor's dtype differs from the global tensor's,
* a value lies beyond ``value_bound * (1 + max |global tensor|)`` (float tensors) — far
  past any honest step, and what would overflow a float32 sum.

Duplicates are not an error: the same Update object, or one with identical plan, sample
count and tensor bytes, listed again counts once (:func:`drop_duplicates`; the later copies
are reported). A retransmitted reply is common; counting it twice never is right.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edge_sdk.errors import UpdateRejectedError

__all__ = ["check_integrity", "drop_duplicates", "same_plan"]


def same_plan(a: Any, b: Any) -> bool:
    """Both None (the whole model), or plans holding the same elements of the same round."""
    if a is None or b is None:
        return a is None and b is None
    return a is b or (a.round == b.round and a.ratio == b.ratio and a.same_as(b))


def check_integrity(global_model: nn.Module, updates: Sequence[Any], *, value_bound: float,
                    assigned: Sequence[Any] | None = None) -> None:
    """Raise UpdateRejectedError for the first update that fails a check (see the module)."""
    if assigned is not None:
        assigned = list(assigned)
        if len(assigned) != len(updates):
            raise UpdateRejectedError(f"merge: {len(updates)} updates but {len(assigned)} assigned plans; "
                                      "pass the plan each update was sent, in the same order")
    state = global_model.state_dict()
    limits: dict[str, float] = {}
    for i, u in enumerate(updates):
        if assigned is not None and not same_plan(u.plan, assigned[i]):
            raise UpdateRejectedError(f"update {i} ({u.strategy}): its plan is not the one the server assigned it")
        for name, t in u.tensors.items():
            target = state[name]
            if t.dtype != target.dtype:
                raise UpdateRejectedError(f"update {i} ({u.strategy}): {name!r} is {t.dtype}, the global tensor "
                                          f"is {target.dtype}")
            if not t.is_floating_point() or t.numel() == 0:
                continue
            if name not in limits:
                scale = float(target.abs().max()) if target.numel() else 0.0
                limits[name] = value_bound * (1.0 + scale)
            peak = float(t.abs().max())
            if peak > limits[name]:
                raise UpdateRejectedError(f"update {i} ({u.strategy}): {name!r} holds |value| {peak:.3g}, beyond "
                                          f"the bound {limits[name]:.3g} ({value_bound:g} x (1 + max |global|))")


def _fingerprint(u: Any) -> tuple:
    first = next(iter(u.tensors.values()), None)
    probe = float(first.double().sum()) if first is not None and first.numel() else 0.0
    return (u.strategy, int(u.num_samples), tuple(u.tensors), probe)


def _identical(a: Any, b: Any) -> bool:
    if not same_plan(a.plan, b.plan) or a.num_samples != b.num_samples or list(a.tensors) != list(b.tensors):
        return False
    return all(a.tensors[n].dtype == b.tensors[n].dtype and torch.equal(a.tensors[n], b.tensors[n])
               for n in a.tensors)


def drop_duplicates(updates: Sequence[Any]) -> tuple[list[Any], list[int], list[int]]:
    """(unique updates, their indices in ``updates``, indices of dropped duplicates)."""
    kept: list[Any] = []
    kept_idx: list[int] = []
    dropped: list[int] = []
    seen: dict[tuple, list[int]] = {}
    ids: set[int] = set()
    for i, u in enumerate(updates):
        if id(u) in ids:
            dropped.append(i)
            continue
        key = _fingerprint(u)
        if any(_identical(u, kept[j]) for j in seen.get(key, [])):
            dropped.append(i)
            continue
        seen.setdefault(key, []).append(len(kept))
        ids.add(id(u))
        kept.append(u)
        kept_idx.append(i)
    return kept, kept_idx, dropped
