"""Bit widths for an FPGA target: the widest the target and format share, with the weight
bits lowered until the resource estimate fits (what ``edge-sdk export --target`` and the
Flower end-of-run export both do)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import BudgetExceededError, InvalidInputError
from edge_sdk.export.formats._base import _shown

if TYPE_CHECKING:
    from torch import nn

    from edge_sdk.export.formats._base import ExportFormat, Progress
    from edge_sdk.export.fpga_estimate import FpgaEstimate

__all__ = ["fit_fpga"]

log = logging.getLogger(__name__)


def _choices(fmt: ExportFormat, kind: str, supported: list[int]) -> list[int]:
    low, high = fmt.bit_range(kind)
    return sorted((b for b in supported if low <= b <= high), reverse=True)


def _check_supported(kind: str, value: int | None, supported: list[int], target: str,
                     labels: Mapping[str, str] | None) -> None:
    if value is not None and value not in supported:
        raise InvalidInputError(f"{_shown(kind, value, labels)} is out of range for {target}; it supports "
                                f"{', '.join(map(str, supported))}")


def fit_fpga(fmt: ExportFormat, model: nn.Module, input_shape: tuple[int, ...] | None, profile: Any,
             wb: int | None, ab: int | None, labels: Mapping[str, str] | None,
             progress: Progress | None) -> tuple[int, int, FpgaEstimate]:
    """(weight bits, act bits, estimate) for ``profile``'s FPGA; BudgetExceededError if nothing fits."""
    from edge_sdk.export.fpga_estimate import estimate_fpga, model_layers

    fpga = profile.fpga
    act_choices = _choices(fmt, "act", fpga.act_bits)
    w_choices = _choices(fmt, "weight", fpga.weight_bits)
    if not act_choices or not w_choices:
        low, high = fmt.weight_range
        raise InvalidInputError(f"target {profile.name} supports no bit width {fmt.name} can write ({low} to {high})")
    _check_supported("weight", wb, fpga.weight_bits, profile.name, labels)
    _check_supported("act", ab, fpga.act_bits, profile.name, labels)
    act = ab if ab is not None else act_choices[0]
    candidates = [wb] if wb is not None else w_choices
    layers = model_layers(model, input_shape)  # traced once, estimated at each width
    estimate = None
    for bits in candidates:
        message = f"estimating W{bits}A{act} on {profile.name}"
        log.debug(message)
        if progress is not None:
            progress(message)
        estimate = estimate_fpga(layers, profile, weight_bits=bits, act_bits=act)
        if estimate.fits:
            return bits, act, estimate
    assert estimate is not None
    tried = f"W{candidates[0]}" if len(candidates) == 1 else f"W{candidates[0]} down to W{candidates[-1]}"
    raise BudgetExceededError(
        f"the model does not fit {profile.name} ({fpga.part}) at {tried} with A{act}: at "
        f"W{estimate.weight_bits} it needs {estimate.budget_line()} (needed/available; over: "
        f"{', '.join(estimate.over_budget)})"
    )
