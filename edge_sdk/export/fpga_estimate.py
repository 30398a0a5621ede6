"""FPGA resource estimate of a model as a FINN-style streaming dataflow design.

Every Conv / Linear layer becomes one matrix-vector-activation unit (MVAU) with a matrix of
``MW = C_in/groups x kernel`` columns and ``MH = C_out`` rows, folded onto ``PE`` rows and
``SIMD`` columns computed per clock; it needs ``(MH/PE) x (MW/SIMD) x positions`` cycles per
frame. The LUT, BRAM18 and DSP formulas are FINN's (FINN-R, Blott et al. 2018, as in FINN's
``MatrixVectorActivation`` estimates):

* LUT = 300 + 1.1 x PE x (mult + adder tree + accumulator + thresholds + comparators) + c2,
  with mult = SIMD x (2 ceil((W+A)/6) - 1) x (W+A) for LUT multipliers (0 on DSPs),
  adder tree = (W+A)(2 SIMD - 1), accumulator = acc_bits (FINN's minimum-accumulator bound
  ``ceil(a + log2(1 + 2^-a) + 1)``, ``a = log2 MW + W + A - 1 - signed(A)``, at most 32),
  thresholds = (2^B - 1) acc_bits ceil(TMEM/64), comparators = (2^B - 1) acc_bits
  (``B`` the output activation bits, none for the last layer), and c2 = PE SIMD W ceil(WMEM/64)
  when the weight memory is small enough (WMEM <= 128 words) to live in LUTRAM;
* BRAM18 from the weight memory of ``WMEM = MW MH / (PE SIMD)`` words of ``PE SIMD W`` bits
  (FINN's RAMB18 aspect-ratio table), none when it is in LUTRAM;
* DSP = PE x SIMD x ceil((W+A)/48) when multipliers are on DSPs, else 0.

Further assumptions (all listed in ``FpgaEstimate.assumptions``): multipliers go to LUTs when
``W + A <= 8`` and to DSPs above (``mult_style="auto"``); convolutions add a sliding-window
generator with a line buffer of ``kernel_h x W_in x C_in x A`` bits (BRAM18 when over 1 kbit,
else LUTRAM) and 300 LUTs of control; residual adds, pooling and FIFOs are not modelled;
flip-flops are not estimated (FINN gives no MVAU FF model), so the FF budget is not checked.
Folding: ``"minimal"`` (PE = SIMD = 1), ``"full"`` (PE = MH, SIMD = MW, fully unrolled), an
integer target of cycles per frame (SIMD raised first, then PE, over their divisors, like
FINN's SetFolding), or ``"auto"``: the fastest power-of-two cycle target that fits.

Zero weights (FIARSE masks): with ``zero_weights="count"`` (default) every weight is stored
and multiplied, as in any folded design; ``"skip"`` applies only to fully unrolled layers
(PE = MH and SIMD = MW), where each weight is a constant wired into its own multiplier: a zero
weight then costs no multiplier LUT/DSP and no storage. Sparsity is reported either way.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from edge_sdk.errors import HardwareProfileError, InvalidInputError
from edge_sdk.export._target import load_profile

__all__ = ["LayerShape", "LayerEstimate", "FpgaEstimate", "estimate_fpga", "model_layers", "FOLDINGS"]

FOLDINGS = ("auto", "minimal", "full")
CHECKED = ("lut", "bram18k", "uram", "dsp")
_SWG_LUTS = 300
_C0, _C1 = 300, 1.1


@dataclass
class LayerShape:
    """One matrix-vector layer: ``mh x mw`` weights applied at ``positions`` output positions."""

    name: str
    kind: str
    mw: int
    mh: int
    positions: int
    weights: int
    zero_weights: int
    kernel: tuple[int, ...] = ()
    in_channels: int = 0
    in_width: int = 0  # input row length (conv line buffer), 0 for Linear


@dataclass
class LayerEstimate:
    name: str
    kind: str
    mw: int
    mh: int
    positions: int
    pe: int
    simd: int
    cycles: int
    macs: int
    nonzero_macs: int
    weights: int
    zero_weights: int
    in_bits: int
    out_bits: int | None
    acc_bits: int
    mult_style: str
    lut: int
    bram18k: int
    dsp: int
    uram: int = 0


@dataclass
class FpgaEstimate:
    """Totals, per-layer numbers and the budget check of :func:`estimate_fpga`."""

    target: str
    part: str
    clock_mhz: float
    weight_bits: int
    act_bits: int
    input_bits: int
    folding: str
    zero_weights: str
    macs: int
    nonzero_macs: int
    bops: int
    weight_memory_bits: int
    nonzero_weight_memory_bits: int
    weights: int
    zero_weights_count: int
    sparsity: float
    needed: dict[str, int]
    available: dict[str, int]
    fits: bool
    over_budget: list[str]
    cycles_per_frame: int
    latency_cycles: int
    fps: float
    bits_supported: bool
    layers: list[LayerEstimate] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def budget_line(self) -> str:
        """``lut 12,345/37,240, bram18k 10/224, ...`` (needed/available)."""
        return ", ".join(f"{r} {self.needed[r]:,}/{self.available[r]:,}" for r in CHECKED)


# ---------------------------------------------------------------------------- layer shapes


def model_layers(model_or_path: Any, input_shape: tuple[int, ...] | None = None) -> list[LayerShape]:
    """The Conv / Linear layers of a torch model (traced with one zero input), an ONNX
    file, or a list of :class:`LayerShape` already extracted (returned as is)."""
    if isinstance(model_or_path, nn.Module):
        return _torch_layers(model_or_path, input_shape)
    if isinstance(model_or_path, list) and all(isinstance(l, LayerShape) for l in model_or_path):
        return list(model_or_path)
    if isinstance(model_or_path, (str, os.PathLike, onnx.ModelProto)):
        return _onnx_layers(model_or_path)
    raise InvalidInputError(
        f"model_or_path is a {type(model_or_path).__name__}; expected an nn.Module or an ONNX path"
    )


def _torch_layers(model: nn.Module, input_shape: tuple[int, ...] | None) -> list[LayerShape]:
    shape = input_shape or getattr(getattr(model, "config", None), "input_shape", None)
    if shape is None:
        raise InvalidInputError("input_shape is needed for a model without .config.input_shape")
    zeros = {name: (int((m.weight == 0).sum()), m.weight.numel())
             for name, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))}
    # (a weightless trace on the meta device was measured slower than one real forward)
    return _trace_layers(model, shape, "cpu", zeros)


def _trace_layers(model: nn.Module, shape, device: str, zeros) -> list[LayerShape]:
    layers: list[LayerShape] = []
    hooks = []

    def make_hook(name: str):
        def hook(mod, inputs, output):
            n_zero, n_weights = zeros[name]
            if isinstance(mod, nn.Linear):
                positions = int(np.prod(output.shape[1:-1])) if output.dim() > 2 else 1
                layers.append(LayerShape(name, "Linear", mod.in_features, mod.out_features, positions,
                                         n_weights, n_zero))
            else:
                kernel = tuple(int(k) for k in mod.kernel_size)
                positions = int(np.prod(output.shape[2:]))
                c_in = int(mod.in_channels)
                layers.append(LayerShape(
                    name, type(mod).__name__, c_in // mod.groups * int(np.prod(kernel)),
                    int(mod.out_channels), positions, n_weights, n_zero, kernel, c_in,
                    int(inputs[0].shape[-1])))
        return hook

    for name, mod in model.named_modules():
        if name in zeros:
            hooks.append(mod.register_forward_hook(make_hook(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device))
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(f"input shape {tuple(shape)} does not fit the model: {first}") from exc
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return layers


_PASS_THROUGH = ("Quant", "DequantizeLinear", "QuantizeLinear", "Clip", "Identity", "Cast", "BipolarQuant")


def _stored(w: np.ndarray, quant: onnx.NodeProto, inits) -> np.ndarray:
    """``w`` as the integers ``quant`` (a QONNX ``Quant`` or a ``QuantizeLinear``) maps it to,
    less the zero point, so a weight rounded to zero counts as zero."""
    const = lambda i: numpy_helper.to_array(inits[quant.input[i]]).astype(np.float64) \
        if len(quant.input) > i and quant.input[i] in inits else None  # noqa: E731
    scale = const(1)
    if scale is None:
        return w
    if quant.op_type == "QuantizeLinear" and scale.ndim == 1 and w.ndim > 1:  # per-axis on axis 0
        scale = scale.reshape(-1, *([1] * (w.ndim - 1)))
    # with an integer zero point z, round(w/s + z) - z == round(w/s); clipping never makes 0
    return np.round(w.astype(np.float64) / scale)


def _onnx_layers(source: Any) -> list[LayerShape]:
    model = source if isinstance(source, onnx.ModelProto) else onnx.load(os.fspath(source))
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - custom ops: keep whatever value_info the file has
        pass
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    shapes = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def weight(name: str):
        """The weight as its quantizer stores it (zeros where quantization rounds to 0)."""
        seen, quant = 0, None
        while name not in inits and seen < 6:
            n = producer.get(name)
            if n is None or n.op_type not in _PASS_THROUGH:
                return None
            if quant is None and n.op_type in ("Quant", "QuantizeLinear"):
                quant = n
            name, seen = n.input[0], seen + 1
        if name not in inits:
            return None
        w = numpy_helper.to_array(inits[name])
        return _stored(w, quant, inits) if quant is not None and w.dtype.kind == "f" else w

    weight_index = {"Conv": 1, "ConvInteger": 1, "Gemm": 1, "MatMul": 1, "MatMulInteger": 1,
                    "QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3}
    layers: list[LayerShape] = []
    for n in g.node:
        if n.op_type not in weight_index:
            continue
        w = weight(n.input[weight_index[n.op_type]])
        if w is None:
            continue  # activation x activation MatMul (attention): no weight memory
        out = shapes.get(n.output[0])
        if n.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            groups = next((a.i for a in n.attribute if a.name == "group"), 1)
            kernel = tuple(int(k) for k in w.shape[2:])
            if not out or any(d is None for d in out[2:]):
                raise InvalidInputError(f"cannot infer the output shape of node {n.name or n.op_type}")
            x_shape = shapes.get(n.input[0]) or []
            layers.append(LayerShape(n.name or n.output[0], "Conv", int(w.shape[1] * np.prod(kernel)),
                                     int(w.shape[0]), int(np.prod(out[2:])), int(w.size),
                                     int((w == 0).sum()), kernel, int(w.shape[1]) * groups,
                                     int(x_shape[-1] or 0) if x_shape else 0))
        else:
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            k, m = (w.shape[1], w.shape[0]) if trans_b else (w.shape[0], w.shape[-1])
            positions = int(np.prod([d or 1 for d in out[1:-1]])) if out and len(out) > 2 else 1
            layers.append(LayerShape(n.name or n.output[0], "Linear", int(k), int(m), positions,
                                     int(w.size), int((w == 0).sum())))
    return layers


# ----------------------------------------------------------------------------- estimates


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _fold_for_target(layer: LayerShape, target_cycles: float) -> tuple[int, int]:
    """Smallest parallelism reaching ``target_cycles``: SIMD first, then PE (FINN SetFolding)."""
    pe, simd = 1, 1
    for simd in _divisors(layer.mw):
        if (layer.mh // pe) * (layer.mw // simd) * layer.positions <= target_cycles:
            return pe, simd
    simd = layer.mw
    for pe in _divisors(layer.mh):
        if (layer.mh // pe) * (layer.mw // simd) * layer.positions <= target_cycles:
            return pe, simd
    return layer.mh, layer.mw


def _acc_bits(mw: int, w: int, a: int, signed_input: bool) -> int:
    alpha = math.log2(max(mw, 1)) + w + a - 1 - int(signed_input)
    return int(min(32, math.ceil(alpha + math.log2(1 + 2 ** -alpha) + 1)))


def _bram18(wmem: int, mem_width: int) -> int:
    if mem_width == 1:
        return math.ceil(wmem / 16384)
    if mem_width == 2:
        return math.ceil(wmem / 8192)
    if mem_width <= 4:
        return math.ceil(wmem / 4096) * math.ceil(mem_width / 4)
    if mem_width <= 9:
        return math.ceil(wmem / 2048) * math.ceil(mem_width / 9)
    if mem_width <= 18 or wmem > 512:
        return math.ceil(wmem / 1024) * math.ceil(mem_width / 18)
    return math.ceil(wmem / 512) * math.ceil(mem_width / 36)


def _layer_estimate(layer: LayerShape, pe: int, simd: int, w: int, a: int, signed_in: bool,
                    out_bits: int | None, mult_style: str, zero_policy: str) -> LayerEstimate:
    mw, mh = layer.mw, layer.mh
    wmem = mw * mh // (pe * simd)
    tmem = mh // pe
    unrolled = pe == mh and simd == mw
    nonzero_frac = 1.0 - layer.zero_weights / layer.weights if layer.weights else 1.0
    skip = zero_policy == "skip" and unrolled
    style = mult_style if mult_style != "auto" else ("lut" if w + a <= 8 else "dsp")
    acc = _acc_bits(mw, w, a, signed_in)
    mult = 0 if style == "dsp" else simd * (2 * math.ceil((w + a) / 6) - 1) * (w + a)
    if skip:
        mult = mult * nonzero_frac
    adder = (w + a) * (2 * simd - 1)
    thr = comp = 0
    if out_bits is not None:
        thr = (2 ** out_bits - 1) * acc * math.ceil(tmem / 64)
        comp = (2 ** out_bits - 1) * acc
    c2 = 0
    bram = 0
    stored_bits_frac = nonzero_frac if skip else 1.0
    if wmem <= 128:
        c2 = pe * simd * w * math.ceil(wmem / 64) * stored_bits_frac
    else:
        bram = _bram18(wmem, pe * simd * w)
    lut = _C0 + _C1 * pe * (mult + adder + acc + thr + comp) + c2
    dsp = pe * simd * math.ceil((w + a) / 48) if style == "dsp" else 0
    if skip:
        dsp = math.ceil(dsp * nonzero_frac)
    if layer.kernel and len(layer.kernel) >= 1 and np.prod(layer.kernel) > 1:
        # sliding-window generator: line buffer of kernel_h rows of the input
        buffer_bits = layer.kernel[0] * max(layer.in_width, 1) * layer.in_channels * a
        lut += _SWG_LUTS
        if buffer_bits > 1024:
            bram += math.ceil(buffer_bits / (18 * 1024))
        else:
            lut += math.ceil(buffer_bits / 64)
    macs = mw * mh * layer.positions
    return LayerEstimate(
        name=layer.name, kind=layer.kind, mw=mw, mh=mh, positions=layer.positions, pe=pe, simd=simd,
        cycles=(mh // pe) * (mw // simd) * layer.positions, macs=macs,
        nonzero_macs=int(round(macs * nonzero_frac)), weights=layer.weights,
        zero_weights=layer.zero_weights, in_bits=a, out_bits=out_bits, acc_bits=acc,
        mult_style=style, lut=int(math.ceil(lut)), bram18k=int(bram), dsp=int(dsp),
    )


def _fpga_spec(target: Any):
    profile = load_profile(target)
    if profile is None:
        raise InvalidInputError("target is required: a hardware-profile name, path or profile")
    if getattr(profile, "fpga", None) is None:
        raise HardwareProfileError(
            f"target '{profile.name}' is a {profile.kind} profile without an [fpga] section; "
            f"FPGA estimates need an FPGA profile (e.g. pynq-z2)"
        )
    return profile


def estimate_fpga(
    model_or_path: Any,
    target: Any,
    *,
    weight_bits: int = 4,
    act_bits: int = 4,
    input_bits: int = 8,
    folding: str | int | dict[str, tuple[int, int]] = "auto",
    zero_weights: str = "count",
    mult_style: str = "auto",
    input_shape: tuple[int, ...] | None = None,
) -> FpgaEstimate:
    """Estimate MACs, weight memory, BOPs and LUT / BRAM18 / DSP of ``model_or_path`` on ``target``.

    ``model_or_path``: a torch model (input shape from ``model.config`` or ``input_shape``) or
    an ONNX file (float, QONNX, QCDQ or int8). ``target``: a hardware-profile name, path or
    profile with an ``[fpga]`` section; its budget is each resource x its utilisation limit.
    ``folding``, ``zero_weights`` and the formulas: see the module docstring; the estimate's
    ``assumptions`` list repeats them with the numbers used. BOPs = MACs x W x A.
    """
    for name, value, low, high in (("weight_bits", weight_bits, 1, 16), ("act_bits", act_bits, 1, 16),
                                   ("input_bits", input_bits, 1, 16)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidInputError(f"{name}={value!r} is out of range; expected an integer from {low} to {high}")
    if zero_weights not in ("count", "skip"):
        raise InvalidInputError(f"zero_weights={zero_weights!r} is not accepted; expected count or skip")
    if mult_style not in ("auto", "lut", "dsp"):
        raise InvalidInputError(f"mult_style={mult_style!r} is not accepted; expected auto, lut or dsp")
    if not (folding in FOLDINGS or isinstance(folding, dict)
            or (isinstance(folding, int) and not isinstance(folding, bool) and folding >= 1)):
        raise InvalidInputError(
            f"folding={folding!r} is not accepted; expected auto, minimal, full, a cycle target >= 1 "
            f"or a {{layer: (PE, SIMD)}} dict"
        )
    profile = _fpga_spec(target)
    fpga = profile.fpga
    layers = model_layers(model_or_path, input_shape)
    if not layers:
        raise InvalidInputError("the model has no Conv or Linear layer to estimate")
    available = {r: fpga.usable(r) for r in CHECKED}

    def build(mode: Any) -> list[LayerEstimate]:
        out = []
        for i, layer in enumerate(layers):
            if isinstance(mode, dict):
                if layer.name not in mode:
                    raise InvalidInputError(f"folding has no (PE, SIMD) for layer '{layer.name}'")
                pe, simd = mode[layer.name]
                if layer.mh % pe or layer.mw % simd:
                    raise InvalidInputError(
                        f"layer '{layer.name}': PE={pe} must divide MH={layer.mh} and SIMD={simd} "
                        f"must divide MW={layer.mw}")
            elif mode == "minimal":
                pe, simd = 1, 1
            elif mode == "full":
                pe, simd = layer.mh, layer.mw
            else:
                pe, simd = _fold_for_target(layer, float(mode))
            a = input_bits if i == 0 else act_bits
            out_bits = act_bits if i < len(layers) - 1 else None
            out.append(_layer_estimate(layer, pe, simd, weight_bits, a, i == 0, out_bits,
                                       mult_style, zero_weights))
        return out

    def totals(ests: list[LayerEstimate]) -> dict[str, int]:
        return {"lut": sum(e.lut for e in ests), "bram18k": sum(e.bram18k for e in ests),
                "uram": 0, "dsp": sum(e.dsp for e in ests)}

    def fits(need: dict[str, int]) -> bool:
        return all(need[r] <= available[r] for r in CHECKED)

    if folding == "auto":
        slowest = max(l.mh * l.mw * l.positions for l in layers)
        chosen = build("minimal")
        label = "auto: minimal (PE=SIMD=1)"
        target_cycles = 2 ** math.ceil(math.log2(slowest))
        while target_cycles >= 1:
            ests = build(target_cycles)
            if not fits(totals(ests)):
                break
            chosen, label = ests, f"auto: {target_cycles} cycles/frame target"
            if max(e.cycles for e in ests) <= min(l.positions for l in layers):
                break
            target_cycles //= 2
        ests = chosen
    else:
        ests = build(folding)
        label = folding if isinstance(folding, str) else (
            f"{folding} cycles/frame target" if isinstance(folding, int) else "explicit (PE, SIMD)")
    need = totals(ests)
    over = [r for r in CHECKED if need[r] > available[r]]
    n_weights = sum(l.weights for l in layers)
    n_zero = sum(l.zero_weights for l in layers)
    macs = sum(e.macs for e in ests)
    cycles = max(e.cycles for e in ests)
    assumptions = [
        "FINN dataflow: one MVAU per Conv/Linear layer, layers pipelined; throughput = clock / slowest layer's cycles",
        "LUT/BRAM18/DSP per MVAU from FINN's estimates (FINN-R constants c0=300, c1=1.1)",
        f"first layer input {input_bits}-bit signed, other inputs {act_bits}-bit unsigned (after ReLU)",
        "every layer but the last ends in a threshold unit of its output bits; the last has none",
        "weights in LUTRAM when WMEM <= 128 words, else BRAM18 (RAMB18 aspect-ratio table)",
        f"multipliers: {mult_style} (auto = LUTs when W+A <= 8, DSPs above)",
        "convolutions add a sliding-window generator: 300 LUTs + a kernel_h-row line buffer (BRAM18 if > 1 kbit)",
        "residual adds, pooling, FIFOs and data-width converters are not modelled; FF is not estimated or checked",
        f"folding: {label}",
        f"zero weights: {zero_weights}" + (
            " (a fully unrolled layer spends no multiplier or storage on a zero weight)" if zero_weights == "skip"
            else " (stored and multiplied like any weight, as in every folded design)"),
        f"budget = part totals x utilisation limit ({fpga.part})",
    ]
    return FpgaEstimate(
        target=profile.name, part=fpga.part, clock_mhz=fpga.clock_mhz, weight_bits=weight_bits,
        act_bits=act_bits, input_bits=input_bits, folding=label, zero_weights=zero_weights,
        macs=macs, nonzero_macs=sum(e.nonzero_macs for e in ests),
        bops=sum(e.macs * weight_bits * e.in_bits for e in ests),
        weight_memory_bits=n_weights * weight_bits,
        nonzero_weight_memory_bits=(n_weights - n_zero) * weight_bits,
        weights=n_weights, zero_weights_count=n_zero,
        sparsity=n_zero / n_weights if n_weights else 0.0,
        needed=need, available=available, fits=not over, over_budget=over,
        cycles_per_frame=cycles, latency_cycles=sum(e.cycles for e in ests),
        fps=fpga.clock_mhz * 1e6 / cycles,
        bits_supported=fpga.supports(weight_bits, act_bits),
        layers=ests, assumptions=assumptions,
    )
