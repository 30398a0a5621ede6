"""Peak memory of one training step, tensor-level, without torch's MemTracker.

torch's ``torch.distributed._tools.mem_tracker.MemTracker`` gives the same tensor-level
peak, but importing it pulls in dynamo and inductor: 1.1 s of CPU on the 2-core test VM
(3-5 s of wall time on a busy one), more than the rest of a quick profile's model work.
This tracker is a ``TorchDispatchMode`` that sees every op of the step (forward, the
autograd engine's backward, the optimizer) and keeps the bytes of every tensor storage
alive: those given at the start (parameters, buffers, optimizer state) and every storage an
op returns, each dropped once its last reference is gone (a weak reference to the storage,
checked at every op).
On every reference model its peak equals MemTracker's byte for byte (``tests/test_profiler.py``),
while its tracked step runs 1.2-5x faster.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTracker(TorchDispatchMode):
    """Live tensor-storage bytes while active, and their peak (``peak``, bytes)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing is compiled under this mode: no _disable_dynamo wrapper, no dynamo import

    def __init__(self, alive: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        for tensor in alive:
            self._add(tensor)
        self.peak = self.current

    def _add(self, tensor: Any) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        ref = StorageWeakRef(storage)
        if ref.cdata in self._live:
            return  # a view of (or the same) storage, already counted
        size = storage.nbytes()
        self._live[ref.cdata] = (ref, size)
        self.current += size

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for key, (ref, size) in list(self._live.items()):  # freed since the op before
            if ref.expired():
                del self._live[key]
                self.current -= size
        for tensor in tree_leaves(out):
            self._add(tensor)
        self.peak = max(self.peak, self.current)
        return out


def peak_training_memory(model: nn.Module, example_input: torch.Tensor) -> int:
    """Peak bytes of one SGD(momentum) training step on ``example_input``: parameters,
    buffers, gradients, optimizer state, activations and temporaries (tensor storages, not
    the allocator's or the process's). The model passed in is not modified."""
    from edge_sdk.profiler.latency import TrainStep

    work = copy.deepcopy(model).train()
    step = TrainStep(work, example_input)
    step()  # creates the optimizer state outside the tracked step
    alive = [*work.parameters(), *work.buffers(), *(b for b in step.momentum_buffers if b is not None)]
    tracker = PeakTracker(alive)
    del alive  # the gradients of the step before are freed by the step's zero_grad: hold no reference
    with tracker:
        step()
    return int(tracker.peak)
