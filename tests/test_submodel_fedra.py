"""FedRA: block allocation (order, coverage, counts), LoRA, frozen backbone, aggregation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from edge_sdk import models
from edge_sdk.aggregation import aggregate
from edge_sdk.errors import InvalidInputError, PlanMismatchError, UpdateRejectedError
from edge_sdk.submodel import LoRALinear, SubmodelPlan, plan_fedra
from edge_sdk.training import Update, train_local


def vit(depth=6):
    torch.manual_seed(0)
    return models.create("vit_tiny", depth=depth, width=0.25, img_size=16)


X = torch.randn(4, 3, 16, 16)
Y = torch.randint(0, 10, (4,))


def test_allocation_counts_order_and_reproducibility():
    m = vit()
    ref = m(X).detach()
    caps = [1.0, 0.5, 0.34, 0.1, 1 / 6]
    plans = plan_fedra(m, caps, rng=np.random.default_rng(7))
    for c, p in zip(caps, plans):
        assert len(p.kept_blocks) == max(1, math.ceil(c * 6 - 1e-9))
        assert p.kept_blocks == sorted(set(p.kept_blocks))
        assert all(0 <= b < 6 for b in p.kept_blocks)
    once = plan_fedra(m, caps, rng=np.random.default_rng(7))  # adapters exist now: same seed, same draw
    again = plan_fedra(m, caps, rng=np.random.default_rng(7))
    assert [p.kept_blocks for p in again] == [p.kept_blocks for p in once]
    draws = {tuple(p.kept_blocks) for p in plan_fedra(m, [0.5] * 20, rng=np.random.default_rng(1))}
    assert len(draws) > 3  # random, not a fixed contiguous window
    # adapters were added with B = 0: the global model's function is unchanged
    assert sum(isinstance(mod, LoRALinear) for mod in m.modules()) == 6 * 4
    assert torch.allclose(m(X), ref, atol=1e-6)
    with pytest.raises(InvalidInputError, match="capacity"):
        plan_fedra(m, [0.0], rng=1)
    with pytest.raises(InvalidInputError, match="rng"):
        plan_fedra(m, [0.5], rng="x")
    with pytest.raises(PlanMismatchError, match="rank"):
        plan_fedra(m, [0.5], rng=1, lora_rank=4)
    with pytest.raises(InvalidInputError, match="model.blocks"):
        plan_fedra(nn.Sequential(nn.Linear(2, 2)), [0.5], rng=1)


def test_extract_keeps_drawn_blocks_in_order_and_freezes_backbone():
    m = vit()
    (p,) = plan_fedra(m, [0.5], rng=np.random.default_rng(3))
    sub = p.extract(m)
    for i, block in enumerate(sub.blocks):
        if i in p.kept_blocks:
            assert not isinstance(block, nn.Identity)
            assert all(torch.equal(a, b) for a, b in zip(block.state_dict().values(), m.blocks[i].state_dict().values()))
        else:
            assert isinstance(block, nn.Identity)
    # the forward is exactly the drawn blocks, in their original order
    m.eval()
    sub.eval()
    with torch.no_grad():
        h = m.patch_embed(X)
        h = torch.cat([m.cls_token.expand(4, -1, -1), h], dim=1) + m.pos_embed
        for i in p.kept_blocks:
            h = m.blocks[i](h)
        expected = m.head(m.norm(h)[:, 0])
    assert torch.allclose(sub(X), expected, atol=1e-5)
    trainable = {n for n, q in sub.named_parameters() if q.requires_grad}
    assert trainable == set(p.trainable)
    assert all(n.startswith("head.") or n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert {int(n.split(".")[1]) for n in trainable if n.startswith("blocks.")} == set(p.kept_blocks)
    assert p.kept_fraction < 1.0


def test_fedra_update_and_aggregation_average_over_trainers():
    m = vit(depth=4)
    plans = plan_fedra(m, [0.5, 0.5, 1.0], rng=np.random.default_rng(0))
    assert [SubmodelPlan.from_bytes(p.to_bytes()).kept_blocks for p in plans] == [p.kept_blocks for p in plans]
    backbone = {n: t.clone() for n, t in m.state_dict().items() if "lora" not in n and not n.startswith("head")}
    updates = []
    for k, p in enumerate(plans):
        u = train_local(p.extract(m), [(X, Y)], p, steps=1)
        assert set(u.tensors) == set(p.trainable)
        # replace the trained values by known constants to check the rule by hand
        u.tensors = {n: torch.full_like(t, float(k + 1)) for n, t in u.tensors.items()}
        u.num_samples = k + 1
        updates.append(u)
    before = copy.deepcopy(m.state_dict())
    aggregate(m, updates, "fedra")
    state = m.state_dict()
    for name, t in state.items():
        if name in backbone:
            assert torch.equal(t, backbone[name]), name  # the backbone stays frozen
            continue
        holders = [(k + 1, u.num_samples) for k, u in enumerate(updates) if name in u.tensors]
        if not holders:
            assert torch.equal(t, before[name]), name
        else:
            expected = sum(v * n for v, n in holders) / sum(n for _, n in holders)
            assert torch.allclose(t, torch.full_like(t, expected), atol=1e-5), name
    # NaN adapters are refused and the model stays as it was
    bad = copy.copy(updates[0])
    bad.tensors = {n: torch.full_like(t, float("nan")) for n, t in updates[0].tensors.items()}
    snapshot = copy.deepcopy(m.state_dict())
    with pytest.raises(UpdateRejectedError, match="NaN"):
        aggregate(m, [updates[1], bad], "fedra")
    assert all(torch.equal(t, snapshot[n]) for n, t in m.state_dict().items())
    with pytest.raises(UpdateRejectedError, match="accepts"):
        aggregate(m, updates, "fiarse")
