"""FLOP counting on top of ``torch.utils.flop_counter.FlopCounterMode``.

One multiply-add is two FLOPs. Counts are dense (a zeroed weight still counts) and cover
matmuls, convolutions and scaled-dot-product attention, forward and backward; elementwise
ops, norms, pooling and the loss count 0 (torch's convention).

torch has no formula for the CPU attention kernels (``_scaled_dot_product_flash_attention_for_cpu``
and its backward), so on CPU attention would count 0; we map them onto torch's own SDPA
formulas. The fused fast paths of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``
(taken in eval mode under no_grad) are avoided by counting with autograd enabled and the
model in train mode, restoring both afterwards.

Totals and forward per-module counts come from :class:`_FlopMode`, a dispatch mode applying
torch's own formulas (``flop_counter.flop_registry``) as ``FlopCounterMode`` does, without
its module tracker: torch wraps the ``__torch_dispatch__`` of its modes in
``torch._disable_dynamo``, whose first call imports dynamo (1.1 s of CPU on the 2-core test
VM, a tenth of a quick profile). Forward per-module counts attribute each op to the
innermost module running (forward hooks); a backward breakdown still uses ``FlopCounterMode``,
which follows autograd. Both give the same counts (``tests/test_profiler.py``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from collections import defaultdict
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

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
    _check_model(model)
    mode = _FlopMode()
    _run(model, example_input, backward, mode)
    return mode.total


def flop_breakdown(model: nn.Module, example_input: Any, *, backward: bool = False) -> FlopBreakdown:
    """Like :func:`count_flops`, with the FLOPs each module spends itself (forward and
    backward FLOPs attributed to the module whose op ran)."""
    _check_model(model)
    if not backward:
        mode = _FlopMode()
        with _innermost_module(model, mode):
            _run(model, example_input, False, mode)
        return FlopBreakdown(total=mode.total, per_module={k: v for k, v in mode.per_module.items() if v > 0})
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


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"count_flops: model must be a torch.nn.Module, got {type(model).__name__}")


def _run(model: nn.Module, example_input: Any, backward: bool, mode: TorchDispatchMode) -> None:
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    with _counting_state(model):
        with mode:
            output = model(*inputs)
            if backward:
                _training_loss(output).backward()


# FlopCounterMode's formulas, keyed by op packet, and the ops it leaves to their tensors
_REGISTRY = {**flop_counter.flop_registry,
             **{k: flop_counter.shape_wrapper(v) for k, v in _CPU_ATTENTION_FORMULAS.items()}}
_aten_ops = torch.ops.aten
_METADATA_OPS = {
    _aten_ops.sym_is_contiguous.default, _aten_ops.is_contiguous.default, _aten_ops.is_contiguous.memory_format,
    _aten_ops.is_strides_like_format.default, _aten_ops.is_non_overlapping_and_dense.default,
    _aten_ops.size.default, _aten_ops.sym_size.default, _aten_ops.stride.default, _aten_ops.sym_stride.default,
    _aten_ops.storage_offset.default, _aten_ops.sym_storage_offset.default, _aten_ops.numel.default,
    _aten_ops.sym_numel.default, _aten_ops.dim.default, torch.ops.prim.layout.default,
}


class _FlopMode(TorchDispatchMode):
    """FLOPs of every op run under it (``total``), and per ``owner`` (set by the caller)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing is compiled under this mode: no _disable_dynamo wrapper, no dynamo import

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.owner = ""
        self.per_module: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _METADATA_OPS:
            return NotImplemented
        if func not in _REGISTRY and func is not torch.ops.prim.device.default:
            with self:  # an op without a formula may decompose into ops with one
                decomposed = func.decompose(*args, **kwargs)
                if decomposed is not NotImplemented:
                    return decomposed
        out = func(*args, **kwargs)
        formula = _REGISTRY.get(func._overloadpacket)
        if formula is not None:
            flops = int(formula(*args, **kwargs, out_val=out))
            self.total += flops
            self.per_module[self.owner] += flops
        return out


@contextlib.contextmanager
def _innermost_module(model: nn.Module, mode: _FlopMode) -> Iterator[None]:
    """Keep ``mode.owner`` the name of the innermost module whose forward is running."""
    stack: list[str] = []
    handles = []

    def enter(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            stack.append(mode.owner)
            mode.owner = name
        return hook

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        mode.owner = stack.pop() if stack else ""

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name or "(root)")))
        handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
