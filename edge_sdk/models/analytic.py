"""Closed-form FLOP counts of registered models, from ``model.config`` alone.

Each model's formula sits beside its builder (``register_model(flops=...)``) and is built from
the term helpers here; a model registered without one is still usable everywhere, only
:func:`analytic_flops` refuses it (:func:`formula_names` lists the models that have one).

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
from edge_sdk.models._base import ModelConfig
from edge_sdk.models._registry import entry, names

__all__ = [
    "analytic_flops",
    "analytic_terms",
    "formula_names",
    "Term",
    "linear_term",
    "conv_term",
    "attention_term",
]

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


def linear_term(name: str, rows: int, n_in: int, n_out: int, first: bool = False) -> Term:
    """A Linear applied to ``rows`` vectors; ``first`` as in :func:`conv_term`."""
    return _layer(name, 2 * rows * n_in * n_out, first)


def conv_term(
    name: str, batch: int, out_spatial: int, c_out: int, c_in: int, kernel: int, first: bool = False
) -> Term:
    """A convolution; ``out_spatial`` and ``kernel`` are products over the spatial axes;
    ``first`` marks the layer reading the raw input (no grad_input)."""
    return _layer(name, 2 * batch * out_spatial * c_out * c_in * kernel, first)


def attention_term(name: str, b: int, h: int, s: int, d: int) -> Term:
    """Scaled-dot-product self-attention over ``s`` tokens, ``h`` heads of size ``d``."""
    base = b * h * s * s * d
    return Term(name, ATTENTION_FORWARD_FACTOR * base, ATTENTION_BACKWARD_FACTOR * base)


def formula_names() -> list[str]:
    """Registered models with a closed-form formula; count the others with ``count_flops``."""
    return [n for n in names() if entry(n).flops is not None]


def _config(model: nn.Module | ModelConfig) -> ModelConfig:
    if isinstance(model, ModelConfig):
        return model
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, ModelConfig) or cfg.name not in names():
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
    formula = entry(cfg.name).flops
    if formula is None:
        raise InvalidInputError(
            f"analytic_flops: model {cfg.name!r} registers no FLOP formula; count it with "
            f"edge_sdk.profiler.count_flops (models with one: {', '.join(formula_names())})"
        )
    return formula(cfg, batch_size)


def analytic_flops(model: nn.Module | ModelConfig, batch_size: int, *, backward: bool = False) -> int:
    """Closed-form FLOPs of one forward pass (or, with ``backward``, one training step)."""
    terms = analytic_terms(model, batch_size)
    return sum(t.forward + (t.backward if backward else 0) for t in terms)
