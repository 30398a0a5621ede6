"""Reference models: plain ``nn.Module`` s with width-multiplier and depth arguments.

``names()``, ``create(name, width=..., depth=..., num_classes=..., **options)``, ``spec(name)``,
``width_for_ratio(ratio)``, ``create_at_ratio(name, ratio)``. Every created model carries
``model.config`` (a :class:`ModelConfig`) so it can be rebuilt at another width.
"""

from __future__ import annotations

from edge_sdk.models._base import ModelConfig, ModelSpec
from edge_sdk.models._registry import (
    create,
    create_at_ratio,
    names,
    resolve_config,
    spec,
    width_for_ratio,
)
from edge_sdk.models.cnn1d import CNN1D
from edge_sdk.models.mixer import MixerBlock, MLPMixer
from edge_sdk.models.resnet import BasicBlock, ResNet
from edge_sdk.models.vit import Attention, Mlp, PatchEmbed, TokenBatchNorm, VisionTransformer, ViTBlock

__all__ = [
    "ModelConfig",
    "ModelSpec",
    "names",
    "create",
    "create_at_ratio",
    "resolve_config",
    "spec",
    "width_for_ratio",
    "BasicBlock",
    "ResNet",
    "CNN1D",
    "Attention",
    "Mlp",
    "PatchEmbed",
    "TokenBatchNorm",
    "ViTBlock",
    "VisionTransformer",
    "MixerBlock",
    "MLPMixer",
]
