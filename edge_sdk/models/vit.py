"""A tiny Vision Transformer built from Linear layers and ``F.scaled_dot_product_attention``.

No ``nn.MultiheadAttention``/``nn.TransformerEncoderLayer`` (their fused eval paths hide FLOPs
from FlopCounterMode). Blocks live in ``model.blocks`` (an ``nn.Sequential`` of
shape-preserving :class:`ViTBlock` s), so a model can be built from a subset of them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edge_sdk.models._base import (
    ModelConfig,
    Options,
    check_choice,
    check_patches,
    check_positive_float,
    check_positive_int,
    image_input_shape,
)
from edge_sdk.models._registry import register_model
from edge_sdk.models.analytic import Term, attention_term, conv_term, linear_term

__all__ = [
    "PatchEmbed",
    "TokenBatchNorm",
    "Attention",
    "Mlp",
    "ViTBlock",
    "VisionTransformer",
    "vit_dims",
]

VIT_BASE_EMBED = 192  # default 3 heads x head_dim 64


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided Conv2d; returns tokens (B, N, C)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TokenBatchNorm(nn.Module):
    """BatchNorm1d over the embedding dim of a (B, N, C) tensor (integer-export friendly)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


def make_norm(norm: str, dim: int) -> nn.Module:
    if norm == "layernorm":
        return nn.LayerNorm(dim)
    return TokenBatchNorm(dim)


def make_act(act: str) -> nn.Module:
    return nn.GELU() if act == "gelu" else nn.ReLU()


class Attention(nn.Module):
    """Multi-head self-attention: one qkv Linear, SDPA, output projection."""

    def __init__(self, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        dim = heads * head_dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear -> activation -> Linear."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu", out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, dim if out_dim is None else out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-norm encoder block: x + attn(norm1(x)); x + mlp(norm2(x))."""

    def __init__(
        self, heads: int, head_dim: int, mlp_hidden: int, norm: str = "layernorm", act: str = "gelu"
    ) -> None:
        super().__init__()
        dim = heads * head_dim
        self.norm1 = make_norm(norm, dim)
        self.attn = Attention(heads, head_dim)
        self.norm2 = make_norm(norm, dim)
        self.mlp = Mlp(dim, mlp_hidden, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Patch embedding + cls token + learned positions -> blocks -> norm -> head on cls."""

    def __init__(
        self,
        heads: int = 3,
        head_dim: int = 64,
        depth: int = 6,
        mlp_hidden: int = 768,
        num_classes: int = 10,
        img_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        norm: str = "layernorm",
        act: str = "gelu",
    ) -> None:
        super().__init__()
        dim = heads * head_dim
        num_patches = (img_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(
            *[ViTBlock(heads, head_dim, mlp_hidden, norm, act) for _ in range(depth)]
        )
        self.norm = make_norm(norm, dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit_dims(width: float, opts: Options) -> tuple[int, int, int]:
    """(heads, head_dim, mlp_hidden): head count fixed, head_dim = round(192*width/heads) >= 1."""
    heads = opts["heads"]
    head_dim = max(1, int(round(VIT_BASE_EMBED * width / heads)))
    mlp_hidden = max(1, int(round(heads * head_dim * opts["mlp_ratio"])))
    return heads, head_dim, mlp_hidden


def _check(name: str, o: Options) -> Options:
    img, patch, cin = check_patches(name, o)
    return {
        "img_size": img,
        "patch_size": patch,
        "in_channels": cin,
        "heads": check_positive_int(name, "heads", o["heads"]),
        "mlp_ratio": check_positive_float(name, "mlp_ratio", o["mlp_ratio"]),
        "norm": check_choice(name, "norm", o["norm"], ("layernorm", "batchnorm")),
        "act": check_choice(name, "act", o["act"], ("gelu", "relu")),
    }


def patch_model_terms(
    cfg: ModelConfig, b: int, dim: int, block_terms: Callable[[str, int], list[Term]]
) -> list[Term]:
    """FLOP terms of patch embedding -> ``cfg.depth`` blocks -> head on ``dim`` features, the
    frame the ViT and the Mixer share; ``block_terms(prefix, patches)`` gives one block's."""
    c_in, img, _ = cfg.input_shape
    p = cfg.options["patch_size"]
    n = (img // p) ** 2
    terms = [conv_term("patch_embed.proj", b, n, dim, c_in, p * p, first=True)]
    for i in range(cfg.depth):
        terms += block_terms(f"blocks.{i}", n)
    terms.append(linear_term("head", b, dim, cfg.num_classes))
    return terms


def _flops(cfg: ModelConfig, b: int) -> list[Term]:
    heads, head_dim, hidden = vit_dims(cfg.width, cfg.options)
    dim = heads * head_dim

    def block(prefix: str, n: int) -> list[Term]:
        t = n + 1  # + cls token
        return [
            linear_term(f"{prefix}.attn.qkv", b * t, dim, 3 * dim),
            attention_term(f"{prefix}.attn.sdpa", b, heads, t, head_dim),
            linear_term(f"{prefix}.attn.proj", b * t, dim, dim),
            linear_term(f"{prefix}.mlp.fc1", b * t, dim, hidden),
            linear_term(f"{prefix}.mlp.fc2", b * t, hidden, dim),
        ]

    return patch_model_terms(cfg, b, dim, block)


@register_model(
    "vit_tiny",
    description="tiny ViT: patch 4 (64 tokens + cls), embed 192, 3 heads, MLP ratio 4",
    default_depth=6,
    defaults={"img_size": 32, "patch_size": 4, "in_channels": 3, "heads": 3, "mlp_ratio": 4.0,
              "norm": "layernorm", "act": "gelu"},
    input_shape=image_input_shape,
    check=_check,
    flops=_flops,
)  # fmt: skip
def vit_tiny(cfg: ModelConfig) -> VisionTransformer:
    o = cfg.options
    heads, head_dim, mlp_hidden = vit_dims(cfg.width, o)
    return VisionTransformer(
        heads, head_dim, cfg.depth, mlp_hidden, cfg.num_classes,
        img_size=o["img_size"], patch_size=o["patch_size"], in_channels=o["in_channels"],
        norm=o["norm"], act=o["act"],
    )  # fmt: skip
