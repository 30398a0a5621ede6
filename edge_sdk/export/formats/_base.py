"""The export-format base class and the result of fitting a model to a target.

A format knows its bit ranges and defaults, how to choose bits for a target (``fit``) and
how to write a file (``write``); the CLI and the Flower end-of-run export only drive it, so
both pick the same bits for the same model and target.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from edge_sdk.errors import InvalidInputError

if TYPE_CHECKING:  # the heavy exporters load only when a format writes
    from torch import nn

    from edge_sdk.export._report import ExportReport
    from edge_sdk.export.fpga_estimate import FpgaEstimate

__all__ = ["ExportFormat", "FitResult", "Progress"]

Progress = Callable[[str], None]
"""A callback told what a long step is doing (the CLI's one-line progress indicator)."""


@dataclass(frozen=True)
class FitResult:
    """The bits a format will write for a target, and the FPGA estimate that chose them."""

    format: str
    weight_bits: int
    act_bits: int
    target: str | None = None
    estimate: FpgaEstimate | None = None
    profile: Any = field(default=None, repr=False, compare=False)  # HardwareProfile | None

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "weight_bits": self.weight_bits, "act_bits": self.act_bits,
                "target": self.target, "fpga_estimate": self.estimate.to_dict() if self.estimate else None}


def _shown(kind: str, value: Any, labels: Mapping[str, str] | None) -> str:
    """``weight_bits=9`` for a library caller, ``--weight-bits 9`` with the CLI's labels."""
    if labels and kind in labels:
        return f"{labels[kind]} {value}"
    return f"{kind}_bits={value!r}"


class ExportFormat:
    """One export format. Subclass, set the class attributes, implement :meth:`write`, and
    decorate with :func:`~edge_sdk.export.formats.register_format`.

    ``weight_range`` / ``act_range``: the inclusive bit widths the format can write (input
    and output quantizers use ``act_range``); ``default_bits``: (weight, act) without a
    target; ``fpga_budget``: with an FPGA target, :meth:`fit` lowers the weight bits until
    the resource estimate fits; ``options``: the format-specific keywords :meth:`export`
    passes on to :meth:`write`.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    suffix: ClassVar[str] = ".onnx"
    weight_range: ClassVar[tuple[int, int]]
    act_range: ClassVar[tuple[int, int]]
    default_bits: ClassVar[tuple[int, int]]
    fpga_budget: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        return f"<export format {self.name}>"

    # ------------------------------------------------------------------ bits

    def bit_range(self, kind: str) -> tuple[int, int]:
        """The inclusive range of ``kind`` bits (``weight``, ``act``, ``input``, ``output``)."""
        return self.weight_range if kind == "weight" else self.act_range

    def check_bits(self, kind: str, value: Any, *, labels: Mapping[str, str] | None = None) -> int | None:
        """``value`` if the format can write it (``None`` passes through), else InvalidInputError.

        ``labels`` spell the setting in messages (the CLI passes ``{"weight": "--weight-bits"}``)."""
        if value is None:
            return None
        low, high = self.bit_range(kind)
        if not isinstance(value, bool) and isinstance(value, int) and low <= value <= high:
            return value
        shown = _shown(kind, value, labels)
        if low == high:
            from edge_sdk.export.formats._registry import formats_taking

            others = formats_taking(kind, value)
            hint = f" ({', '.join(others)} take {value} bits)" if others else ""
            raise InvalidInputError(f"{shown} is out of range for {self.name}; it uses {low} bits{hint}")
        raise InvalidInputError(f"{shown} is out of range for {self.name}; expected an integer from {low} to {high}")

    # ------------------------------------------------------------------ fit

    def check_model(self, model: nn.Module) -> None:
        """Refuse, before any long work, a model this format cannot take (default: any passes)."""

    def fit(self, model: nn.Module, input_shape: tuple[int, ...] | None, profile: Any, *,
            weight_bits: int | None = None, act_bits: int | None = None,
            labels: Mapping[str, str] | None = None, progress: Progress | None = None) -> FitResult:
        """The bits to write ``model`` for ``profile`` (a hardware profile, its name or path, or
        ``None`` for this host).

        Given bits are checked against the format (and, with an FPGA budget, the target); with
        an FPGA target and ``fpga_budget``, the target's widest activation bits and the widest
        weight bits whose estimate fits (:class:`~edge_sdk.errors.BudgetExceededError` when
        none does); otherwise the given bits or the format's defaults."""
        from edge_sdk.export._target import load_profile

        wb = self.check_bits("weight", weight_bits, labels=labels)
        ab = self.check_bits("act", act_bits, labels=labels)
        profile = load_profile(profile)
        self.check_model(model)
        estimate = None
        if self.fpga_budget and profile is not None and getattr(profile, "fpga", None) is not None:
            from edge_sdk.export.formats._budget import fit_fpga

            wb, ab, estimate = fit_fpga(self, model, input_shape, profile, wb, ab, labels, progress)
        return FitResult(
            format=self.name,
            weight_bits=wb if wb is not None else self.default_bits[0],
            act_bits=ab if ab is not None else self.default_bits[1],
            target=getattr(profile, "name", None),
            estimate=estimate,
            profile=profile,
        )

    # ------------------------------------------------------------------ export

    def export(self, model: nn.Module, calib: Any, path: str | os.PathLike[str], fit: FitResult, *,
               eval_data: Any = None, threads: int = 1, measure_latency: bool = True,
               **options: Any) -> ExportReport:
        """Write ``model`` at ``fit``'s bits to ``path`` and return the verification report.

        ``calib``: float samples ``(N, *input_shape)``; ``eval_data``: samples or ``(samples,
        labels)`` for the parity numbers; ``options``: this format's own keywords (``options``)."""
        if not isinstance(fit, FitResult) or fit.format != self.name:
            got = fit.format if isinstance(fit, FitResult) else type(fit).__name__
            raise InvalidInputError(f"{self.name} export needs a FitResult from {self.name}.fit(); got {got}")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise InvalidInputError(f"{self.name} export does not take {', '.join(unknown)}; its options: {valid}")
        return self.write(model, calib, path, fit, eval_data=eval_data, threads=threads,
                          measure_latency=measure_latency, options=options)

    def write(self, model: nn.Module, calib: Any, path: str | os.PathLike[str], fit: FitResult, *,
              eval_data: Any, threads: int, measure_latency: bool, options: dict[str, Any]) -> ExportReport:
        """Quantize and write the file (called by :meth:`export` once its inputs are checked)."""
        raise NotImplementedError(f"export format {self.name} does not implement write()")
