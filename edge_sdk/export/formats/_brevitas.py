"""What the Brevitas formats (QONNX, QCDQ) share: the layer check before any long work, an
FPGA budget check, and building a :class:`BrevitasExportConfig` from a fit and options."""

from __future__ import annotations

import os
from dataclasses import fields
from typing import TYPE_CHECKING, Any, ClassVar

from edge_sdk.export.formats._base import ExportFormat, FitResult

if TYPE_CHECKING:
    from torch import nn

    from edge_sdk.export._report import ExportReport

_FROM_FIT = ("weight_bits", "act_bits", "threads", "measure_latency")


def _config_options() -> tuple[str, ...]:
    from edge_sdk.export.config import BrevitasExportConfig

    return tuple(f.name for f in fields(BrevitasExportConfig) if f.name not in _FROM_FIT)


class BrevitasFormat(ExportFormat):
    """Brevitas post-training quantization, then one of Brevitas' ONNX exporters."""

    fpga_budget = True
    options: ClassVar[tuple[str, ...]] = (*_config_options(), "qat_data", "metadata")
    # the edge_sdk.export function writing this format:
    # (model, calib, path, config, *, eval_data, qat_data) -> ExportReport
    exporter: ClassVar[str]

    def check_model(self, model: nn.Module) -> None:
        from edge_sdk.export._brevitas_ptq import check_supported_layers

        check_supported_layers(model, self.name)

    def write(self, model: nn.Module, calib: Any, path: str | os.PathLike[str], fit: FitResult, *,
              eval_data: Any, threads: int, measure_latency: bool, options: dict[str, Any]) -> ExportReport:
        from edge_sdk import export
        from edge_sdk.export.config import BrevitasExportConfig

        qat_data = options.pop("qat_data", None)
        metadata = options.pop("metadata", None)
        config = BrevitasExportConfig.for_flow(options.pop("flow", None), weight_bits=fit.weight_bits,
                                               act_bits=fit.act_bits, threads=threads,
                                               measure_latency=measure_latency, **options)
        return getattr(export, self.exporter)(model, calib, path, config, eval_data=eval_data, qat_data=qat_data,
                                              metadata=metadata)
