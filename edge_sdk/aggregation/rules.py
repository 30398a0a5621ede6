"""Aggregation rules: per-element averaging (FIARSE, HeteroFL, FedRolex), FedAvg."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import nn

from edge_sdk.aggregation._common import check_finite, finalize, group_by_plan, validate_updates
from edge_sdk.training import Update

__all__ = ["per_element", "fedavg"]

def _buffers(global_model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    num, den = {}, {}
    for name, t in global_model.state_dict().items():
        dtype = t.dtype if t.is_floating_point() else torch.float64
        num[name] = torch.zeros(t.shape, dtype=dtype)
        den[name] = torch.zeros(t.shape, dtype=dtype)
    return num, den


def per_element(global_model: nn.Module, updates: Sequence[Update], rule: str,
                accepts: Collection[str] | None = None) -> nn.Module:
    """Each element becomes the sample-weighted mean over the clients that hold it.

    Computed as ``old + sum_i n_i (v_i - old) / sum_i n_i`` (mean of the changes, as the
    released FIARSE server does), so clients that return unchanged values leave the
    model bit-for-bit unchanged. Elements no client holds keep their value. Masks (fiarse) and index maps (structured)
    come from each update's plan. ``accepts``: the plan strategies the rule takes (default: ``rule`` itself).
    """
    validate_updates(global_model, updates, rule, (rule,) if accepts is None else accepts)
    num, den = _buffers(global_model)
    state = global_model.state_dict()
    # clients with identical plans (same tier, same round) are summed in submodel space first,
    # so each distinct plan scatters into the global tensors once
    groups = group_by_plan(updates)
    with torch.no_grad():
        for plan, members in groups:
            wsum = float(sum(u.num_samples for u in members))
            for name in members[0].tensors:
                base = plan.gather(name, state[name]).to(num[name].dtype)
                acc = torch.zeros_like(base)
                for u in members:
                    acc.add_(u.tensors[name].to(acc.dtype) - base, alpha=float(u.num_samples))
                plan.scatter(name, acc, num[name], den[name], wsum)
    finalize(global_model, num, den, updates)
    return global_model


def fedavg(global_model: nn.Module, updates: Sequence[Update], rule: str = "fedavg") -> nn.Module:
    """Sample-weighted mean of full-model updates (``train_local(..., plan=None)``)."""
    validate_updates(global_model, updates, rule, ("fedavg",))
    total = float(sum(u.num_samples for u in updates))
    state = global_model.state_dict()
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, target in state.items():
            acc = torch.zeros(target.shape, dtype=target.dtype if target.is_floating_point() else torch.float64)
            for u in updates:
                acc.add_(u.tensors[name].to(acc.dtype), alpha=u.num_samples / total)
            out[name] = acc if target.is_floating_point() else acc.round().to(target.dtype)
        check_finite(out, updates)
        for name, value in out.items():
            state[name].copy_(value)
    return global_model
