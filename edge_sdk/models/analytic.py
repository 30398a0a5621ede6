"""Closed-form FLOP counts of the reference models, from ``model.config`` alone.

An independent check of :func:`edge_sdk.profiler.count_flops`, with its conventions (those of
``torch.utils.flop_counter.FlopCounterMode``): one multiply-add = 2 FLOPs; matmuls,
convolutions and scaled-dot-product attention count, elementwise ops, norms, softmax, pooling
and the loss count 0; counts are dense.

* Linear on ``rows`` vectors: ``2 * rows * in * out``.
* Conv: ``2 * batch * prod(out_spatial) * c_out * c_in/groups * prod(kernel)``.
* Attention forward: ``4*b*h*s_q*s_k*d`` (QK^T and AV). Attention backward uses torch's
  ``sdpa_backward_flop_count``: 5 batched matmuls (scores recomputed, grad of scores, grad V,
  grad Q, grad K) = ``10*b*h*s_q*s_k*d``.
* Training step (``backward=True``): forward, plus for each conv/linear its grad_weight
  (= its forward FLOPs) and grad_input (= its forward FLOPs), except the grad_input of the
  layer that reads the raw input (stem conv, patch-embedding conv), plus attention backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from edge_sdk.errors import InvalidInputError
from edge_sdk.models._base import ModelConfig, scaled
from edge_sdk.models._registry import CNN1D_BASE, mixer_dims, resnet_channels, vit_dims
from edge_sdk.models.cnn1d import conv1d_out_length

__all__ = ["analytic_flops", "Term", "analytic_terms"]

ATTENTION_FORWARD_FACTOR = 4  # x b*h*s_q*s_k*d
ATTENTION_BACKWARD_FACTOR = 10  # torch.utils.flop_counter.sdpa_backward_flop_count


@dataclass(frozen=True)
class Term:
    """One FLOP-counted layer: its forward FLOPs and its training-step backward FLOPs."""

    name: str
    forward: int
    backward: int


def _layer(name: str, fwd: int, reads_raw_input: bool = False) -> Term:
    # grad_weight always; grad_input unless the layer's input does not require grad
    return Term(name, fwd, fwd if reads_raw_input else 2 * fwd)


def _linear(name: str, rows: int, n_in: int, n_out: int) -> Term:
    return _layer(name, 2 * rows * n_in * n_out)


def _conv(
    name: str, batch: int, out_spatial: int, c_out: int, c_in: int, kernel: int, first: bool = False
) -> Term:
    return _layer(name, 2 * batch * out_spatial * c_out * c_in * kernel, first)


def _attention(name: str, b: int, h: int, s: int, d: int) -> Term:
    base = b * h * s * s * d
    return Term(name, ATTENTION_FORWARD_FACTOR * base, ATTENTION_BACKWARD_FACTOR * base)


def _resnet(cfg: ModelConfig, b: int) -> list[Term]:
    chans = resnet_channels(cfg.name, cfg.width)
    c_in, size, _ = cfg.input_shape
    terms = [_conv("conv1", b, size * size, chans[0], c_in, 9, first=True)]
    c_in = chans[0]
    for i, planes in enumerate(chans):
        for j in range(cfg.depth):
            stride = 2 if (i > 0 and j == 0) else 1
            out = (size - 1) // stride + 1  # 3x3 pad 1 and 1x1 pad 0 give the same size
            p = f"layers.{i}.{j}"
            terms.append(_conv(f"{p}.conv1", b, out * out, planes, c_in, 9))
            terms.append(_conv(f"{p}.conv2", b, out * out, planes, planes, 9))
            if stride != 1 or c_in != planes:
                terms.append(_conv(f"{p}.shortcut.0", b, out * out, planes, c_in, 1))
            c_in, size = planes, out
    terms.append(_linear("fc", b, c_in, cfg.num_classes))
    return terms


def _cnn1d(cfg: ModelConfig, b: int) -> list[Term]:
    c = scaled(CNN1D_BASE, cfg.width)
    k = cfg.options["kernel_size"]
    c_in, length = cfg.input_shape
    terms = []
    for i in range(cfg.depth):
        length = conv1d_out_length(length, k)
        terms.append(_conv(f"features.{i}", b, length, c, c_in, k, first=i == 0))
        c_in = c
    terms.append(_linear("fc", b, c * length, cfg.num_classes))
    return terms


def _vit(cfg: ModelConfig, b: int) -> list[Term]:
    heads, head_dim, hidden = vit_dims(cfg.width, cfg.options)
    dim = heads * head_dim
    c_in, img, _ = cfg.input_shape
    p = cfg.options["patch_size"]
    n = (img // p) ** 2
    t = n + 1  # + cls token
    terms = [_conv("patch_embed.proj", b, n, dim, c_in, p * p, first=True)]
    for i in range(cfg.depth):
        terms += [
            _linear(f"blocks.{i}.attn.qkv", b * t, dim, 3 * dim),
            _attention(f"blocks.{i}.attn.sdpa", b, heads, t, head_dim),
            _linear(f"blocks.{i}.attn.proj", b * t, dim, dim),
            _linear(f"blocks.{i}.mlp.fc1", b * t, dim, hidden),
            _linear(f"blocks.{i}.mlp.fc2", b * t, hidden, dim),
        ]
    terms.append(_linear("head", b, dim, cfg.num_classes))
    return terms


def _mixer(cfg: ModelConfig, b: int) -> list[Term]:
    dim, tok, ch = mixer_dims(cfg.width)
    c_in, img, _ = cfg.input_shape
    p = cfg.options["patch_size"]
    n = (img // p) ** 2
    terms = [_conv("patch_embed.proj", b, n, dim, c_in, p * p, first=True)]
    for i in range(cfg.depth):
        terms += [
            _linear(f"blocks.{i}.token_mlp.fc1", b * dim, n, tok),
            _linear(f"blocks.{i}.token_mlp.fc2", b * dim, tok, n),
            _linear(f"blocks.{i}.channel_mlp.fc1", b * n, dim, ch),
            _linear(f"blocks.{i}.channel_mlp.fc2", b * n, ch, dim),
        ]
    terms.append(_linear("head", b, dim, cfg.num_classes))
    return terms


_FORMULAS = {
    "resnet18": _resnet,
    "resnet8": _resnet,
    "cnn1d": _cnn1d,
    "vit_tiny": _vit,
    "mixer_tiny": _mixer,
}


def _config(model: nn.Module | ModelConfig) -> ModelConfig:
    if isinstance(model, ModelConfig):
        return model
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ModelConfig) or cfg.name not in _FORMULAS:
        raise InvalidInputError(
            f"analytic_flops: {type(model).__name__} has no reference-model config; "
            "expected a model from edge_sdk.models.create"
        )
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks) != cfg.depth:
        raise InvalidInputError(
            f"analytic_flops: model.blocks holds {len(blocks)} blocks but model.config.depth is "
            f"{cfg.depth}; expected an unmodified model from edge_sdk.models.create"
        )
    return cfg


def analytic_terms(model: nn.Module | ModelConfig, batch_size: int) -> list[Term]:
    """Per-layer closed-form FLOPs (forward and training-step backward) of a reference model."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(
            f"analytic_flops: batch_size={batch_size!r} is not accepted; expected an integer >= 1"
        )
    cfg = _config(model)
    return _FORMULAS[cfg.name](cfg, batch_size)


def analytic_flops(model: nn.Module | ModelConfig, batch_size: int, *, backward: bool = False) -> int:
    """Closed-form FLOPs of one forward pass (or, with ``backward``, one training step)."""
    terms = analytic_terms(model, batch_size)
    return sum(t.forward + (t.backward if backward else 0) for t in terms)
