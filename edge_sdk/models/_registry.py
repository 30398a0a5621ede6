"""Name -> builder registry of the reference models, with argument checking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from edge_sdk.errors import InvalidInputError, UnknownNameError
from edge_sdk.models._base import (
    ModelConfig,
    ModelSpec,
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
    scaled,
)
from edge_sdk.models.cnn1d import CNN1D
from edge_sdk.models.mixer import MLPMixer
from edge_sdk.models.resnet import NORMS, ResNet
from edge_sdk.models.vit import VisionTransformer

Options = dict[str, Any]


@dataclass(frozen=True)
class _Entry:
    spec: ModelSpec
    defaults: Options
    check: Callable[[str, Options], Options]  # validates/normalises options
    input_shape: Callable[[Options], tuple[int, ...]]
    build: Callable[[float, int, int, Options], nn.Module]


# ---- dimensions (shared with edge_sdk.models.analytic) ------------------------------------

RESNET18_BASE = (64, 128, 256, 512)
RESNET8_BASE = (16, 32, 64)
CNN1D_BASE = 32
VIT_BASE_EMBED = 192  # default 3 heads x head_dim 64
MIXER_BASE = (128, 64, 512)  # hidden, token MLP, channel MLP


def resnet_channels(name: str, width: float) -> tuple[int, ...]:
    base = RESNET18_BASE if name == "resnet18" else RESNET8_BASE
    return tuple(scaled(c, width) for c in base)


def vit_dims(width: float, opts: Options) -> tuple[int, int, int]:
    """(heads, head_dim, mlp_hidden): head count fixed, head_dim = round(192*width/heads) >= 1."""
    heads = opts["heads"]
    head_dim = max(1, int(round(VIT_BASE_EMBED * width / heads)))
    mlp_hidden = max(1, int(round(heads * head_dim * opts["mlp_ratio"])))
    return heads, head_dim, mlp_hidden


def mixer_dims(width: float) -> tuple[int, int, int]:
    """(hidden, token_hidden, channel_hidden)."""
    return tuple(scaled(c, width) for c in MIXER_BASE)  # type: ignore[return-value]


# ---- per-model checks and builders --------------------------------------------------------


def _check_resnet(name: str, o: Options) -> Options:
    return {
        "in_channels": check_positive_int(name, "in_channels", o["in_channels"]),
        "img_size": check_positive_int(name, "img_size", o["img_size"]),
        "norm": check_choice(name, "norm", o["norm"], NORMS),
        "track_running_stats": check_bool(name, "track_running_stats", o["track_running_stats"]),
    }


def _build_resnet(name: str) -> Callable[[float, int, int, Options], nn.Module]:
    def build(width: float, depth: int, num_classes: int, o: Options) -> nn.Module:
        return ResNet(
            resnet_channels(name, width),
            depth,
            num_classes,
            in_channels=o["in_channels"],
            norm=o["norm"],
            track_running_stats=o["track_running_stats"],
        )

    return build


def _check_cnn1d(name: str, o: Options) -> Options:
    k = check_positive_int(name, "kernel_size", o["kernel_size"])
    if k % 2 == 0:
        raise InvalidInputError(f"{name}: kernel_size={k} is not accepted; expected an odd integer")
    return {
        "in_channels": check_positive_int(name, "in_channels", o["in_channels"]),
        "length": check_positive_int(name, "length", o["length"]),
        "kernel_size": k,
        "norm": check_choice(name, "norm", o["norm"], ("batch", "none")),
        "track_running_stats": check_bool(name, "track_running_stats", o["track_running_stats"]),
    }


def _build_cnn1d(width: float, depth: int, num_classes: int, o: Options) -> nn.Module:
    return CNN1D(scaled(CNN1D_BASE, width), depth, num_classes, **o)


def _check_patches(name: str, o: Options) -> tuple[int, int, int]:
    img = check_positive_int(name, "img_size", o["img_size"])
    patch = check_positive_int(name, "patch_size", o["patch_size"])
    if img % patch:
        raise InvalidInputError(
            f"{name}: patch_size={patch} does not divide img_size={img}; expected a divisor"
        )
    return img, patch, check_positive_int(name, "in_channels", o["in_channels"])


def _check_vit(name: str, o: Options) -> Options:
    img, patch, cin = _check_patches(name, o)
    return {
        "img_size": img,
        "patch_size": patch,
        "in_channels": cin,
        "heads": check_positive_int(name, "heads", o["heads"]),
        "mlp_ratio": check_positive_float(name, "mlp_ratio", o["mlp_ratio"]),
        "norm": check_choice(name, "norm", o["norm"], ("layernorm", "batchnorm")),
        "act": check_choice(name, "act", o["act"], ("gelu", "relu")),
    }


def _build_vit(width: float, depth: int, num_classes: int, o: Options) -> nn.Module:
    heads, head_dim, mlp_hidden = vit_dims(width, o)
    return VisionTransformer(
        heads, head_dim, depth, mlp_hidden, num_classes,
        img_size=o["img_size"], patch_size=o["patch_size"], in_channels=o["in_channels"],
        norm=o["norm"], act=o["act"],
    )  # fmt: skip


def _check_mixer(name: str, o: Options) -> Options:
    img, patch, cin = _check_patches(name, o)
    return {"img_size": img, "patch_size": patch, "in_channels": cin}


def _build_mixer(width: float, depth: int, num_classes: int, o: Options) -> nn.Module:
    dim, token_hidden, channel_hidden = mixer_dims(width)
    return MLPMixer(dim, token_hidden, channel_hidden, depth, num_classes, **o)


def _image_shape(o: Options) -> tuple[int, ...]:
    return (o["in_channels"], o["img_size"], o["img_size"])


_RESNET_DEFAULTS: Options = {
    "in_channels": 3, "img_size": 32, "norm": "batch", "track_running_stats": True,
}  # fmt: skip

_REGISTRY: dict[str, _Entry] = {
    "resnet18": _Entry(
        ModelSpec("resnet18", (3, 32, 32), 10,
                  "CIFAR-style ResNet-18: 3x3 stem, BasicBlocks [2,2,2,2] at 64/128/256/512", 2),
        dict(_RESNET_DEFAULTS), _check_resnet, _image_shape, _build_resnet("resnet18"),
    ),
    "resnet8": _Entry(
        ModelSpec("resnet8", (3, 32, 32), 10,
                  "CIFAR ResNet-8: 3x3 stem, 3 stages of 1 BasicBlock at 16/32/64", 1),
        dict(_RESNET_DEFAULTS), _check_resnet, _image_shape, _build_resnet("resnet8"),
    ),
    "cnn1d": _Entry(
        ModelSpec("cnn1d", (1, 40), 10,
                  "1-d CNN for MNIST-1D: Conv1d(k5, stride 2)+BN+ReLU layers at 32 ch, Linear", 3),
        {"in_channels": 1, "length": 40, "kernel_size": 5, "norm": "batch",
         "track_running_stats": True},
        _check_cnn1d, lambda o: (o["in_channels"], o["length"]), _build_cnn1d,
    ),
    "vit_tiny": _Entry(
        ModelSpec("vit_tiny", (3, 32, 32), 10,
                  "tiny ViT: patch 4 (64 tokens + cls), embed 192, 3 heads, MLP ratio 4", 6),
        {"img_size": 32, "patch_size": 4, "in_channels": 3, "heads": 3, "mlp_ratio": 4.0,
         "norm": "layernorm", "act": "gelu"},
        _check_vit, _image_shape, _build_vit,
    ),
    "mixer_tiny": _Entry(
        ModelSpec("mixer_tiny", (3, 32, 32), 10,
                  "small MLP-Mixer: patch 4, hidden 128, token MLP 64, channel MLP 512", 4),
        {"img_size": 32, "patch_size": 4, "in_channels": 3},
        _check_mixer, _image_shape, _build_mixer,
    ),
}  # fmt: skip


# ---- public functions ---------------------------------------------------------------------


def names() -> list[str]:
    """Sorted names of the reference models."""
    return sorted(_REGISTRY)


def _entry(name: Any) -> _Entry:
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise UnknownNameError(f"unknown model {name!r}; valid names: {', '.join(names())}")
    return entry


def spec(name: str) -> ModelSpec:
    """Static description (default input shape, classes, depth) of model ``name``."""
    return _entry(name).spec


def resolve_config(
    name: str,
    *,
    width: float = 1.0,
    depth: int | None = None,
    num_classes: int = 10,
    **kwargs: Any,
) -> ModelConfig:
    """Validate arguments and return the :class:`ModelConfig` ``create`` would build."""
    entry = _entry(name)
    width = check_positive_float(name, "width", width)
    depth = entry.spec.default_depth if depth is None else depth
    depth = check_positive_int(name, "depth", depth)
    num_classes = check_positive_int(name, "num_classes", num_classes)
    unknown = sorted(set(kwargs) - set(entry.defaults))
    if unknown:
        raise InvalidInputError(
            f"{name}: unknown argument {unknown[0]!r}; accepted: width, depth, num_classes, "
            + ", ".join(sorted(entry.defaults))
        )
    options = entry.check(name, {**entry.defaults, **kwargs})
    return ModelConfig(name, width, depth, num_classes, entry.input_shape(options), options)


def create(
    name: str,
    *,
    width: float = 1.0,
    depth: int | None = None,
    num_classes: int = 10,
    **kwargs: Any,
) -> nn.Module:
    """Build reference model ``name``; the result carries its :class:`ModelConfig` as ``.config``."""
    cfg = resolve_config(name, width=width, depth=depth, num_classes=num_classes, **kwargs)
    model = _REGISTRY[name].build(cfg.width, cfg.depth, cfg.num_classes, dict(cfg.options))
    model.config = cfg
    return model


def width_for_ratio(ratio: float) -> float:
    """Width multiplier for a size ``ratio`` (fraction of parameters): ``sqrt(ratio)``."""
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, (int, float))
        or not (0 < ratio <= 1)  # also rejects NaN
    ):
        raise InvalidInputError(f"ratio={ratio!r} is not accepted; expected 0 < ratio <= 1")
    return float(ratio) ** 0.5


def create_at_ratio(name: str, ratio: float, **kwargs: Any) -> nn.Module:
    """Build ``name`` at the width for size ``ratio`` (``width`` may not be given too)."""
    if "width" in kwargs:
        raise InvalidInputError(
            f"{name}: create_at_ratio takes ratio, not width; drop width={kwargs['width']!r}"
        )
    return create(name, width=width_for_ratio(ratio), **kwargs)
