"""Validation shared by the aggregation rules: refuse before touching the global model."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import nn

from edge_sdk.errors import PlanMismatchError, UpdateRejectedError
from edge_sdk.submodel._plan import SubmodelPlan, model_signature
from edge_sdk.training import Update

__all__ = ["validate_updates", "finalize", "check_finite", "group_by_plan"]


def _where(i: int, u: Update) -> str:
    return f"update {i} ({u.strategy}, {u.num_samples} samples)"


def validate_updates(global_model: nn.Module, updates: Sequence[Update], rule: str,
                     strategies: Collection[str]) -> None:
    """Check every update against its plan and the global model; raise UpdateRejectedError."""
    if not isinstance(updates, Sequence) or isinstance(updates, (str, bytes)) or len(updates) == 0:
        raise UpdateRejectedError(f"aggregate({rule}): expected a non-empty list of Update objects")
    signature = model_signature(global_model)
    for i, u in enumerate(updates):
        if not isinstance(u, Update):
            raise UpdateRejectedError(f"aggregate({rule}): update {i} is a {type(u).__name__}, not an Update")
        where = _where(i, u)
        if u.strategy not in strategies:
            raise UpdateRejectedError(f"{where}: rule {rule!r} accepts updates of {', '.join(sorted(strategies))}")
        if isinstance(u.num_samples, bool) or not isinstance(u.num_samples, int) or u.num_samples < 1:
            raise UpdateRejectedError(f"{where}: num_samples must be an integer >= 1")
        if u.plan is None:
            expected = {n: s for n, (s, _) in signature.items()}
        else:
            if u.plan.strategy != u.strategy:
                raise UpdateRejectedError(f"{where}: its plan is a {u.plan.strategy} plan")
            try:
                u.plan.check_model(global_model)
            except PlanMismatchError as exc:
                raise UpdateRejectedError(f"{where}: {exc}") from exc
            expected = u.plan.held_shapes()
        if set(u.tensors) != set(expected):
            missing = sorted(set(expected) - set(u.tensors))
            extra = sorted(set(u.tensors) - set(expected))
            raise UpdateRejectedError(f"{where}: tensors do not match its plan (missing {missing[:3]}, "
                                      f"unexpected {extra[:3]})")
        for name, t in u.tensors.items():
            if not isinstance(t, torch.Tensor):
                raise UpdateRejectedError(f"{where}: {name!r} is not a tensor")
            if tuple(t.shape) != tuple(expected[name]):
                raise UpdateRejectedError(f"{where}: {name!r} has shape {list(t.shape)}, its plan holds "
                                          f"{list(expected[name])}")
            # one fused reduction: NaN / Inf anywhere make the sum non-finite; the exact
            # element check runs only then (a finite tensor whose sum overflows passes)
            if t.is_floating_point() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
                raise UpdateRejectedError(f"{where}: {name!r} holds NaN or Inf values")


def finalize(global_model: nn.Module, num: dict[str, torch.Tensor], den: dict[str, torch.Tensor],
             updates: Sequence[Update] = ()) -> None:
    """Add the mean change num/den to the global model where den > 0; elsewhere unchanged.

    Every new tensor is computed and checked finite before any is written: a merge that
    overflows keeps the old model and names the update with the largest value there."""
    state = global_model.state_dict()
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, n in num.items():
            target = state[name]
            d = den[name]
            held = d > 0
            new = target.to(n.dtype) + torch.where(held, n / d.clamp_min(1e-30), torch.zeros((), dtype=n.dtype))
            if not target.is_floating_point():
                new = new.round()
            out[name] = torch.where(held, new.to(target.dtype), target)
        check_finite(out, updates)
        for name, value in out.items():
            state[name].copy_(value)


def check_finite(values: dict[str, torch.Tensor], updates: Sequence[Update] = ()) -> None:
    """Raise UpdateRejectedError when a merged tensor is not finite (naming the update with
    the largest magnitude in it); nothing has been written yet."""
    for name, value in values.items():
        if not value.is_floating_point() or bool(torch.isfinite(value).all()):
            continue
        peaks = [float(u.tensors[name].abs().max()) if name in u.tensors and u.tensors[name].numel() else 0.0
                 for u in updates]
        who = f"update {max(range(len(peaks)), key=peaks.__getitem__)} holds its largest values" if peaks else \
            "no update named"
        raise UpdateRejectedError(f"merge: {name!r} would overflow ({who}); the global model is kept")


def group_by_plan(updates: Sequence[Update]) -> list[tuple[SubmodelPlan, list[Update]]]:
    """(validated) updates grouped by identical plan (same tier, same round), in first-seen order."""
    groups: list[tuple[SubmodelPlan, list[Update]]] = []
    for u in updates:
        assert u.plan is not None
        for plan, members in groups:
            if u.plan is plan or plan.same_as(u.plan):
                members.append(u)
                break
        else:
            groups.append((u.plan, [u]))
    return groups
