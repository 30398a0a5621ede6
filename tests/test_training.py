"""train_local / evaluate / Update."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edge_sdk.errors import InvalidInputError, PlanMismatchError, SchemaError
from edge_sdk.submodel import plan
from edge_sdk.training import Update, evaluate, train_local


def mlp(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 3))


def dataset(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return TensorDataset(x, y)


def loader(n=48, bs=16):
    return DataLoader(dataset(n), batch_size=bs, shuffle=False)


X = torch.randn(4, 6)


@pytest.mark.parametrize("strategy", ["fiarse", "fiarse-structured", "heterofl", "fedrolex"])
def test_update_holds_only_what_the_plan_holds(strategy):
    m = mlp()
    full_bytes = sum(p.numel() * 4 for p in m.parameters())
    for ratio in (1.0, 0.25):
        p = plan(strategy, m, ratio, example_input=X)
        u = train_local(p.extract(m), loader(), p, steps=3, lr=0.01)
        assert u.strategy == strategy and u.plan is p
        assert {n: tuple(t.shape) for n, t in u.tensors.items()} == p.held_shapes()
        assert u.num_samples == 48 and u.metrics["steps"] == 3
        payload_params = sum(t.numel() * 4 for n, t in u.tensors.items() if "running" not in n and "num_batches" not in n)
        assert payload_params == pytest.approx(p.kept_fraction * full_bytes, rel=1e-6)
        assert u.index_bytes > 0 and u.num_bytes == sum(t.numel() * t.element_size() for t in u.tensors.values())


def test_fiarse_training_moves_only_held_elements():
    m = mlp()
    p = plan("fiarse", m, 0.3)
    sub = p.extract(m)
    before = {n: t.detach().clone() for n, t in sub.model.named_parameters()}
    train_local(sub, loader(), p, steps=4, lr=0.1)
    for name, mask in p.masks.items():
        after = dict(sub.model.named_parameters())[name].detach()
        assert torch.equal(after[~mask], before[name][~mask])  # unheld: no gradient, no momentum
        if name != "0.bias" and mask.any():  # a bias right before BatchNorm gets no gradient
            assert not torch.equal(after[mask], before[name][mask]), name
    # the global model is untouched by local training
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), mlp().state_dict().values()))


def test_fiarse_surrogate_gradient_scales_held_gradients():
    m = nn.Sequential(nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1.0, 0.5, 0.1]]))
    p = plan("fiarse", m, 2 / 3)  # keeps 1.0 and 0.5; threshold tau = 0.5
    x = torch.ones(1, 3)
    grads = {}
    for mode in ("hard", "surrogate"):
        sub = p.extract(m)
        sub.gradient = mode
        sub(x).sum().backward()
        grads[mode] = sub.model[0].weight.grad.clone()
    tau = p.thresholds["0.weight"]
    assert tau == pytest.approx(0.5)
    assert grads["hard"].tolist() == [[1.0, 1.0, 0.0]]
    factor = lambda a: 1 + 2 * tau * a / (a + tau) ** 2  # noqa: E731
    assert grads["surrogate"][0].tolist() == pytest.approx([factor(1.0), factor(0.5), 0.0])
    assert factor(0.5) == pytest.approx(1.5)


def test_train_local_modes_and_errors():
    m = mlp()
    p = plan("heterofl", m, 0.5, example_input=X)
    sub = p.extract(m)
    u = train_local(sub, loader(), p, epochs=2)
    assert u.metrics["steps"] == 6
    batches = [(x, y) for x, y in loader()]  # a plain list of batches: samples of one pass
    u = train_local(sub, batches, p, steps=5)
    assert u.num_samples == 48 and u.metrics["steps"] == 5
    u = train_local(sub, batches[:1], p, steps=1, num_samples=7)
    assert u.num_samples == 7
    with pytest.raises(InvalidInputError, match="not both"):
        train_local(sub, batches, p, steps=1, epochs=1)
    with pytest.raises(InvalidInputError, match="steps"):
        train_local(sub, batches, p, steps=0)
    with pytest.raises(InvalidInputError, match="fiarse_gradient"):
        train_local(sub, batches, p, fiarse_gradient="soft")
    with pytest.raises(InvalidInputError, match="no batches"):
        train_local(sub, [], p, steps=1)
    with pytest.raises(PlanMismatchError):  # the full model is not this plan's submodel
        train_local(mlp(), batches, p, steps=1)
    fp = plan("fiarse", m, 0.5)
    with pytest.raises(PlanMismatchError):
        train_local(fp.extract(m), batches, p, steps=1)


def test_full_model_training_learns_and_evaluate():
    m = mlp()
    before = evaluate(m, loader())
    u = train_local(m, loader(), None, epochs=15, lr=0.05)
    after = evaluate(m, loader())
    assert u.strategy == "fedavg" and set(u.tensors) == set(m.state_dict())
    assert after["samples"] == 48 and 0 <= after["accuracy"] <= 1
    assert after["loss"] < before["loss"] and after["accuracy"] > before["accuracy"]
    assert m.training  # evaluate restores the mode


@pytest.mark.parametrize("strategy", ["fiarse", "heterofl"])
def test_update_bytes_round_trip(strategy):
    m = mlp()
    p = plan(strategy, m, 0.25, example_input=X)
    u = train_local(p.extract(m), loader(), p, steps=1)
    data = u.to_bytes()
    v = Update.from_bytes(data)
    assert (v.strategy, v.num_samples, v.metrics) == (u.strategy, u.num_samples, u.metrics)
    assert v.plan.to_bytes() == p.to_bytes()
    assert set(v.tensors) == set(u.tensors)
    assert all(torch.equal(v.tensors[n], u.tensors[n]) for n in u.tensors)
    assert 0 < u.index_bytes < len(data)
    with pytest.raises(SchemaError):
        Update.from_bytes(p.to_bytes())  # a plan is not an update


def test_update_values_are_compressed_and_version_1_still_reads():
    from edge_sdk import models
    from edge_sdk.errors import SchemaVersionError
    from edge_sdk.submodel import _serial
    from edge_sdk.training import UPDATE_MAGIC

    torch.manual_seed(0)
    state = {n: t.detach().clone() for n, t in models.create("cnn1d", width=3).state_dict().items()}
    u = Update("fedavg", None, state, 10, {"train_loss": 0.5})
    data = u.to_bytes()
    assert len(data) < 0.95 * u.num_bytes  # the exponent byte planes compress
    v = Update.from_bytes(data)
    assert set(v.tensors) == set(state)
    assert all(v.tensors[n].dtype == t.dtype and torch.equal(v.tensors[n], t) for n, t in state.items())
    header = {"strategy": "fedavg", "num_samples": 10, "metrics": {"train_loss": 0.5}}
    old = _serial.pack(UPDATE_MAGIC, 1, header, {f"t:{n}": t for n, t in state.items()})
    w = Update.from_bytes(old)
    assert w.num_samples == 10 and all(torch.equal(w.tensors[n], t) for n, t in state.items())
    future = _serial.pack(UPDATE_MAGIC, 3, header, {})
    with pytest.raises(SchemaVersionError, match="reads update versions 1, 2"):
        Update.from_bytes(future)
