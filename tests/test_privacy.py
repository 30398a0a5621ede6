"""Client-level DP over heterogeneous coverage: noise calibrated per coordinate, accountant."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edge_sdk import submodel
from edge_sdk.aggregation.robust_merge import MergeSettings
from edge_sdk.errors import InvalidInputError
from edge_sdk.privacy import DPSettings, PrivacyAccountant, epsilon_for, noise_for_epsilon, privatize_update
from edge_sdk.strategies import create_strategy
from edge_sdk.training import Update

dp_accounting = pytest.importorskip("dp_accounting")

N = 3000  # coordinates: the top third held by 5 clients, the next by 2, the last by 1


def _setup():
    model = nn.Sequential(nn.Linear(N, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(N, 0, -1, dtype=torch.float32).reshape(1, N))
    plans = {r: submodel.plan("fiarse", model, r) for r in (1.0, 2 / 3, 1 / 3)}
    assigned = [plans[1.0], plans[2 / 3], plans[1 / 3], plans[1 / 3], plans[1 / 3]]
    return model, assigned


def _zero_updates(model, assigned):
    state = model.state_dict()
    # distinct sample counts: identical updates would count once
    return [Update("fiarse", p, {n: p.gather(n, state[n]).clone() for n in p.held_shapes()}, 10 + i)
            for i, p in enumerate(assigned)]


def _groups(delta: torch.Tensor) -> list[torch.Tensor]:
    return [delta[:1000], delta[1000:2000], delta[2000:]]


def test_server_noise_is_calibrated_to_holder_count():
    """Clients send no change: the merged change is pure noise of std z*C/n_j per coordinate."""
    z, c = 1.5, 2.0
    model, assigned = _setup()
    before = model[0].weight.detach().clone().reshape(-1)
    strategy = create_strategy("fiarse", seed=3, merge=MergeSettings(dp=DPSettings(clip=c, noise=z, reproducible=True)))
    strategy.merge(model, _zero_updates(model, assigned), round=0, assigned=assigned)
    delta = model[0].weight.detach().reshape(-1).double() - before.double()
    for group, holders in zip(_groups(delta), (5, 2, 1)):
        expected = z * c / holders
        assert abs(float(group.mean())) < 4 * expected / math.sqrt(1000)
        assert float(group.std()) == pytest.approx(expected, rel=0.1)  # 1000 samples: sd of the sd ~2%


def test_client_noise_adds_up_to_at_least_the_server_level():
    """Client mode: each device adds z*C/sqrt(m_i); on every coordinate the mean's noise is
    at least z*C/n_j and equals sqrt(sum of the holders' variances)/n_j."""
    z, c = 1.0, 1.0
    model, assigned = _setup()
    before = model[0].weight.detach().clone().reshape(-1)
    strategy = create_strategy("fiarse", merge=MergeSettings(dp=DPSettings(clip=c, noise=z, mode="client")))
    plans = dict(enumerate(assigned))
    device = strategy.client_privacy(plans, model)
    # the full client holds coordinates only 1 client holds: m = 1; the 1/3 clients: m = 5
    assert [round(device[i]["dp_noise_std"], 6) for i in range(5)] == pytest.approx(
        [1.0, 1 / math.sqrt(2), 1 / math.sqrt(5), 1 / math.sqrt(5), 1 / math.sqrt(5)], rel=1e-6)
    gen = torch.Generator().manual_seed(0)
    state = model.state_dict()
    ups = []
    for i, u in enumerate(_zero_updates(model, assigned)):
        start = {n: u.plan.gather(n, state[n]) for n in u.tensors}
        ups.append(privatize_update(u, start, c, device[i]["dp_noise_std"], gen))
    strategy.merge(model, ups, round=0, assigned=assigned)
    delta = model[0].weight.detach().reshape(-1).double() - before.double()
    variances = [1.0 + 0.5 + 3 * 0.2, 1.0 + 0.5, 1.0]  # sum of the holders' noise variances
    for group, holders, var in zip(_groups(delta), (5, 2, 1), variances):
        assert float(group.std()) == pytest.approx(math.sqrt(var) / holders, rel=0.1)
        assert math.sqrt(var) / holders >= z * c / holders - 1e-12
    assert strategy.last_report["merge"]["privacy"]["noise_multiplier"] == pytest.approx(z)


def test_privatize_clips_to_c():
    u = Update("fedavg", None, {"w": torch.tensor([3.0, 4.0])}, 1)
    out = privatize_update(u, {"w": torch.zeros(2)}, 1.0, 0.0)
    assert torch.allclose(out.tensors["w"], torch.tensor([0.6, 0.8]))


def test_accountant_matches_dp_accounting():
    acc = PrivacyAccountant(1e-5)
    for r in range(10):
        spent = acc.record(r, 1.1)
    ref = dp_accounting.rdp.RdpAccountant()
    ref.compose(dp_accounting.GaussianDpEvent(1.1), 10)
    assert acc.epsilon() == pytest.approx(ref.get_epsilon(1e-5), rel=1e-12)
    assert spent["epsilon_total"] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-12)
    one = dp_accounting.rdp.RdpAccountant()
    one.compose(dp_accounting.GaussianDpEvent(1.1), 1)
    assert spent["epsilon_round"] == pytest.approx(one.get_epsilon(1e-5), rel=1e-12)
    acc.record(9, 1.1)  # the same round merged again (a retry) is not spent twice
    assert acc.epsilon() == pytest.approx(ref.get_epsilon(1e-5), rel=1e-12)


def test_noise_for_epsilon_inverts_the_accountant():
    z = noise_for_epsilon(8.0, 40, 1e-5)
    assert epsilon_for(z, 40, 1e-5) <= 8.0 < epsilon_for(z * 0.99, 40, 1e-5)
    assert noise_for_epsilon(math.inf, 40, 1e-5) == 0.0


def test_strategy_reports_privacy_spent():
    model, assigned = _setup()
    strategy = create_strategy("fiarse", merge=MergeSettings(dp=DPSettings(clip=1.0, noise=2.0)))
    for r in range(3):
        strategy.merge(model, _zero_updates(model, assigned), round=r, assigned=assigned)
    spent = strategy.privacy_spent()
    assert spent["epsilon"] == pytest.approx(epsilon_for(2.0, 3, 1e-5)) and spent["rounds"] == 3


@pytest.mark.parametrize("kw", [dict(rule="median"), dict(rule="clipped-mean"), dict(rule="none", outlier_norm=3.0)])
def test_dp_refuses_what_breaks_its_sensitivity(kw):
    with pytest.raises(InvalidInputError):
        MergeSettings(dp=DPSettings(clip=1.0, noise=1.0), **kw)


@pytest.mark.parametrize("kw", [dict(clip=0, noise=1), dict(clip=1, noise=-1), dict(clip=1, noise=1, delta=1),
                                dict(clip=1, noise=1, mode="local")])
def test_dp_settings_checked(kw):
    with pytest.raises(InvalidInputError):
        DPSettings(**kw)


def test_noised_batchnorm_variances_stay_nonnegative():
    """Noise far above the variances: the merged running_var is clamped at 0 (post-processing),
    the other BatchNorm tensors keep their noise (they may be negative)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.BatchNorm1d(64))
    plan = None
    state = model.state_dict()
    updates = [Update("fedavg", plan, {n: t.clone() for n, t in state.items()}, 10 + i) for i in range(3)]
    strategy = create_strategy("fedavg", seed=1, merge=MergeSettings(dp=DPSettings(clip=1.0, noise=50.0,
                                                                                    reproducible=True)))
    strategy.merge(model, updates, round=0)
    var, mean = model[1].running_var, model[1].running_mean
    assert float(var.min()) >= 0.0 and int((var == 0).sum()) > 10  # without the clamp about half are < 0
    assert float(mean.min()) < -1.0  # the means are noised as before
    out = model.eval()(torch.randn(8, 4))
    assert bool(torch.isfinite(out).all())
