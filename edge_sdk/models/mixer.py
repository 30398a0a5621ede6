"""A small MLP-Mixer (token-mixing and channel-mixing MLPs, LayerNorm, GELU)."""

from __future__ import annotations

import torch
from torch import nn

from edge_sdk.models._base import ModelConfig, Options, check_patches, image_input_shape, scaled
from edge_sdk.models._registry import register_model
from edge_sdk.models.analytic import Term, linear_term
from edge_sdk.models.vit import Mlp, PatchEmbed, patch_model_terms

__all__ = ["MixerBlock", "MLPMixer", "mixer_dims"]

MIXER_BASE = (128, 64, 512)  # hidden, token MLP, channel MLP at width 1


class MixerBlock(nn.Module):
    """x + token_mlp over the token axis; x + channel_mlp over the channel axis."""

    def __init__(self, num_tokens: int, dim: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = Mlp(num_tokens, token_hidden)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = Mlp(dim, channel_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MLPMixer(nn.Module):
    """Patch embedding -> blocks -> LayerNorm -> mean over tokens -> head."""

    def __init__(
        self,
        dim: int = 128,
        token_hidden: int = 64,
        channel_hidden: int = 512,
        depth: int = 4,
        num_classes: int = 10,
        img_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        num_tokens = (img_size // patch_size) ** 2
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.blocks = nn.Sequential(
            *[MixerBlock(num_tokens, dim, token_hidden, channel_hidden) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.blocks(self.patch_embed(x)))
        return self.head(x.mean(dim=1))


def mixer_dims(width: float) -> tuple[int, int, int]:
    """(hidden, token_hidden, channel_hidden)."""
    return tuple(scaled(c, width) for c in MIXER_BASE)  # type: ignore[return-value]


def _check(name: str, o: Options) -> Options:
    img, patch, cin = check_patches(name, o)
    return {"img_size": img, "patch_size": patch, "in_channels": cin}


def _flops(cfg: ModelConfig, b: int) -> list[Term]:
    dim, tok, ch = mixer_dims(cfg.width)

    def block(prefix: str, n: int) -> list[Term]:
        return [
            linear_term(f"{prefix}.token_mlp.fc1", b * dim, n, tok),
            linear_term(f"{prefix}.token_mlp.fc2", b * dim, tok, n),
            linear_term(f"{prefix}.channel_mlp.fc1", b * n, dim, ch),
            linear_term(f"{prefix}.channel_mlp.fc2", b * n, ch, dim),
        ]

    return patch_model_terms(cfg, b, dim, block)


@register_model(
    "mixer_tiny",
    description="small MLP-Mixer: patch 4, hidden 128, token MLP 64, channel MLP 512",
    default_depth=4,
    defaults={"img_size": 32, "patch_size": 4, "in_channels": 3},
    input_shape=image_input_shape,
    check=_check,
    flops=_flops,
)
def mixer_tiny(cfg: ModelConfig) -> MLPMixer:
    dim, token_hidden, channel_hidden = mixer_dims(cfg.width)
    return MLPMixer(dim, token_hidden, channel_hidden, cfg.depth, cfg.num_classes, **cfg.options)
