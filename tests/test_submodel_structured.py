"""Structured extraction (fiarse-structured, heterofl, fedrolex): exactness and coverage.

The central check: a structured submodel must compute exactly what the global model computes
once every non-kept channel / neuron / head is zeroed (exact with BatchNorm / GroupNorm in
eval mode and with attention, where a zeroed head contributes nothing).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_sdk import models
from edge_sdk.errors import InvalidInputError
from edge_sdk.submodel import plan
from submodel_helpers import check_equivalent

STRUCTURED = ("fiarse-structured", "heterofl", "fedrolex")

REFERENCE = [
    ("resnet8", {"width": 0.5}),
    ("resnet8", {"width": 0.5, "norm": "group"}),
    ("cnn1d", {}),
    ("cnn1d", {"norm": "none"}),
    ("vit_tiny", {"width": 0.5, "depth": 2, "norm": "batchnorm"}),
]


@pytest.mark.parametrize("name,kw", REFERENCE, ids=[f"{n}-{k}" for n, k in REFERENCE])
@pytest.mark.parametrize("strategy", STRUCTURED)
def test_reference_models_equal_zeroed_global(name, kw, strategy):
    m = models.create(name, **kw)
    x = torch.randn(3, *models.spec(name).input_shape)
    p, sub = check_equivalent(m, x, 1 / 16, strategy)
    assert abs(p.kept_fraction - 1 / 16) < 0.02


@pytest.mark.parametrize("name", ["resnet8", "cnn1d", "vit_tiny", "mixer_tiny"])
def test_reference_models_shrink_to_ratio(name):
    m = models.create(name, depth=2) if name in ("vit_tiny", "mixer_tiny") else models.create(name)
    x = torch.randn(2, *models.spec(name).input_shape)
    total = sum(t.numel() for t in m.parameters())
    for ratio in (0.25, 1 / 16, 1 / 64):
        p = plan("fiarse-structured", m, ratio, example_input=x)
        sub = p.extract(m)
        held = sum(t.numel() for t in sub.parameters())
        assert held / total == pytest.approx(p.kept_fraction)
        assert abs(p.kept_fraction - ratio) <= 0.25 * ratio + 0.002, (ratio, p.kept_fraction)
        assert sub(x).shape == m(x).shape
    full = plan("heterofl", m, 1.0, example_input=x)
    assert full.kept_fraction == 1.0
    m.eval()
    assert torch.allclose(full.extract(m).eval()(x), m(x), atol=1e-6)


def test_resnet18_channels_really_shrink():
    m = models.create("resnet18")
    x = torch.randn(2, 3, 32, 32)
    p = plan("fiarse-structured", m, 1 / 16, example_input=x)
    sub = p.extract(m)
    assert abs(p.kept_fraction - 1 / 16) < 0.005
    assert sum(t.numel() for t in sub.parameters()) / sum(t.numel() for t in m.parameters()) == \
        pytest.approx(p.kept_fraction)
    assert sub(x).shape == (2, 10)
    convs = {n: mod for n, mod in sub.named_modules() if isinstance(mod, nn.Conv2d)}
    full = {n: mod for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)}
    assert set(convs) == set(full)
    for n, mod in convs.items():
        if n != "conv1":
            assert mod.in_channels < full[n].in_channels
        assert mod.out_channels <= math.ceil(full[n].out_channels * 0.3)
        assert mod.weight.shape[0] == mod.out_channels
    # residual-tied channels: every block output in a stage keeps the same indices
    s = p.index_map
    assert torch.equal(s["layers.0.0.bn2.weight"][0], s["layers.0.1.bn2.weight"][0])
    assert torch.equal(s["layers.0.0.bn2.weight"][0], s["bn1.weight"][0])


def test_vit_heads_kept_whole():
    m = models.create("vit_tiny", heads=4, width=1 / 3, depth=2)  # head_dim 16
    x = torch.randn(2, 3, 32, 32)
    for strategy in STRUCTURED:
        p = plan(strategy, m, 1 / 4, example_input=x)
        sub = p.extract(m)
        qkv_rows = p.index_map["blocks.0.attn.qkv.weight"][0]
        proj_cols = p.index_map["blocks.0.attn.proj.weight"][1]
        assert qkv_rows is not None and proj_cols is not None
        heads = sorted({int(i) // 16 for i in proj_cols})
        assert len(proj_cols) == 16 * len(heads)  # whole heads only
        expect = torch.tensor([t * 64 + h * 16 + d for t in range(3) for h in heads for d in range(16)])
        assert torch.equal(qkv_rows, expect)
        assert sub(x).shape == (2, 10)


def test_heterofl_and_fedrolex_choices():
    m = models.create("resnet8", width=0.5)
    x = torch.randn(2, 3, 32, 32)
    h = plan("heterofl", m, 1 / 4, example_input=x)
    assert all(k.tolist() == list(range(len(k))) for k in h.keep)
    small = plan("heterofl", m, 1 / 16, example_input=x)
    assert all(set(a.tolist()) <= set(b.tolist()) for a, b in zip(small.keep, h.keep))
    r3 = plan("fedrolex", m, 1 / 4, round=3, example_input=x)
    r4 = plan("fedrolex", m, 1 / 4, round=4, example_input=x)
    for k3, k4, size in zip(r3.keep, r4.keep, r3.leaf_sizes):
        assert set(((k3 + 1) % size).tolist()) == set(k4.tolist())
        assert 3 % size in k3.tolist()
    wrap = plan("fedrolex", m, 1 / 4, round=15, example_input=x)
    size = wrap.leaf_sizes[0]
    assert wrap.keep[0].tolist() == sorted(((15 + i) % size) for i in range(len(wrap.keep[0])))


def test_fiarse_structured_keeps_important_channels():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        m[0].weight.fill_(0.01)
        m[0].weight[5].fill_(3.0)
        m[0].weight[2].fill_(2.0)
    p = plan("fiarse-structured", m, 0.3, example_input=torch.randn(2, 4))
    kept = p.keep[0].tolist()
    assert 5 in kept and 2 in kept


# ---- user models (fx-traceable) --------------------------------------------------------------

class DepthwiseResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.dw2 = nn.Conv2d(16, 32, 3, padding=1, groups=16)  # depth multiplier 2
        self.head = nn.Linear(32 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        y = F.relu(self.bn1(self.dw(x)))
        x = x + self.pw(y)  # residual tie across a depthwise conv
        x = F.max_pool2d(F.relu(self.dw2(x)), 2)
        return self.head(torch.flatten(x, 1))  # flatten with spatial positions left


class ManualAttention(nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q = self.q(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
        k = self.k(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
        v = self.v(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        out = att.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 32)
        self.attn = ManualAttention()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32)
        self.qkv_attn_chunk = nn.Linear(32, 96)
        self.out = nn.Linear(32, 3)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attn(x)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        q, k, v = self.qkv_attn_chunk(x).chunk(3, dim=-1)
        split = lambda t: t.unflatten(-1, (2, 16)).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(q), split(k), split(v))
        x = x + a.transpose(1, 2).flatten(2)
        return self.out(x.mean(dim=1))


class WithUnknownOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 16)
        self.b = nn.Linear(16, 16)
        self.c = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = torch.cumsum(self.b(h), dim=1)  # not known to the analysis: keeps b's outputs whole
        return self.c(h)


@pytest.mark.parametrize("strategy", STRUCTURED)
def test_user_model_depthwise_residual(strategy):
    m = DepthwiseResNet()
    x = torch.randn(2, 3, 8, 8)
    p, sub = check_equivalent(m, x, 0.25, strategy)
    assert sub.dw.groups == sub.dw.in_channels == sub.dw.out_channels < 16
    assert sub.dw2.out_channels == 2 * sub.dw2.groups


@pytest.mark.parametrize("strategy", STRUCTURED)
def test_user_transformer_manual_and_chunked_attention(strategy):
    m = TinyTransformer()
    x = torch.randn(2, 7, 6)
    p, sub = check_equivalent(m, x, 0.3, strategy)
    q_rows = p.index_map["attn.q.weight"][0]
    assert q_rows is not None and len(q_rows) % 8 == 0  # heads of 8 kept whole
    assert len({int(i) // 8 for i in q_rows}) * 8 == len(q_rows)


def test_unknown_op_falls_back_to_whole_channels():
    m = WithUnknownOp()
    x = torch.randn(4, 5)
    p, sub = check_equivalent(m, x, 0.5, "heterofl")
    assert p.index_map["b.weight"][0] is None  # cumsum's channels kept whole
    assert p.index_map["a.weight"][0] is not None


def test_untraceable_model_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return x

    with pytest.raises(InvalidInputError, match="torch.fx"):
        plan("heterofl", Branchy(), 0.5, example_input=torch.randn(2, 4))


class MixedOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 24)
        self.a = nn.Linear(24, 32)
        self.b = nn.Linear(24, 16)
        self.c = nn.Linear(48, 32)  # consumes cat([a, b]): channels of a and b kept whole
        self.d = nn.Linear(16, 4)

    def forward(self, tok):
        e = self.emb(tok)  # (B, T, 24)
        h = torch.cat([torch.relu(self.a(e)), torch.relu(self.b(e))], dim=-1)
        left, right = self.c(h).split(16, dim=-1)  # equal split: halves pruned alike
        z = (left * torch.sigmoid(right)).mean(dim=1)
        return self.d(z.view(z.shape[0], -1))


class FunctionalNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.g = nn.Parameter(torch.ones(32))
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x):
        h = F.layer_norm(self.fc1(x), (32,), self.g)
        return self.fc2(F.gelu(h))


@pytest.mark.parametrize("strategy", STRUCTURED)
def test_user_model_cat_split_embedding(strategy):
    m = MixedOps()
    tok = torch.randint(0, 20, (3, 5))
    p, sub = check_equivalent(m, tok, 0.5, strategy)
    assert p.index_map["a.weight"][0] is None and p.index_map["b.weight"][0] is None
    rows = p.index_map["c.weight"][0]
    assert rows is not None and len(rows) % 2 == 0
    half = len(rows) // 2
    assert torch.equal(rows[half:] - 16, rows[:half])  # both halves of the split keep the same units
    assert p.index_map["emb.weight"][1] is not None  # the embedding width is pruned


def test_functional_layer_norm_is_rewritten():
    m = FunctionalNorm()
    x = torch.randn(4, 8)
    p = plan("heterofl", m, 0.5, example_input=x)
    sub = p.extract(m)
    assert sub.g.shape[0] < 32 and sub(x).shape == (4, 3)
