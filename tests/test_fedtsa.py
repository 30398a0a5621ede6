"""FedTSA two-stage aggregation and the server data sources."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from edge_sdk.aggregation import aggregate
from edge_sdk.aggregation.fedtsa import (
    fedtsa,
    fedtsa_aggregate,
    merge_tier_models,
    mutual_learning,
    stage1_tier_models,
)
from edge_sdk.errors import InvalidInputError, UpdateRejectedError
from edge_sdk.server_data import DeepInversionData, GeneratorData, ProxyData, ServerDataSource
from edge_sdk.submodel import plan
from edge_sdk.training import Update, train_local


def mlp(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(4, 6)]
    if bn:
        layers.append(nn.BatchNorm1d(6))
    layers += [nn.ReLU(), nn.Linear(6, 3)]
    return nn.Sequential(*layers)


X = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))


def state_copy(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def const_update(p, value: float, n: int) -> Update:
    return Update(p.strategy, p, {k: torch.full(s, value) for k, s in p.held_shapes().items()}, n)


def two_tier_updates(g: nn.Module) -> tuple[object, object, list[Update]]:
    small = plan("heterofl", g, 0.4, example_input=X)
    big = plan("heterofl", g, 1.0, example_input=X)
    ups = [const_update(small, 1.0, 1), const_update(small, 4.0, 3),
           const_update(big, 10.0, 2), const_update(big, 20.0, 2)]
    return small, big, ups


def test_stage1_hand_computed_tier_averages():
    g = mlp()
    small, big, ups = two_tier_updates(g)
    tiers = stage1_tier_models(g, ups)
    assert [t.plan is p for t, p in zip(tiers, (big, small))] == [True, True]
    assert [t.num_samples for t in tiers] == [4, 4]
    # tier averages: small (1*1 + 3*4) / 4 = 3.25, big (2*10 + 2*20) / 4 = 15
    for t, want in zip(tiers, (15.0, 3.25)):
        for name, v in t.model.state_dict().items():
            assert torch.allclose(v, torch.full_like(v, want)), name
    # the tier model is a physically smaller network
    assert tiers[1].model.state_dict()["0.weight"].shape[0] < 6
    # stage 1 only merges like the per-element structured rule (HeteroFL)
    g1, g2 = copy.deepcopy(g), copy.deepcopy(g)
    fedtsa(g1, ups)
    aggregate(g2, ups, "heterofl")
    for k in g1.state_dict():
        assert torch.allclose(g1.state_dict()[k], g2.state_dict()[k], atol=1e-6), k
    # an element both tiers hold: (4 * 3.25 + 4 * 15) / 8; one only the big tier holds: 15
    held = small.keep[0].tolist()
    w = g1.state_dict()["0.weight"]
    assert torch.allclose(w[held[0]], torch.full((4,), (4 * 3.25 + 4 * 15.0) / 8))
    other = [i for i in range(6) if i not in held][0]
    assert torch.allclose(w[other], torch.full((4,), 15.0))


def test_merge_leaves_unheld_elements_unchanged():
    g = mlp()
    before = state_copy(g)
    small = plan("heterofl", g, 0.4, example_input=X)
    fedtsa(g, [const_update(small, 7.0, 5)])
    held = set(small.keep[0].tolist())
    w = g.state_dict()["0.weight"]
    for i in range(6):
        if i in held:
            assert torch.allclose(w[i], torch.full((4,), 7.0))
        else:
            assert torch.equal(w[i], before["0.weight"][i])


def _trained_tiers(bn: bool = False):
    g = mlp(3, bn=bn)
    data = [(torch.randn(16, 4, generator=torch.Generator().manual_seed(s)),
             torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(s + 50))) for s in range(3)]
    ups = []
    for ratio, seed in ((1.0, 0), (0.4, 1)):
        p = plan("heterofl", g, ratio, example_input=X)
        torch.manual_seed(seed)
        ups.append(train_local(p.extract(g), data[seed:seed + 1], p, steps=5, lr=0.1))
    return g, ups


def _tier_kl(models, x: torch.Tensor, temperature: float = 3.0) -> float:
    with torch.no_grad():
        for m in models:
            m.eval()
        lp = [F.log_softmax(m(x) / temperature, 1) for m in models]
        target = torch.stack([v.exp() for v in lp]).mean(0)
        return float(sum(F.kl_div(v, target, reduction="batchmean") for v in lp))


def test_stage2_moves_tier_models_towards_consensus():
    g, ups = _trained_tiers(bn=True)
    tiers = stage1_tier_models(g, ups)
    models = [t.model for t in tiers]
    proxy = torch.randn(256, 4, generator=torch.Generator().manual_seed(9))
    held_out = torch.randn(128, 4, generator=torch.Generator().manual_seed(10))
    before = _tier_kl(models, held_out)
    bn_before = state_copy(models[0])["1.running_mean"]
    kls, finite = mutual_learning(models, ProxyData(proxy).batches(models, 60, 32, 0), temperature=3.0, lr=0.05)
    assert all(finite) and len(kls) == 60
    after = _tier_kl(models, held_out)
    assert after < 0.5 * before, (before, after)
    assert np.mean(kls[-10:]) < np.mean(kls[:10])
    assert torch.equal(models[0].state_dict()["1.running_mean"], bn_before)  # BN stats kept


def test_stage2_changes_the_global_model_and_reports():
    g, ups = _trained_tiers()
    g1, g2 = copy.deepcopy(g), copy.deepcopy(g)
    src = ProxyData(torch.randn(64, 4, generator=torch.Generator().manual_seed(4)))
    _, rep = fedtsa_aggregate(g1, ups, server_data=src, distill_steps=5, batch_size=16, rng=0)
    fedtsa(g2, ups, server_data=src, stage2=False)
    assert rep.stage2 and rep.distill_steps == 5 and rep.stage2_seconds > 0
    assert [t["clients"] for t in rep.tiers] == [1, 1]
    assert not torch.allclose(g1.state_dict()["0.weight"], g2.state_dict()["0.weight"])
    # reproducible for a given rng
    g3 = copy.deepcopy(g)
    fedtsa(g3, ups, server_data=src, distill_steps=5, batch_size=16, rng=0)
    assert torch.equal(g1.state_dict()["0.weight"], g3.state_dict()["0.weight"])


def test_nan_update_refused_global_untouched():
    g, ups = _trained_tiers()
    before = state_copy(g)
    bad = ups[1].tensors["0.weight"].clone()
    bad[0, 0] = float("nan")
    ups[1] = Update(ups[1].strategy, ups[1].plan, {**ups[1].tensors, "0.weight": bad}, ups[1].num_samples)
    src = ProxyData(torch.randn(32, 4))
    with pytest.raises(UpdateRejectedError, match="NaN"):
        fedtsa(g, ups, server_data=src, distill_steps=2, batch_size=8)
    for k, v in g.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_refusals_leave_global_untouched():
    g, ups = _trained_tiers()
    before = state_copy(g)
    fiarse_plan = plan("fiarse", g, 0.5)
    fi = Update("fiarse", fiarse_plan, {k: torch.zeros(s) for k, s in fiarse_plan.held_shapes().items()}, 1)
    with pytest.raises(UpdateRejectedError, match="accepts updates of"):
        fedtsa(g, [ups[0], fi])
    with pytest.raises(InvalidInputError, match="temperature"):
        fedtsa(g, ups, temperature=0.0)
    with pytest.raises(InvalidInputError, match="server_data"):
        fedtsa(g, ups, server_data=torch.randn(4, 4))
    with pytest.raises(InvalidInputError, match="cannot run server batch"):  # wrong input shape
        fedtsa(g, ups, server_data=ProxyData(torch.randn(16, 5)), distill_steps=2, batch_size=4)
    for k, v in g.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_data_sources_shapes():
    models = [mlp(0, bn=True), mlp(1, bn=True)]
    x = torch.randn(10, 4)
    for src in (ProxyData(x), ProxyData(TensorDataset(x, torch.zeros(10))),
                GeneratorData(lambda n, rng: torch.from_numpy(rng.standard_normal((n, 4)).astype(np.float32))),
                DeepInversionData((4,), 3, steps=3)):
        assert isinstance(src, ServerDataSource)
        got = list(src.batches(models, 5, 4, np.random.default_rng(0)))
        assert len(got) == 5 and all(b.shape == (4, 4) and b.dtype == torch.float32 for b in got)
    # a proxy pass covers every sample before any repeats
    seen = torch.cat(list(ProxyData(torch.arange(10.0)[:, None, None]).batches(models, 2, 5, 1))).flatten()
    assert sorted(seen.tolist()) == list(range(10))
    with pytest.raises(InvalidInputError, match="rows"):
        list(GeneratorData(lambda n, rng: torch.zeros(n + 1, 4)).batches(models, 1, 4))
    with pytest.raises(InvalidInputError, match="NaN"):
        ProxyData(torch.full((3, 4), float("nan")))


def test_deepinversion_reduces_its_loss_and_matches_bn_stats():
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[3.0, 0, 0, 1], [0, 3.0, 0, 1], [0, 0, 3.0, 1]])
    labels = torch.randint(0, 3, (300,), generator=gen)
    data = centers[labels] + 0.5 * torch.randn(300, 4, generator=gen)
    models = [mlp(0, bn=True), mlp(1, bn=True)]
    for m in models:  # trained classifiers with BN running statistics of the data
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        m.train()
        for _ in range(60):
            opt.zero_grad()
            F.cross_entropy(m(data), labels).backward()
            opt.step()
    params = [state_copy(m) for m in models]
    x, y, hist = DeepInversionData((4,), 3, steps=150, lr=0.05).synthesize(models, 64, 0)
    assert hist[-1] < 0.5 * hist[0]
    assert x.shape == (64, 4) and y.shape == (64,)
    for m in models:  # both models predict the sampled target classes
        assert float((m.eval()(x).argmax(1) == y).float().mean()) > 0.9

    @torch.no_grad()
    def bn_gap(inp: torch.Tensor) -> float:  # batch vs running statistics at the BN layer
        h = models[0][0](inp)
        bn = models[0][1]
        return float((h.mean(0) - bn.running_mean).norm() + (h.var(0, unbiased=False) - bn.running_var).norm())

    assert bn_gap(x) < 0.5 * bn_gap(torch.randn(64, 4, generator=gen))
    for m, p in zip(models, params):  # synthesis leaves the models as they were
        for k, v in m.state_dict().items():
            assert torch.equal(v, p[k]), k
    # without BN the class loss and priors still go down
    plain = [mlp(2)]
    _, _, hist2 = DeepInversionData((4,), 3, steps=50, lr=0.05).synthesize(plain, 16, 1)
    assert hist2[-1] < hist2[0]


def test_merge_tier_models_is_weighted_mean_over_holders():
    g = mlp()
    before = state_copy(g)
    small, big, ups = two_tier_updates(g)
    tiers = stage1_tier_models(g, ups)
    with torch.no_grad():  # pretend stage 2 moved the models
        for t, v in zip(tiers, (2.0, 6.0)):
            for p in t.model.parameters():
                p.fill_(v)
    tiers[0].num_samples, tiers[1].num_samples = 1, 3
    merge_tier_models(g, tiers)
    w = g.state_dict()["0.weight"]
    h = small.keep[0].tolist()[0]
    assert torch.allclose(w[h], torch.full((4,), (1 * 2.0 + 3 * 6.0) / 4))
    assert not torch.equal(w, before["0.weight"])
