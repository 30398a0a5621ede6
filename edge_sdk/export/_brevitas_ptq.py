"""Brevitas post-training quantization in the form FINN and hls4ml take.

* weights: signed, narrow range, zero-point 0, per-output-channel or per-tensor scales;
* activations: unsigned, non-narrow quantizers after ReLU, signed elsewhere (residual adds,
  the input), zero-point 0, per-tensor scales;
* optional power-of-two scales (Brevitas fixed-point quantizers);
* BatchNorm merged into the preceding convolution / linear layer;
* calibration of activation ranges, then bias correction, under ``torch.no_grad()``;
* an optional short quantization-aware fine-tuning pass.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import ExportError, UnsupportedOpError
from edge_sdk.export._compat import require

__all__ = ["PtqConfig", "check_supported_layers", "brevitas_ptq", "output_step", "SUPPORTED_LAYERS"]

log = logging.getLogger(__name__)

SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout,
)  # fmt: skip


@dataclass(frozen=True)
class PtqConfig:
    """Bit widths and quantizer choices of a Brevitas PTQ run."""

    weight_bits: int
    act_bits: int
    input_bits: int = 8
    output_bits: int | None = None  # None: logits stay at the last layer's accumulator scale
    per_channel: bool = True
    pow2_scales: bool = False
    bias_correction: bool = True
    equalize_iters: int = 0
    bias_quant: str = "int32"  # int32: a 32-bit Quant at input x weight scale; float: left float
    requantize_pooled: bool = True  # an unsigned requantizer after average pooling (else none)
    signed_residuals: bool = False  # both inputs of a residual Add signed at act_bits + 1 (see below)


def check_supported_layers(model: nn.Module, flow: str) -> None:
    """Refuse, before any long work, a model with a layer the FPGA flows cannot take."""
    for name, module in model.named_modules():
        if len(list(module.children())) == 0 and not isinstance(module, SUPPORTED_LAYERS):
            supported = ", ".join(sorted({c.__name__ for c in SUPPORTED_LAYERS}))
            raise UnsupportedOpError(
                f"layer '{name}' ({type(module).__name__}) is not supported by the {flow} flow; "
                f"supported layers: {supported}"
            )


def _quantizers(cfg: PtqConfig):
    quant = require("brevitas.quant")
    if cfg.pow2_scales:  # Brevitas has no per-channel fixed-point weight quantizer: make one
        w = quant.Int8WeightPerTensorFixedPoint
        if cfg.per_channel:
            w = w.let(scaling_per_output_channel=True)
        uact, sact = quant.Uint8ActPerTensorFixedPoint, quant.Int8ActPerTensorFixedPoint
    else:
        w = quant.Int8WeightPerChannelFloat if cfg.per_channel else quant.Int8WeightPerTensorFloat
        uact, sact = quant.Uint8ActPerTensorFloat, quant.Int8ActPerTensorFloat
    return (w.let(bit_width=cfg.weight_bits), uact.let(bit_width=cfg.act_bits),
            sact.let(bit_width=cfg.act_bits), sact.let(bit_width=cfg.input_bits),
            sact.let(bit_width=cfg.output_bits or 8))


def _batches(x: np.ndarray, batch: int = 64):
    for start in range(0, x.shape[0], batch):
        yield torch.from_numpy(x[start : start + batch])


def brevitas_ptq(model: nn.Module, calib: np.ndarray, cfg: PtqConfig, *,
                 qat_data: tuple[np.ndarray, np.ndarray] | None = None, qat_epochs: int = 0,
                 qat_lr: float = 1e-3, seed: int = 0) -> nn.Module:
    """A Brevitas fake-quantized copy of ``model`` (which is not changed), calibrated on ``calib``."""
    qnn = require("brevitas.nn")
    bq = require("brevitas.graph.quantize")
    calibrate = require("brevitas.graph.calibrate")
    torch.manual_seed(seed)
    float_model = copy.deepcopy(model).float().cpu().eval()
    w_q, uact_q, sact_q, in_q, out_q = _quantizers(cfg)
    layer_map = dict(bq.COMPUTE_LAYER_MAP)
    for cls in (nn.Conv1d, nn.Conv2d, nn.Linear):
        qcls, kwargs = layer_map[cls]
        bias = {"bias_quant": None} if cfg.bias_quant == "float" else {}
        layer_map[cls] = (qcls, {**kwargs, "weight_quant": w_q, **bias})
    act_map = {
        nn.ReLU: (qnn.QuantReLU, {"act_quant": uact_q, "return_quant_tensor": True}),
        nn.ReLU6: (qnn.QuantReLU, {"act_quant": uact_q, "return_quant_tensor": True}),
    }
    identity_map = {
        "signed": (qnn.QuantIdentity, {"act_quant": sact_q, "return_quant_tensor": True}),
        "unsigned": (qnn.QuantIdentity, {"act_quant": uact_q, "return_quant_tensor": True}),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = bq.preprocess_for_quantize(float_model, equalize_iters=cfg.equalize_iters)
            qmodel = bq.quantize(graph, quant_identity_map=identity_map, compute_layer_map=layer_map,
                                 quant_act_map=act_map)
    except UnsupportedOpError:
        raise
    except Exception as exc:  # noqa: BLE001 - FX tracing / Brevitas graph errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedOpError(f"Brevitas could not quantize the model graph: {first}") from exc
    _set_input_quant(qmodel, qnn.QuantIdentity(act_quant=in_q, return_quant_tensor=True))
    _unsigned_requantizers(qmodel, qnn, uact_q if cfg.requantize_pooled else None)
    if cfg.signed_residuals:
        _signed_residuals(qmodel, qnn, sact_q.let(bit_width=cfg.act_bits + 1))
    if cfg.output_bits is None:
        _drop_output_quant(qmodel, qnn)
    else:
        _set_output_quant(qmodel, qnn.QuantIdentity(act_quant=out_q, return_quant_tensor=False))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with calibrate.calibration_mode(qmodel):
            for xb in _batches(calib):
                qmodel(xb)
        if cfg.bias_correction:
            with calibrate.bias_correction_mode(qmodel):
                for xb in _batches(calib):
                    qmodel(xb)
    if qat_data is not None and qat_epochs > 0:
        _fine_tune(qmodel, qat_data, qat_epochs, qat_lr, seed)
    return qmodel.eval()


# modules and functions that keep values non-negative (and, without pooling, on their grid)
_MOVES = ("flatten", "reshape", "view", "squeeze", "unsqueeze", "Flatten", "Identity", "Dropout", "MaxPool1d",
          "MaxPool2d")
_AVERAGES = ("AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "avg_pool1d", "avg_pool2d",
             "adaptive_avg_pool1d", "adaptive_avg_pool2d", "mean")


def _node_kind(qmodel, node) -> str:
    if node.op == "call_module":
        return type(qmodel.get_submodule(node.target)).__name__
    return getattr(node.target, "__name__", str(node.target))


def _unsigned_requantizers(qmodel, qnn, uact_q) -> None:
    """Signed requantizers that Brevitas puts after Flatten / pooling of ReLU outputs go.

    ``quantize`` requantizes a Linear's input with a signed quantizer; after ReLU (unsigned),
    Flatten and average pooling the values are non-negative, so a signed quantizer wastes a
    bit, and FINN cannot stream it (a signed threshold before Flatten leaves a Transpose and
    the Flatten between partitions). With only moves in between, the ReLU's quantized tensor
    passes as it is; after an average, an unsigned quantizer of the same width takes over
    (``uact_q``), or none (``None``: the pooled values feed the layer as they are)."""
    for node in list(qmodel.graph.nodes):
        if node.op != "call_module" or not isinstance(qmodel.get_submodule(node.target), qnn.QuantIdentity):
            continue
        if node.target == getattr(_input_quant_node(qmodel), "target", None):
            continue
        module = qmodel.get_submodule(node.target)
        if not getattr(module.act_quant, "is_signed", True):
            continue
        src, averaged = node.args[0] if node.args else None, False
        while src is not None and getattr(src, "op", None) in ("call_module", "call_function", "call_method"):
            kind = _node_kind(qmodel, src)
            if kind in _MOVES:
                src = src.args[0]
            elif kind in _AVERAGES:
                averaged, src = True, src.args[0]
            else:
                break
        if src is None or getattr(src, "op", None) != "call_module":
            continue
        if not isinstance(qmodel.get_submodule(src.target), qnn.QuantReLU):
            continue
        _replace(qmodel, node.target, qnn.QuantIdentity(act_quant=uact_q, return_quant_tensor=True)
                 if averaged and uact_q is not None else nn.Identity())


_ADDS = ("add", "add_", "iadd")


def _quant_source(qmodel, node):
    """The call of the quantizer that last set ``node``'s values, through value-preserving moves."""
    while getattr(node, "op", None) == "call_module" and _node_kind(qmodel, node) in ("Identity", "Dropout"):
        node = node.args[0]
    return node if getattr(node, "op", None) == "call_module" else None


class _NarrowerIntScaling(nn.Module):
    """The integer threshold of one bit less: a ``b + 1``-bit quantizer sharing a ``b``-bit
    quantizer's scaling gets the same scale (Brevitas divides the shared statistic by it)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, bit_width: torch.Tensor) -> torch.Tensor:
        return self.inner(bit_width - 1)


def _signed_residuals(qmodel, qnn, wide_q) -> None:
    """Residual Adds whose inputs carry different integer types get one signed type on both.

    Brevitas aligns the scales of an Add's inputs: where one input is a ReLU's unsigned output
    (an identity shortcut) and the other a signed requantizer, the two share one scale but
    not one type (UINT``b`` and INT``b``), and FINN streams an Add only when both inputs have
    the same type (``InferAddStreamsLayer``). Here the signed requantizer becomes ``b + 1``
    bits with the same shared scale (``wide_q`` with the shared statistic and the integer
    threshold of ``b`` bits, so the same scale) and is called on the shortcut too: the ReLU's
    values 0 .. 2**b - 1 are exactly representable in INT``b+1``, so the shortcut is unchanged
    and the other input loses no range. Adds whose inputs already share a quantizer are left."""
    for node in list(qmodel.graph.nodes):
        name = getattr(node.target, "__name__", str(node.target))
        if node.op not in ("call_function", "call_method") or name not in _ADDS or len(node.args) != 2:
            continue
        sources = [_quant_source(qmodel, a) for a in node.args]
        if any(s is None for s in sources) or sources[0].target == sources[1].target:
            continue
        mods = [qmodel.get_submodule(s.target) for s in sources]
        signed = [i for i, m in enumerate(mods) if isinstance(m, qnn.QuantIdentity) and m.act_quant.is_signed]
        if len(signed) != 1:
            continue
        k = signed[0]
        shared, other = mods[k], mods[1 - k]
        if not isinstance(other, (qnn.QuantReLU, qnn.QuantIdentity)) or other.act_quant.is_signed:
            continue
        tensor_quant = shared.act_quant.fused_activation_quant_proxy.tensor_quant
        if other.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl is not tensor_quant.scaling_impl:
            continue  # not one shared scale: not the pattern Brevitas makes
        _replace(qmodel, sources[k].target, qnn.QuantIdentity(
            act_quant=wide_q.let(scaling_impl=tensor_quant.scaling_impl,
                                 int_scaling_impl=_NarrowerIntScaling(tensor_quant.int_scaling_impl)),
            return_quant_tensor=True))
        with qmodel.graph.inserting_before(node):
            requant = qmodel.graph.call_module(sources[k].target, args=(node.args[1 - k],))
        node.args = tuple(requant if i == 1 - k else a for i, a in enumerate(node.args))
        log.debug("residual %s: both inputs signed at the shared scale via %s", node.name, sources[k].target)
    qmodel.graph.lint()
    qmodel.recompile()


def _input_quant_node(qmodel):
    placeholders = [n for n in qmodel.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ExportError(f"the model takes {len(placeholders)} inputs; export needs exactly one")
    users = [u for u in placeholders[0].users if u.op == "call_module"]
    return users[0] if len(users) == 1 else None


def _set_input_quant(qmodel, module: nn.Module) -> None:
    node = _input_quant_node(qmodel)
    if node is not None and type(qmodel.get_submodule(node.target)).__name__ == "QuantIdentity":
        _replace(qmodel, node.target, module)


def _output_node(qmodel):
    out = next(n for n in qmodel.graph.nodes if n.op == "output")
    arg = out.args[0]
    return arg if getattr(arg, "op", None) == "call_module" else None


def _drop_output_quant(qmodel, qnn) -> None:
    node = _output_node(qmodel)
    if node is None or not isinstance(qmodel.get_submodule(node.target), qnn.QuantIdentity):
        return
    _replace(qmodel, node.target, nn.Identity())
    producer = node.args[0]
    if getattr(producer, "op", None) == "call_module":
        layer = qmodel.get_submodule(producer.target)
        if hasattr(layer, "return_quant_tensor"):
            layer.return_quant_tensor = False


def _set_output_quant(qmodel, module: nn.Module) -> None:
    node = _output_node(qmodel)
    if node is not None and type(qmodel.get_submodule(node.target)).__name__ == "QuantIdentity":
        _replace(qmodel, node.target, module)


def _replace(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, child = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _fine_tune(qmodel: nn.Module, data: tuple[np.ndarray, np.ndarray], epochs: int, lr: float,
               seed: int) -> None:
    x, y = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(qmodel.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    qmodel.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            order = torch.randperm(xt.shape[0], generator=gen)
            for start in range(0, xt.shape[0], 64):
                idx = order[start : start + 64]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(qmodel(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
    qmodel.eval()


def output_step(qmodel: nn.Module, sample: np.ndarray) -> float | None:
    """The quantization step of the model's output: the output quantizer's scale, or, when
    the logits are left unquantized, the last layer's accumulator scale (input x weight)."""
    node = _output_node(qmodel)
    if node is None:
        return None
    module = qmodel.get_submodule(node.target)
    found: dict[str, Any] = {}
    if isinstance(module, nn.Identity) and getattr(node.args[0], "op", None) == "call_module":
        layer = qmodel.get_submodule(node.args[0].target)

        def hook(mod, inputs):
            scale = getattr(inputs[0], "scale", None)
            if scale is not None:
                found["in"] = scale.detach()

        handle = layer.register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                qmodel(torch.from_numpy(sample[:1]))
        finally:
            handle.remove()
        if "in" not in found or not hasattr(layer, "weight_quant"):
            return None
        with torch.no_grad():
            w_scale = layer.weight_quant.scale()
        return float((found["in"].reshape(-1).max() * w_scale.reshape(-1)).max())
    act_quant = getattr(module, "act_quant", None)
    if act_quant is not None:
        with torch.no_grad():
            return float(act_quant.scale().reshape(-1).max())
    return None

