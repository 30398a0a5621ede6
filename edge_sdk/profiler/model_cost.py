"""A model's cost on this device at several submodel sizes: parameters, FLOPs, peak training
memory and latency (:mod:`edge_sdk.profiler.latency`)."""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Sequence

import torch
from torch import nn

from edge_sdk.errors import InvalidInputError
from edge_sdk.profiler.budget import Budget
from edge_sdk.profiler.flops import count_flops, flop_breakdown
from edge_sdk.profiler.forecast import Forecast
from edge_sdk.profiler.latency import latencies
from edge_sdk.profiler.memory import peak_training_memory
from edge_sdk.profiler.microbench import torch_threads
from edge_sdk.profiler.report import LayerCost, ModelProfile, SizeCost, size_label

log = logging.getLogger(__name__)

DEFAULT_RATIOS = (1.0, 1 / 4, 1 / 16, 1 / 64)
STRATEGY = "heterofl"  # the plan whose submodels are profiled (and trained by --validate)
ProgressFn = Callable[[str], None]


def sized_model(model: nn.Module, ratio: float, example_input: torch.Tensor | None = None) -> tuple[nn.Module, float | None]:
    """The submodel a device trains at size ``ratio`` and its width (the fraction of each
    layer's channels kept; None if the model has no width).

    It is the channel-level (structured) extraction of the HeteroFL plan, the module
    ``plan.extract`` returns: FedRolex and FIARSE-structured keep the same channel counts,
    so the same shapes and the same cost; only which channels differs. (A reference model
    rebuilt at width x sqrt(ratio) rounds channels differently: cnn1d at 1/64 has 414
    parameters rebuilt and 172 extracted, and is not what any strategy trains.)
    ``example_input`` traces a model without ``config.input_shape``.
    """
    if not 0 < ratio <= 1:
        raise InvalidInputError(f"ratio {ratio!r} is outside (0, 1]: a size is the fraction of parameters held")
    width = getattr(getattr(model, "config", None), "width", None)
    if ratio == 1:
        return model, width
    from edge_sdk.submodel.structured import plan_structured

    plan = plan_structured(STRATEGY, model, ratio, example_input=example_input)
    return plan.extract(model), round(plan.width * (width or 1.0), 6)


def profile_model(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    threads: int | None = None,
    quick: bool = False,
    name: str | None = None,
    measure_latency: bool = True,
    progress: ProgressFn | None = None,
    budget: Budget | None = None,
) -> ModelProfile:
    """Profile ``model`` on a batch ``example_input`` at each submodel size in ``ratios``.

    FLOPs come from the closed form of a reference model, else :func:`count_flops`; peak
    training memory from a tensor-level tracker (:mod:`edge_sdk.profiler.memory`:
    parameters, gradients, SGD momentum, activations and temporaries of one step);
    latencies are of a forward pass and of one SGD training step on the whole batch.
    The model passed in is not modified (training steps run on a copy). Under ``budget``
    sizes are measured smallest first, and memory and latencies with fewer runs, or not at
    all, to meet its deadline (``budget.cut_short`` lists what was left out).
    """
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise InvalidInputError("example_input must be a batch tensor of shape (batch, *sample_shape)")
    ratios = _check_ratios(ratios)
    threads = threads or torch.get_num_threads()
    budget = budget or Budget()
    full_params = _param_count(model)
    batch = example_input.shape[0]
    sizes: list[SizeCost] = []
    layers: list[LayerCost] = []
    forecast = Forecast()
    if not quick and measure_latency:
        # full profiles time train_local's own optimizer (latency.TrainStep); the process's
        # first one imports dynamo (1.1 s): here, before any timing or forecast
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with torch_threads(threads):
        # smallest first: each size's timings forecast the next one's, so that work which
        # would overrun the deadline is skipped before it starts
        for index, ratio in enumerate(sorted(ratios)):
            if progress:
                progress(f"profiling model at size {size_label(ratio)}")
            with torch_threads(1):  # traced and counted, not timed: no thread-pool stalls
                sub, width = sized_model(model, ratio, example_input[:2])
            share = budget.remaining() / (len(ratios) - index)
            sizes.append(_size_cost(
                sub, example_input, ratio, width, full_params, quick, measure_latency, budget, threads, share, forecast
            ))
            if ratio == ratios[0] and budget.remaining() <= 0:
                budget.cut("per-layer FLOPs")
            elif ratio == ratios[0]:
                with torch_threads(1):
                    layers = _layer_costs(sub, example_input)
    sizes.sort(key=lambda s: s.ratio, reverse=True)
    config = getattr(model, "config", None)
    return ModelProfile(
        model=name or getattr(config, "name", None) or type(model).__name__,
        input_shape=list(example_input.shape[1:]),
        batch_size=int(batch),
        sizes=sizes,
        layers=layers,
    )


def _size_cost(
    model: nn.Module,
    example_input: torch.Tensor,
    ratio: float,
    width: float | None,
    full_params: int,
    quick: bool,
    with_latency: bool,
    budget: Budget,
    threads: int,
    share: float,
    forecast: Forecast,
) -> SizeCost:
    params = _param_count(model)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # counted, not timed: one thread, so that a busy device's stalls in torch's thread pool
    # (every thread waits for the slowest at each op) do not stretch the profile
    with torch_threads(1):
        forward_flops, train_flops = _flops_per_batch(model, example_input)
        peak = None
        if forecast.predict("memory", train_flops) > budget.remaining():
            budget.cut(f"peak memory at size {size_label(ratio)}")
        else:
            start = time.perf_counter()
            try:
                peak = peak_training_memory(model, example_input)
            except Exception as exc:  # an op the tracker cannot follow: degrade, don't fail the profile
                log.warning("peak training memory not measured: %s", exc)
            forecast.learn("memory", time.perf_counter() - start, train_flops)
    forward_latency = train_latency = None
    if with_latency:
        forward_latency, train_latency = latencies(
            model, example_input, quick, budget, threads, size_label(ratio), share, forecast, (forward_flops, train_flops)
        )
    return SizeCost(
        ratio=ratio,
        kept_fraction=round(params / full_params, 6),
        width=None if width is None else round(width, 6),
        params=params,
        param_bytes=int(param_bytes),
        forward_flops=forward_flops,
        train_step_flops=train_flops,
        peak_train_memory_bytes=peak,
        forward_latency=forward_latency,
        train_step_latency=train_latency,
    )


def _flops_per_batch(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """FLOPs of the whole batch. A reference model's come from its closed form
    (``edge_sdk.models.analytic``, equal to ``count_flops`` for every registered model, and
    free); any other model's are counted on two samples and scaled: every op torch counts
    (matmul, convolution, attention) works per sample, so FLOPs are linear in the batch."""
    batch = example_input.shape[0]
    config = getattr(model, "config", None)
    if config is not None and tuple(example_input.shape[1:]) == tuple(getattr(config, "input_shape", ())):
        from edge_sdk.models.analytic import analytic_flops

        try:
            return analytic_flops(model, batch), analytic_flops(model, batch, backward=True)
        except Exception as exc:  # no closed form for this configuration: count instead
            log.debug("no closed-form FLOPs for %s: %s", type(model).__name__, exc)
    probe = example_input[: min(batch, 2)]
    n = probe.shape[0]
    forward = count_flops(model, probe)
    train = count_flops(model, probe, backward=True)
    return forward * batch // n, train * batch // n


def _layer_costs(model: nn.Module, example_input: torch.Tensor) -> list[LayerCost]:
    probe = example_input[:1]
    breakdown = flop_breakdown(model, probe)
    modules = dict(model.named_modules())
    layers = []
    for name, module in model.named_modules():
        own_params = sum(p.numel() for p in module.parameters(recurse=False))
        flops = breakdown.per_module.get(name or "(root)", 0) * example_input.shape[0]
        if flops or (own_params and not any(True for _ in module.children())):
            layers.append(LayerCost(name=name or "(root)", kind=type(modules[name]).__name__, params=own_params, forward_flops=flops))
    return layers


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    values = [float(r) for r in ratios]
    if not values:
        raise InvalidInputError("ratios: give at least one size in (0, 1]")
    for r in values:
        if not (0 < r <= 1) or math.isnan(r):
            raise InvalidInputError(f"ratio {r!r} is outside (0, 1]: a size is the fraction of parameters held")
    return sorted(set(values), reverse=True)

