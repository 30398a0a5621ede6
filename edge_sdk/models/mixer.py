"""A small MLP-Mixer (token-mixing and channel-mixing MLPs, LayerNorm, GELU)."""

from __future__ import annotations

import torch
from torch import nn

from edge_sdk.models.vit import Mlp, PatchEmbed

__all__ = ["MixerBlock", "MLPMixer"]


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
