"""Server-side data for FedTSA's stage 2 (deep mutual learning between the tier models).

A source implements :class:`ServerDataSource`: ``batches(models, num_batches, batch_size,
rng)`` yields ``num_batches`` input tensors (no labels). What ships:

* :class:`ProxyData` -- an unlabeled proxy set the user gives (a tensor or a dataset);
* :class:`DeepInversionData` -- data-free synthesis from the current models: random inputs
  are optimised so that the models predict sampled target classes and, for models with
  BatchNorm, the batch statistics at every BN layer match its running statistics
  (DeepInversion, Yin et al. 2020), with a small total-variation and L2 prior;
* :class:`GeneratorData` -- any callable ``fn(n, rng) -> tensor``, e.g. the sampler of a
  diffusion model the user wires in.

What does not ship: the FedTSA paper draws its server data from a pretrained diffusion model;
no diffusion model, weights or diffusion library is included or required. Wrap your own
sampler in :class:`GeneratorData` to use one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from edge_sdk.errors import InvalidInputError

log = logging.getLogger(__name__)

__all__ = ["ServerDataSource", "ProxyData", "DeepInversionData", "GeneratorData", "as_generator"]

RngLike = np.random.Generator | int | None


@runtime_checkable
class ServerDataSource(Protocol):
    """Anything that yields unlabeled input batches for server-side distillation."""

    def batches(self, models: Sequence[nn.Module], num_batches: int, batch_size: int,
                rng: RngLike = None) -> Iterator[torch.Tensor]:
        """Yield ``num_batches`` input tensors of ``batch_size`` samples each (``models`` are
        the current tier models, for sources that synthesise from them)."""
        ...


def as_generator(rng: RngLike) -> np.random.Generator:
    """``rng`` as a NumPy Generator (an int seeds one; None draws fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise InvalidInputError(f"rng={rng!r} is not accepted; expected a numpy Generator, an int seed or None")


def _torch_gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


def _check_counts(where: str, num_batches: Any, batch_size: Any) -> None:
    for name, v in (("num_batches", num_batches), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidInputError(f"{where}: {name}={v!r} is not accepted; expected an integer >= 1")


class ProxyData:
    """An unlabeled proxy set: a tensor ``(N, *input_shape)`` or a map-style dataset whose
    items are inputs or ``(x, y)`` pairs (labels are ignored). Batches are drawn without
    replacement, reshuffling after each pass."""

    def __init__(self, data: torch.Tensor | Dataset) -> None:
        if isinstance(data, torch.Tensor):
            x = data
        elif isinstance(data, Dataset) and hasattr(data, "__len__"):
            tensors = getattr(data, "tensors", None)
            if tensors is not None:
                x = tensors[0]
            else:
                items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
                items = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
                if not items or not all(isinstance(it, torch.Tensor) for it in items):
                    raise InvalidInputError("ProxyData: dataset items must be tensors or (tensor, label) pairs")
                x = torch.stack(items)
        else:
            raise InvalidInputError(f"ProxyData: expected a tensor or a sized Dataset, got {type(data).__name__}")
        if x.dim() < 2 or x.shape[0] < 1 or not x.is_floating_point():
            raise InvalidInputError(f"ProxyData: expected a float tensor (N, ...) with N >= 1, got "
                                    f"{x.dtype} of shape {list(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError("ProxyData: the proxy set holds NaN or Inf values")
        self.x = x.detach()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batches(self, models: Sequence[nn.Module], num_batches: int, batch_size: int,
                rng: RngLike = None) -> Iterator[torch.Tensor]:
        _check_counts("ProxyData.batches", num_batches, batch_size)
        gen = as_generator(rng)
        n = len(self)
        bs = min(batch_size, n)
        order = gen.permutation(n)
        pos = 0
        for _ in range(num_batches):
            if pos + bs > n:
                order, pos = gen.permutation(n), 0
            idx = torch.from_numpy(order[pos:pos + bs])
            pos += bs
            yield self.x[idx]


class GeneratorData:
    """Inputs from any callable ``fn(n, rng) -> tensor (n, *input_shape)``: plug a diffusion
    model's sampler (or any generator) in here; nothing of it is a dependency of edge-sdk."""

    def __init__(self, fn: Callable[[int, np.random.Generator], torch.Tensor]) -> None:
        if not callable(fn):
            raise InvalidInputError(f"GeneratorData: expected a callable fn(n, rng), got {type(fn).__name__}")
        self.fn = fn

    def batches(self, models: Sequence[nn.Module], num_batches: int, batch_size: int,
                rng: RngLike = None) -> Iterator[torch.Tensor]:
        _check_counts("GeneratorData.batches", num_batches, batch_size)
        gen = as_generator(rng)
        for _ in range(num_batches):
            x = self.fn(batch_size, gen)
            if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] != batch_size \
                    or not x.is_floating_point():
                got = f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
                raise InvalidInputError(f"GeneratorData: fn({batch_size}, rng) must return a float tensor "
                                        f"with {batch_size} rows, got {got}")
            yield x.detach()


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats and m.running_mean is not None]


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbours along every dimension after the channel."""
    terms = [(x.narrow(d, 1, x.shape[d] - 1) - x.narrow(d, 0, x.shape[d] - 1)).abs().mean()
             for d in range(2, x.dim()) if x.shape[d] > 1]
    return torch.stack(terms).sum() if terms else x.new_zeros(())


class DeepInversionData:
    """Data-free synthesis from the current models (DeepInversion without its adaptive
    competition term).

    For each batch: ``x`` starts as Gaussian noise and target classes ``y`` are drawn
    uniformly; ``steps`` Adam steps (``lr``) minimise, summed over the models (in eval mode,
    weights frozen), ``class_weight * CE(model(x), y) + bn_weight * sum_BN (||mu_b - mu||_2 +
    ||var_b - var||_2)`` plus ``tv_weight * TV(x) + l2_weight * mean(x^2)``, where ``mu_b,
    var_b`` are the batch statistics of each BN layer's input and ``mu, var`` its running
    statistics. Models without BatchNorm contribute only the class loss (the priors still
    apply). ``pool_batches`` distinct batches are synthesised per call and cycled (None: one
    per requested batch), since synthesis costs ``steps`` forward/backward passes per model.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, *, steps: int = 100, lr: float = 0.1,
                 bn_weight: float = 1.0, class_weight: float = 1.0, tv_weight: float = 1e-3,
                 l2_weight: float = 1e-4, pool_batches: int | None = None) -> None:
        shape = tuple(input_shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise InvalidInputError(f"DeepInversionData: input_shape={input_shape!r} is not accepted; "
                                    f"expected positive integers (one sample, no batch dimension)")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise InvalidInputError(f"DeepInversionData: num_classes={num_classes!r}; expected an integer >= 2")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InvalidInputError(f"DeepInversionData: steps={steps!r}; expected an integer >= 1")
        for name, v in (("lr", lr), ("bn_weight", bn_weight), ("class_weight", class_weight),
                        ("tv_weight", tv_weight), ("l2_weight", l2_weight)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InvalidInputError(f"DeepInversionData: {name}={v!r}; expected a finite number >= 0")
        if lr <= 0:
            raise InvalidInputError(f"DeepInversionData: lr={lr!r}; expected a number > 0")
        if pool_batches is not None and (isinstance(pool_batches, bool) or not isinstance(pool_batches, int)
                                         or pool_batches < 1):
            raise InvalidInputError(f"DeepInversionData: pool_batches={pool_batches!r}; expected None or >= 1")
        self.input_shape = shape
        self.num_classes = num_classes
        self.steps = steps
        self.lr = float(lr)
        self.bn_weight = float(bn_weight)
        self.class_weight = float(class_weight)
        self.tv_weight = float(tv_weight)
        self.l2_weight = float(l2_weight)
        self.pool_batches = pool_batches

    def synthesize(self, models: Sequence[nn.Module], batch_size: int,
                   rng: RngLike = None) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """One synthetic batch: ``(x, target classes, loss per step)``; models are unchanged."""
        models = list(models)
        if not models or not all(isinstance(m, nn.Module) for m in models):
            raise InvalidInputError("DeepInversionData: needs a non-empty list of nn.Module models")
        _check_counts("DeepInversionData.synthesize", 1, batch_size)
        gen = _torch_gen(as_generator(rng))
        x = torch.randn((batch_size, *self.input_shape), generator=gen).requires_grad_(True)
        y = torch.randint(0, self.num_classes, (batch_size,), generator=gen)
        opt = torch.optim.Adam([x], lr=self.lr)
        stats: list[torch.Tensor] = []

        def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            inp = inputs[0]
            dims = [d for d in range(inp.dim()) if d != 1]
            mu = inp.mean(dim=dims)
            var = inp.var(dim=dims, unbiased=False)
            stats.append(torch.linalg.vector_norm(mu - mod.running_mean)
                         + torch.linalg.vector_norm(var - mod.running_var))

        was = [m.training for m in models]
        req = [[p.requires_grad for p in m.parameters()] for m in models]
        handles = []
        history: list[float] = []
        try:
            for m in models:
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)
                if self.bn_weight > 0:
                    handles += [bn.register_forward_pre_hook(hook) for bn in _bn_layers(m)]
            for _ in range(self.steps):
                opt.zero_grad(set_to_none=True)
                stats.clear()
                loss = x.new_zeros(())
                for m in models:
                    out = m(x)
                    loss = loss + self.class_weight * F.cross_entropy(out, y)
                if stats:
                    loss = loss + self.bn_weight * torch.stack(stats).sum()
                loss = loss + self.tv_weight * _total_variation(x) + self.l2_weight * x.pow(2).mean()
                loss.backward()
                opt.step()
                history.append(float(loss.detach()))
        finally:
            for h in handles:
                h.remove()
            for m, w, r in zip(models, was, req):
                m.train(w)
                for p, rg in zip(m.parameters(), r):
                    p.requires_grad_(rg)
        return x.detach(), y, history

    def batches(self, models: Sequence[nn.Module], num_batches: int, batch_size: int,
                rng: RngLike = None) -> Iterator[torch.Tensor]:
        _check_counts("DeepInversionData.batches", num_batches, batch_size)
        gen = as_generator(rng)
        pool_size = min(num_batches, self.pool_batches or num_batches)
        pool: list[torch.Tensor] = []
        for i in range(num_batches):
            if len(pool) < pool_size:
                x, _, hist = self.synthesize(models, batch_size, gen)
                log.debug("DeepInversion batch %d: loss %.4g -> %.4g", len(pool), hist[0], hist[-1])
                pool.append(x)
                yield x
            else:
                yield pool[i % pool_size]
