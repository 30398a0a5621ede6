"""FLOP counting on top of ``torch.utils.flop_counter.FlopCounterMode``.

One multiply-add is two FLOPs. Counts are dense (a zeroed weight still counts) and cover
matmuls, convolutions and scaled-dot-product attention, forward and backward; elementwise
ops, norms, pooling and the loss count 0 (torch's convention).

torch has no formula for the CPU attention kernels (``_scaled_dot_product_flash_attention_for_cpu``
and its backward), so on CPU attention would count 0; we map them onto torch's own SDPA
formulas. The fused fast paths of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``
(taken in eval mode under no_grad) are avoided by counting with autograd enabled and the
model in train mode, restoring both afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils import flop_counter

from edge_sdk.errors import InvalidInputError

_aten = torch.ops.aten



def _cpu_sdpa_flop(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(
    grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any
) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# FlopCounterMode wraps these so that they receive shapes, as torch's own formulas do.
_CPU_ATTENTION_FORMULAS: dict[Any, Callable[..., int]] = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


@dataclass(frozen=True)
class FlopBreakdown:
    """Total FLOPs and what each module spends itself (name -> FLOPs)."""

    total: int
    per_module: dict[str, int]


def count_flops(model: nn.Module, example_input: Any, *, backward: bool = False) -> int:
    """FLOPs of one forward pass of ``model`` on ``example_input`` (a batch), or of one
    training step (forward, cross-entropy loss, backward) when ``backward`` is true.

    The result does not depend on the caller's grad mode or on ``model.training``. The model's
    parameters and their ``.grad`` are left as they were.
    """
    return flop_breakdown(model, example_input, backward=backward).total


def flop_breakdown(model: nn.Module, example_input: Any, *, backward: bool = False) -> FlopBreakdown:
    """Like :func:`count_flops`, with the FLOPs each module spends itself (forward and
    backward FLOPs attributed to the module whose op ran)."""
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"count_flops: model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION_FORMULAS)
    with _counting_state(model):
        with counter:
            output = model(*inputs)
            if backward:
                loss = _training_loss(output)
                loss.backward()
    counts = counter.get_flop_counts()
    total = counter.get_total_flops()
    return FlopBreakdown(total=total, per_module=_self_counts(model, counts))


@contextlib.contextmanager
def _counting_state(model: nn.Module) -> Iterator[None]:
    """Train mode (no fused inference kernels), grad enabled, BN stats and grads restored."""
    was_training = {m: m.training for m in model.modules()}
    saved_buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    saved_grads = {name: (None if p.grad is None else p.grad.detach().clone()) for name, p in model.named_parameters()}
    try:
        model.train()
        with torch.enable_grad():
            yield
    finally:
        for module, mode in was_training.items():
            module.training = mode
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved_buffers[name])
        for name, param in model.named_parameters():
            param.grad = saved_grads[name]


def _training_loss(output: Any) -> torch.Tensor:
    logits = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(logits, torch.Tensor):
        raise InvalidInputError("count_flops(backward=True): the model must return a tensor of logits")
    if logits.dim() >= 2:
        target = torch.zeros(logits.shape[0], *logits.shape[2:], dtype=torch.long, device=logits.device)
        return nn.functional.cross_entropy(logits, target)
    return logits.float().sum()


def _self_counts(model: nn.Module, counts: dict[str, dict[Any, int]]) -> dict[str, int]:
    """FLOPs each module spends itself (its total less its children's), keyed by module name.

    FlopCounterMode keys modules as ``ClassName.child.grandchild``; ops a module runs in its
    own forward (e.g. attention between its Linear layers) stay with that module.
    """
    root = type(model).__name__

    def total(name: str) -> int:
        key = f"{root}.{name}" if name else root
        return int(sum(counts.get(key, {}).values()))

    per_module: dict[str, int] = {}
    for name, module in model.named_modules():
        children = sum(total(f"{name}.{child}" if name else child) for child, _ in module.named_children())
        own = total(name) - children
        if own > 0:
            per_module[name or "(root)"] = own
    return per_module
