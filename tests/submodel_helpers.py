"""Shared checks of structured submodels: a submodel equals the global model with unheld channels zeroed."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edge_sdk.submodel import plan


def zero_unkept(model: nn.Module, p) -> nn.Module:
    g = copy.deepcopy(model)
    sd = g.state_dict()
    with torch.no_grad():
        for name, dims in p.index_map.items():
            t = sd[name]
            keep = torch.ones(t.shape, dtype=torch.bool)
            for d, idx in enumerate(dims):
                if idx is not None:
                    km = torch.zeros(t.shape[d], dtype=torch.bool)
                    km[idx] = True
                    shape = [1] * t.dim()
                    shape[d] = -1
                    keep &= km.reshape(shape)
            t[~keep] = 0
    return g


def randomise_norms(m: nn.Module) -> None:
    torch.manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
            with torch.no_grad():
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-1, 1)


def check_equivalent(m: nn.Module, x: torch.Tensor, ratio: float, strategy: str, round: int = 3):
    randomise_norms(m)
    m.eval()
    p = plan(strategy, m, ratio, round=round, example_input=x)
    sub = p.extract(m).eval()
    n_sub = sum(t.numel() for t in sub.parameters())
    n_full = sum(t.numel() for t in m.parameters())
    assert n_sub / n_full == pytest.approx(p.kept_fraction)
    # the submodel owns its storage: changing it leaves the global model alone
    g_ptrs = {t.data_ptr() for t in list(m.parameters()) + list(m.buffers())}
    assert not any(t.data_ptr() in g_ptrs for t in list(sub.parameters()) + list(sub.buffers()))
    expected = zero_unkept(m, p)(x)
    with torch.no_grad():
        got = sub(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), float((got - expected).abs().max())
    return p, sub
