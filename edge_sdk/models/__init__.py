"""Reference models: plain ``nn.Module`` s with width-multiplier and depth arguments.

``names()``, ``create(name, width=..., depth=..., num_classes=..., **options)``, ``spec(name)``,
``width_for_ratio(ratio)``, ``create_at_ratio(name, ratio)``. Every created model carries
``model.config`` (a :class:`ModelConfig`) so it can be rebuilt at another width.

Each model registers itself with ``@register_model`` beside its builder; importing its
module below is its registration. ``scaled`` and the ``check_*`` helpers are exported for
models written outside the package, so their messages read like the built-in ones.
"""

from __future__ import annotations

from edge_sdk.models._base import (
    ModelConfig,
    ModelSpec,
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
    scaled,
)
from edge_sdk.models._registry import (
    create,
    create_at_ratio,
    names,
    register_model,
    resolve_config,
    spec,
    unregister_model,
    width_for_ratio,
)

# the model modules: importing one registers its models
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
    "register_model",
    "unregister_model",
    "scaled",
    "check_positive_int",
    "check_positive_float",
    "check_choice",
    "check_bool",
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
