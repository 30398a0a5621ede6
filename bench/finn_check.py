"""FINN check: do our ``--flow finn`` QONNX files go through FINN's front end as they are?

FINN is not on the package index; give the path of a FINN checkout you have (its ``src/``
holds the ``finn`` package) and of the qonnx checkout at the commit FINN's
``fetch-repos.sh`` names. This script never copies their code: it builds a separate virtual
environment with FINN's own pins (read from its ``requirements.txt``), installs that qonnx
into it, puts FINN's ``src`` on its path, and runs there, for cnn1d and resnet8 exported
here with ``flow="finn"``, the steps a FINN user runs:

  ConvertQONNXtoFINN (+ tidy-up) -> streamlining -> conversion to HW layers ->
  CreateDataflowPartition

with the transforms of FINN's builder (``build_dataflow_steps``: step_qonnx_to_finn,
step_tidy_up, step_streamline, step_convert_to_hw) for plain networks, and of FINN's ResNet
build (finn-examples ``build/resnet50/custom_steps.py``: MoveLinearPastEltwiseAdd /
MoveLinearPastFork streamlining, AddStreams and DuplicateStreams for the residual) for a
graph with a residual Add; see ``RECIPES`` and the CHILD code. It checks after each step that
the graph's outputs equal QONNX execution of the exported file (in output quantization
steps) and, at the end, that one dataflow partition holds every layer. No Vivado is needed:
HW layers run in FINN's Python execution (pyverilator is stubbed).

    python bench/finn_check.py --finn-src PATH --qonnx-src PATH [--venv PATH]
                               [--weight-bits 4] [--act-bits 4]
    (or EDGE_SDK_FINN_SRC, EDGE_SDK_QONNX_SRC, EDGE_SDK_FINN_VENV)

Writes ``finn_check.md`` and ``finn_check.json`` next to this file (``--out`` to change).
Exit status 0 when both models pass, 1 when a check fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine_info, machine_markdown  # noqa: E402 - bench/machine.py
MODELS = ("cnn1d", "resnet8")
# FINN's pins that its front end imports (the rest of its requirements are tooling)
NEEDED = ("numpy", "onnx", "onnxruntime", "protobuf", "bitstring", "clize", "sigtools", "toposort",
          "scipy", "psutil", "onnxoptimizer", "importlib-resources", "dataclasses-json")

# runs inside FINN's environment: argv = work dir; reads <model>.onnx / .x.npy / .ref.npy
CHILD = r'''
import json, sys, traceback, warnings
import numpy as np
warnings.simplefilter("ignore")
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
from qonnx.transformation.double_to_single_float import DoubleToSingleFloat
from qonnx.transformation.general import (ConvertDivToMul, ConvertSubToAdd, GiveReadableTensorNames,
                                          GiveUniqueNodeNames, RemoveUnusedTensors, SortGraph)
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
from qonnx.transformation.remove import RemoveIdentityOps
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.general import RemoveStaticGraphInputs
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model
import finn.transformation.fpgadataflow.convert_to_hw_layers as to_hw
from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
from finn.transformation.qonnx.quant_act_to_multithreshold import default_filter_function_generator
from finn.transformation.streamline import Streamline
from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
from finn.transformation.streamline.absorb import (Absorb1BitMulIntoConv, Absorb1BitMulIntoMatMul,
    AbsorbAddIntoMultiThreshold, AbsorbConsecutiveTransposes, AbsorbMulIntoMultiThreshold,
    AbsorbScalarMulAddIntoTopK, AbsorbSignBiasIntoMultiThreshold, AbsorbTransposeIntoMultiThreshold,
    FactorOutMulSignMagnitude)
from finn.transformation.streamline.collapse_repeated import CollapseRepeatedAdd, CollapseRepeatedMul
from finn.transformation.streamline.reorder import (MoveAddPastConv, MoveAddPastMul, MoveLinearPastEltwiseAdd,
    MoveLinearPastFork, MoveMaxPoolPastMultiThreshold, MoveScalarAddPastMatMul, MoveScalarLinearPastInvariants,
    MoveScalarMulPastConv, MoveScalarMulPastMatMul)
from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
from finn.transformation.streamline.sign_to_thres import ConvertSignToThres

work = sys.argv[1]
names = sys.argv[2].split(",")
# FINN's builder converts Quant nodes up to DataflowBuildConfig.max_multithreshold_bit_width bits
# (default 8); a user exporting wider activations (residual requantizers: act_bits + 1) raises it
MAX_THRESHOLD_BITS = int(sys.argv[3])


def run(model, x):
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    shape = model.get_tensor_shape(iname)
    outs = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        if list(xi.shape) != list(shape):  # NHWC after streamlining
            xi = np.transpose(xi, (0, 2, 3, 1)) if len(shape) == 4 else xi.reshape(shape)
        outs.append(np.asarray(execute_onnx(model, {iname: xi})[oname]).reshape(1, -1))
    return np.concatenate(outs)


def is_residual(model):
    # an Add of two computed tensors (a skip connection), not of a tensor and a constant
    return any(n.op_type == "Add" and all(model.get_initializer(i) is None for i in n.input)
               for n in model.graph.node)


# --- FINN's builder steps (src/finn/builder/build_dataflow_steps.py), transform for transform ----
# (that module imports torchvision and brevitas_examples through finn.util.test, so its step
# functions are not imported; these are their bodies at the default DataflowBuildConfig)
def front_end(model):  # step_qonnx_to_finn, step_tidy_up
    model = cleanup_model(model)
    model = model.transform(ConvertQONNXtoFINN(
        filter_function=default_filter_function_generator(max_multithreshold_bit_width=MAX_THRESHOLD_BITS)))
    for t in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(), GiveReadableTensorNames(), InferDataTypes(),
              RemoveStaticGraphInputs()):
        model = model.transform(t)
    return model


def builder_streamline(model):  # step_streamline
    model = model.transform(AbsorbSignBiasIntoMultiThreshold())
    model = model.transform(Streamline())
    if model.get_nodes_by_op_type("Conv"):
        for t in (LowerConvsToMatMul(), MakeMaxPoolNHWC(), AbsorbTransposeIntoMultiThreshold(), MakeMaxPoolNHWC(),
                  AbsorbConsecutiveTransposes()):
            model = model.transform(t)
    for t in (ConvertBipolarMatMulToXnorPopcount(), Streamline(), AbsorbScalarMulAddIntoTopK(), InferDataLayouts(),
              RemoveUnusedTensors()):
        model = model.transform(t)
    return model


def builder_hw(model):  # step_convert_to_hw (standalone_thresholds=False)
    for t in (to_hw.InferBinaryMatrixVectorActivation(), to_hw.InferQuantizedMatrixVectorActivation(),
              to_hw.InferLabelSelectLayer(), to_hw.InferThresholdingLayer()):
        model = model.transform(t)
    if model.get_nodes_by_op_type("Im2Col"):
        for t in (to_hw.InferConvInpGen(), to_hw.InferStreamingMaxPool(), RemoveCNVtoFCFlatten()):
            model = model.transform(t)
    for t in (AbsorbConsecutiveTransposes(), GiveUniqueNodeNames(), InferDataLayouts()):
        model = model.transform(t)
    return model


# --- FINN's residual-network build: finn-examples build/resnet50/custom_steps.py -----------------
# step_resnet50_streamline (linear + non-linear streamlining, four rounds) and
# step_resnet50_convert_to_hls (AddStreams for the residual Add, lowering, DuplicateStreams for
# the fork), the recipe FINN gives for ResNets; see finn_check.md for the one addition.
RESNET_LINEAR = (AbsorbScalarMulAddIntoTopK, ConvertSubToAdd, ConvertDivToMul, RemoveIdentityOps, CollapseRepeatedMul,
                 BatchNormToAffine, ConvertSignToThres, MoveAddPastMul, MoveScalarAddPastMatMul, MoveAddPastConv,
                 MoveScalarMulPastMatMul, MoveScalarMulPastConv, MoveScalarLinearPastInvariants, MoveAddPastMul,
                 CollapseRepeatedAdd, CollapseRepeatedMul, AbsorbAddIntoMultiThreshold, FactorOutMulSignMagnitude,
                 MoveMaxPoolPastMultiThreshold, AbsorbMulIntoMultiThreshold, Absorb1BitMulIntoMatMul,
                 Absorb1BitMulIntoConv, RoundAndClipThresholds)
RESNET_NONLINEAR = (MoveLinearPastEltwiseAdd, MoveLinearPastFork)
RESNET_TO_HW = (to_hw.InferAddStreamsLayer, LowerConvsToMatMul, to_hw.InferChannelwiseLinearLayer, to_hw.InferPool,
                AbsorbTransposeIntoMultiThreshold, RoundAndClipThresholds, to_hw.InferQuantizedMatrixVectorActivation,
                to_hw.InferThresholdingLayer, AbsorbConsecutiveTransposes, to_hw.InferConvInpGen,
                to_hw.InferDuplicateStreamsLayer, to_hw.InferLabelSelectLayer)


def resnet_streamline(model):
    model = model.transform(AbsorbSignBiasIntoMultiThreshold())  # as FINN's step_streamline starts
    for _ in range(4):
        for group in (RESNET_LINEAR, RESNET_NONLINEAR):
            for t in group:
                model = model.transform(t()).transform(GiveUniqueNodeNames())
        for t in (RemoveUnusedTensors(), GiveReadableTensorNames(), InferDataTypes(), SortGraph()):
            model = model.transform(t)
    return model.transform(DoubleToSingleFloat())


def resnet_hw(model):
    model = model.transform(InferDataLayouts()).transform(DoubleToSingleFloat())
    model = model.transform(InferDataTypes()).transform(SortGraph())
    for t in RESNET_TO_HW:
        if t is to_hw.InferQuantizedMatrixVectorActivation:
            # addition: GlobalAveragePool -> GlobalAccPool + Mul(1/pixels), that Mul streamlined
            # into the classifier's thresholds (as FINN's test_convert_to_hw_layers_synthetic does)
            model = model.transform(to_hw.InferGlobalAccPoolLayer())
            model = model.transform(InferDataLayouts()).transform(InferDataTypes())
            model = resnet_streamline(model)
        model = model.transform(t())
        for u in (InferDataLayouts(), GiveUniqueNodeNames(), InferDataTypes()):
            model = model.transform(u)
    for t in (RemoveCNVtoFCFlatten(), GiveReadableTensorNames(), RemoveUnusedTensors(), SortGraph()):
        model = model.transform(t)
    return model


results = {}
for name in names:
    x = np.load(f"{work}/{name}.x.npy")
    ref = np.load(f"{work}/{name}.ref.npy")
    step = float(json.load(open(f"{work}/{name}.json"))["output_step"])
    res = {"steps": []}
    try:
        model = ModelWrapper(f"{work}/{name}.onnx")
        recipe = {"builder": (builder_streamline, builder_hw), "resnet": (resnet_streamline, resnet_hw)}
        for label in ("ConvertQONNXtoFINN", "Streamline", "convert_to_hw_layers"):
            if label == "ConvertQONNXtoFINN":
                fn = front_end
            else:  # the recipe a FINN user takes for this graph, chosen once after the front end
                res.setdefault("recipe", "resnet" if is_residual(model) else "builder")
                fn = recipe[res["recipe"]][label == "convert_to_hw_layers"]
            model = fn(model)
            got = run(model, x)
            diff = float(np.max(np.abs(got - ref)))
            ops = sorted({n.op_type for n in model.graph.node})
            res["steps"].append({"step": label, "max_abs_diff": diff, "diff_steps": diff / step,
                                 "argmax_agreement": float(np.mean(got.argmax(1) == ref.argmax(1))), "ops": ops})
        hw = [n.op_type for n in model.graph.node if n.domain.startswith("finn.custom_op.fpgadataflow")]
        non_hw = [n.op_type for n in model.graph.node
                  if not n.domain.startswith("finn.custom_op.fpgadataflow")]  # outside the partition
        parent = model.transform(CreateDataflowPartition(partition_model_dir=f"{work}/{name}_partitions"))
        parts = [n for n in parent.graph.node if n.op_type == "StreamingDataflowPartition"]
        res.update(non_hw_nodes=non_hw, hw_layers={op: hw.count(op) for op in sorted(set(hw))},
                   partitions=len(parts), parent_ops=[n.op_type for n in parent.graph.node])
    except Exception as exc:  # report what FINN said, per model
        res["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        res["traceback_tail"] = traceback.format_exc().splitlines()[-4:]
    results[name] = res
json.dump(results, open(f"{work}/finn_results.json", "w"), indent=1)
'''


def _pins(finn_src: Path) -> list[str]:
    wanted = {n.lower() for n in NEEDED}
    pins = []
    for line in (finn_src / "requirements.txt").read_text().splitlines():
        name = re.split(r"[=<>~\[; ]", line.strip(), maxsplit=1)[0].lower()
        if name in wanted:
            pins.append(line.strip())
    return pins


def setup_venv(venv: Path, finn_src: Path, qonnx_src: Path, log) -> Path:
    """FINN's environment at ``venv`` (made once): its pins, the given qonnx, FINN's src on the path."""
    python = venv / "bin" / "python"
    marker = venv / ".edge_sdk_finn_ready"
    if marker.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pins = _pins(finn_src)
    log(f"installing FINN's pins into {venv}: {' '.join(pins)}")
    subprocess.run([str(python), "-m", "pip", "install", "-q", *pins, "attrs>=22.2"], check=True)
    # a source tree without .git (e.g. `git archive`): setuptools_scm needs the version given
    scm = {} if (qonnx_src / ".git").exists() else {"SETUPTOOLS_SCM_PRETEND_VERSION": "0.0.0+" + _commit(qonnx_src)}
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(qonnx_src)], check=True,
                   env={**os.environ, **scm})
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "finn_src.pth").write_text(str(finn_src / "src") + "\n")
    _pyverilator_stub(Path(site))
    marker.write_text(" ".join(pins))
    return python


def _pyverilator_stub(site: Path) -> None:
    """FINN's HW-layer module imports pyverilator (RTL simulation, which needs Verilator);
    the Python execution used here never calls it, so a stub that refuses stands in."""
    pkg = site / "pyverilator"
    (pkg / "util").mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(
        '"""Stub (edge-sdk finn_check): no RTL simulation here."""\n\n\nclass PyVerilator:\n'
        "    def __init__(self, *args, **kwargs):\n        raise RuntimeError('pyverilator stub: no RTL simulation')\n\n"
        "    build = classmethod(__init__)\n")
    (pkg / "util" / "__init__.py").write_text("")
    (pkg / "util" / "axi_utils.py").write_text(
        "def _refuse(*args, **kwargs):\n    raise RuntimeError('pyverilator stub: no RTL simulation')\n\n"
        "_read_signal = reset_rtlsim = rtlsim_multi_io = toggle_clk = _refuse\n")


def export_models(work: Path, n: int, weight_bits: int = 4, act_bits: int = 4) -> dict:
    """The ``flow="finn"`` QONNX files, their inputs and QONNX execution of them (this environment)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from export_helpers import reference_model

    from edge_sdk.export import BrevitasExportConfig, to_qonnx
    from edge_sdk.export.fpga_export import _execute_qonnx
    import onnx

    info = {}
    for name in MODELS:
        model, x = reference_model(name, n=64 + n)
        config = BrevitasExportConfig.for_flow("finn", weight_bits=weight_bits, act_bits=act_bits,
                                               verify_samples=8)
        report = to_qonnx(model, x[:64], work / f"{name}.onnx", config, eval_data=x[64:],
                          metadata={"model": name})
        x_eval = x[64:].reshape(n, *report.extra["input_shape"][1:])
        ref = _execute_qonnx(onnx.load(work / f"{name}.onnx"), x_eval)
        np.save(work / f"{name}.x.npy", x_eval)
        np.save(work / f"{name}.ref.npy", ref)
        info[name] = {"bits": f"W{weight_bits}A{act_bits}", "output_step": report.extra["output_step"],
                      "flow_changes": report.extra["flow_changes"], "input_shape": report.extra["input_shape"]}
        (work / f"{name}.json").write_text(json.dumps(info[name]))
    return info


def verdict(res: dict) -> bool:
    steps = res.get("steps", [])
    return (not res.get("error") and len(steps) == 3 and all(s["diff_steps"] <= 1e-3 for s in steps)
            and res.get("partitions") == 1)


def _failed_at(res: dict) -> str:
    if not res.get("error"):
        return ""
    done = [s["step"] for s in res.get("steps", [])]
    order = ["ConvertQONNXtoFINN", "Streamline", "convert_to_hw_layers", "CreateDataflowPartition"]
    return f"in {order[len(done)]}: "


RECIPES = {
    "builder": "FINN's builder steps (`finn/builder/build_dataflow_steps.py`): step_qonnx_to_finn + step_tidy_up, "
               "step_streamline, step_convert_to_hw, at the default DataflowBuildConfig",
    "resnet": "FINN's ResNet recipe (finn-examples `build/resnet50/custom_steps.py`): step_qonnx_to_finn + "
              "step_tidy_up, then step_resnet50_streamline (four rounds of the linear streamlining transforms "
              "and MoveLinearPastEltwiseAdd, MoveLinearPastFork) and step_resnet50_convert_to_hls "
              "(InferAddStreamsLayer, LowerConvsToMatMul, InferChannelwiseLinearLayer, InferPool, "
              "AbsorbTransposeIntoMultiThreshold, RoundAndClipThresholds, InferQuantizedMatrixVectorActivation, "
              "InferThresholdingLayer, AbsorbConsecutiveTransposes, InferConvInpGen, InferDuplicateStreamsLayer, "
              "InferLabelSelectLayer, RemoveCNVtoFCFlatten); one addition: InferGlobalAccPoolLayer and the "
              "streamlining again before InferQuantizedMatrixVectorActivation, so that the GlobalAveragePool "
              "becomes a GlobalAccPool and its 1/pixels Mul goes into the classifier's thresholds (as FINN's "
              "test_convert_to_hw_layers_synthetic moves it)",
}


def markdown(doc: dict) -> str:
    bits = sorted({m["bits"] for m in doc["models"].values()})
    m = doc.get("machine")
    lines = ["# FINN check", "",
             f"Command: `python bench/finn_check.py --finn-src FINN --qonnx-src QONNX "
             f"--weight-bits {doc['weight_bits']} --act-bits {doc['act_bits']}"
             f"{'' if doc.get('out_stem', 'finn_check') == 'finn_check' else ' --out bench/' + doc['out_stem']}` "
             f"({doc['seconds']:.0f} s). "
             f"FINN {doc['finn_commit']}, qonnx {doc['qonnx_commit']}; FINN's pins: {', '.join(doc['pins'])}; "
             f"Python {doc['python']}. FINN's `max_multithreshold_bit_width`: {doc['max_threshold_bits']}.",
             *([machine_markdown(m), ""] if m else [""]),
             f"Models exported here with `flow=\"finn\"` at {', '.join(bits)} (untrained, BatchNorm statistics from "
             f"standard-normal data), {doc['samples']} samples each; outputs compared with QONNX execution of "
             "the exported file (qonnx executor, this environment), in output quantization steps. No Vivado: "
             "HW layers run in FINN's Python execution.", "",
             "Steps run (the ones a FINN user runs; chosen by the graph: a residual Add of two computed tensors "
             "takes the ResNet recipe):", ""]
    used = sorted({res.get("recipe") for res in doc["results"].values() if res.get("recipe")})
    lines += [f"* {r}: {RECIPES[r]}." for r in used]
    lines += ["", "| model | recipe | step | max abs diff | diff (steps) | argmax agreement | ops |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, res in doc["results"].items():
        for st in res.get("steps", []):
            lines.append(f"| {name} | {res.get('recipe', '-')} | {st['step']} | {st['max_abs_diff']:.3g} | "
                         f"{st['diff_steps']:.3g} | {st['argmax_agreement']:.3f} | {', '.join(st['ops'])} |")
    lines += ["", "Passes: outputs equal to QONNX execution after every step and one dataflow partition. The "
              "nodes outside it run on the host before it (the input quantizer on the float input, the "
              "layout change) or after it (output scale, float bias, output quantizer).", "",
              "| model | passes | dataflow partitions | HW layers in it | nodes outside the partition | error |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, res in doc["results"].items():
        hw = ", ".join(f"{op} x{n}" for op, n in res.get("hw_layers", {}).items()) or "-"
        outside = (", ".join(res["non_hw_nodes"]) or "none") if "non_hw_nodes" in res else "-"
        lines.append(f"| {name} | {'yes' if verdict(res) else 'NO'} | {res.get('partitions', '-')} | {hw} | "
                     f"{outside} | {_failed_at(res)}{res.get('error', '')} |")
    return "\n".join(lines) + "\n"


def _commit(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return (path / ".edge_sdk_commit").read_text().strip() if (path / ".edge_sdk_commit").exists() else "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--finn-src", default=os.environ.get("EDGE_SDK_FINN_SRC"), help="FINN checkout (has src/finn)")
    p.add_argument("--qonnx-src", default=os.environ.get("EDGE_SDK_QONNX_SRC"),
                   help="qonnx checkout at FINN's pinned commit (default: FINN_SRC/deps/qonnx)")
    p.add_argument("--venv", default=os.environ.get("EDGE_SDK_FINN_VENV",
                                                    str(Path.home() / ".cache" / "edge-sdk" / "finn-venv")))
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--weight-bits", type=int, default=4)
    p.add_argument("--act-bits", type=int, default=4,
                   help="activation bits (residual requantizers get one more; FINN's max_multithreshold_bit_width "
                        "is raised to match, as a user would)")
    p.add_argument("--out", default=str(HERE / "finn_check"), help="output stem (.md and .json)")
    args = p.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731 - a script's progress
    if not args.finn_src or not (Path(args.finn_src) / "src" / "finn").is_dir():
        print("finn_check: give --finn-src (or EDGE_SDK_FINN_SRC): a FINN checkout with src/finn", file=sys.stderr)
        return 2
    finn_src = Path(args.finn_src).resolve()
    qonnx_src = Path(args.qonnx_src or finn_src / "deps" / "qonnx").resolve()
    if not (qonnx_src / "src" / "qonnx").is_dir():
        print(f"finn_check: no qonnx checkout at {qonnx_src} (give --qonnx-src or EDGE_SDK_QONNX_SRC)", file=sys.stderr)
        return 2
    start = time.time()
    machine = machine_info()
    python = setup_venv(Path(args.venv), finn_src, qonnx_src, log)
    with tempfile.TemporaryDirectory(prefix="edge_sdk_finn_") as tmp:
        work = Path(tmp)
        info = export_models(work, args.samples, args.weight_bits, args.act_bits)
        env = {**os.environ, "FINN_ROOT": str(finn_src), "FINN_BUILD_DIR": str(work / "build")}
        env.pop("PYTHONPATH", None)
        (work / "child.py").write_text(CHILD)
        max_bits = max(8, args.act_bits + 1)
        proc = subprocess.run([str(python), str(work / "child.py"), str(work), ",".join(MODELS),
                               str(max_bits)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not (work / "finn_results.json").exists():
            print(f"finn_check: FINN's environment failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results = json.loads((work / "finn_results.json").read_text())
    version = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    doc = {"seconds": time.time() - start, "finn_commit": _commit(finn_src), "qonnx_commit": _commit(qonnx_src),
           "pins": _pins(finn_src), "python": version, "samples": args.samples, "weight_bits": args.weight_bits,
           "act_bits": args.act_bits, "max_threshold_bits": max_bits, "machine": machine, "models": info,
           "results": results, "out_stem": Path(args.out).name,
           "pass": {name: verdict(res) for name, res in results.items()}}
    Path(args.out + ".json").write_text(json.dumps(doc, indent=1))
    Path(args.out + ".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0 if all(doc["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
