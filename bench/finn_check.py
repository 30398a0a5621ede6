"""FINN check: do our ``--flow finn`` QONNX files go through FINN's front end as they are?

FINN is not on the package index; give the path of a FINN checkout you have (its ``src/``
holds the ``finn`` package) and of the qonnx checkout at the commit FINN's
``fetch-repos.sh`` names. This script never copies their code: it builds a separate virtual
environment with FINN's own pins (read from its ``requirements.txt``), installs that qonnx
into it, puts FINN's ``src`` on its path, and runs there, for cnn1d and resnet8 exported
here with ``flow="finn"``:

  ConvertQONNXtoFINN -> Streamline (with FINN's conv lowering) -> convert_to_hw_layers ->
  CreateDataflowPartition

checking after each step that the graph's outputs equal QONNX execution of the exported
file (in output quantization steps) and, at the end, that one dataflow partition holds
every layer. No Vivado is needed: HW layers run in FINN's Python execution.

    python bench/finn_check.py --finn-src PATH --qonnx-src PATH [--venv PATH]
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
from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames, RemoveUnusedTensors
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
from finn.transformation.streamline import Streamline
from finn.transformation.streamline.reorder import MakeMaxPoolNHWC, MoveScalarLinearPastInvariants
import finn.transformation.streamline.absorb as absorb
import finn.transformation.fpgadataflow.convert_to_hw_layers as to_hw
from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
from finn.transformation.move_reshape import RemoveCNVtoFCFlatten

work = sys.argv[1]
names = sys.argv[2].split(",")


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


def tidy(model):
    for t in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(), GiveReadableTensorNames(), InferDataTypes()):
        model = model.transform(t)
    return model


def streamline(model):
    model = model.transform(MoveScalarLinearPastInvariants())
    model = model.transform(Streamline())
    model = model.transform(LowerConvsToMatMul())
    model = model.transform(MakeMaxPoolNHWC())
    model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
    model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(Streamline())
    model = model.transform(InferDataLayouts())
    model = model.transform(RemoveUnusedTensors())
    return tidy(model)


def hw_layers(model):
    for t in (to_hw.InferAddStreamsLayer(), to_hw.InferGlobalAccPoolLayer(), to_hw.InferPool(),
              to_hw.InferConvInpGen(), to_hw.InferQuantizedMatrixVectorActivation(),
              to_hw.InferThresholdingLayer(), to_hw.InferDuplicateStreamsLayer(),
              to_hw.InferChannelwiseLinearLayer(), to_hw.InferLabelSelectLayer()):
        try:
            model = model.transform(t)
        except AttributeError:  # a transformation this FINN version does not have
            pass
    model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(RemoveCNVtoFCFlatten())
    return tidy(model.transform(InferDataLayouts()))


results = {}
for name in names:
    x = np.load(f"{work}/{name}.x.npy")
    ref = np.load(f"{work}/{name}.ref.npy")
    step = float(json.load(open(f"{work}/{name}.json"))["output_step"])
    res = {"steps": []}
    try:
        model = ModelWrapper(f"{work}/{name}.onnx")
        for label, fn in (("ConvertQONNXtoFINN", lambda m: tidy(m.transform(ConvertQONNXtoFINN()))),
                          ("Streamline", streamline), ("convert_to_hw_layers", hw_layers)):
            model = fn(model)
            got = run(model, x)
            diff = float(np.max(np.abs(got - ref)))
            ops = sorted({n.op_type for n in model.graph.node})
            res["steps"].append({"step": label, "max_abs_diff": diff, "diff_steps": diff / step,
                                 "argmax_agreement": float(np.mean(got.argmax(1) == ref.argmax(1))), "ops": ops})
        non_hw = [n.op_type for n in model.graph.node
                  if not n.domain.startswith("finn.custom_op.fpgadataflow")]  # outside the partition
        parent = model.transform(CreateDataflowPartition(partition_model_dir=f"{work}/{name}_partitions"))
        parts = [n for n in parent.graph.node if n.op_type == "StreamingDataflowPartition"]
        res.update(non_hw_nodes=non_hw, partitions=len(parts),
                   parent_ops=[n.op_type for n in parent.graph.node])
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
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(qonnx_src)], check=True)
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


def export_models(work: Path, n: int) -> dict:
    """The ``flow="finn"`` QONNX files, their inputs and QONNX execution of them (this environment)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from export_helpers import reference_model

    from edge_sdk.export import BrevitasExportConfig, to_qonnx
    from edge_sdk.export.fpga_export import _execute_qonnx
    import onnx

    info = {}
    for name in MODELS:
        model, x = reference_model(name, n=64 + n)
        config = BrevitasExportConfig.for_flow("finn", weight_bits=4, act_bits=4, verify_samples=8)
        report = to_qonnx(model, x[:64], work / f"{name}.onnx", config, eval_data=x[64:],
                          metadata={"model": name})
        x_eval = x[64:].reshape(n, *report.extra["input_shape"][1:])
        ref = _execute_qonnx(onnx.load(work / f"{name}.onnx"), x_eval)
        np.save(work / f"{name}.x.npy", x_eval)
        np.save(work / f"{name}.ref.npy", ref)
        info[name] = {"bits": "W4A4", "output_step": report.extra["output_step"],
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


def markdown(doc: dict) -> str:
    lines = ["# FINN check", "",
             f"Command: `python bench/finn_check.py` ({doc['seconds']:.0f} s). FINN {doc['finn_commit']}, "
             f"qonnx {doc['qonnx_commit']}; FINN's pins: {', '.join(doc['pins'])}; Python {doc['python']}.",
             f"Models exported here with `flow=\"finn\"` at W4A4 (untrained, BatchNorm statistics from "
             f"standard-normal data), {doc['samples']} samples each; outputs compared with QONNX execution of "
             "the exported file (qonnx executor, this environment), in output quantization steps.", "",
             "| model | step | max abs diff | diff (steps) | argmax agreement | ops |", "| --- | --- | --- | --- | --- | --- |"]
    for name, res in doc["results"].items():
        for s in res.get("steps", []):
            lines.append(f"| {name} | {s['step']} | {s['max_abs_diff']:.3g} | {s['diff_steps']:.3g} | "
                         f"{s['argmax_agreement']:.3f} | {', '.join(s['ops'])} |")
    lines += ["", "Passes: outputs equal to QONNX execution after every step and one dataflow partition. The "
              "nodes outside it run on the host before it (the input quantizer on the float input, the "
              "layout change) or after it (output scale, float bias, output quantizer).", "",
              "| model | passes | dataflow partitions | nodes outside the partition | error |",
              "| --- | --- | --- | --- | --- |"]
    for name, res in doc["results"].items():
        lines.append(f"| {name} | {'yes' if verdict(res) else 'NO'} | {res.get('partitions', '-')} | "
                     f"{', '.join(res['non_hw_nodes']) or 'none' if 'non_hw_nodes' in res else '-'} | "
                     f"{_failed_at(res)}{res.get('error', '')} |")
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
    python = setup_venv(Path(args.venv), finn_src, qonnx_src, log)
    with tempfile.TemporaryDirectory(prefix="edge_sdk_finn_") as tmp:
        work = Path(tmp)
        info = export_models(work, args.samples)
        env = {**os.environ, "FINN_ROOT": str(finn_src), "FINN_BUILD_DIR": str(work / "build")}
        env.pop("PYTHONPATH", None)
        (work / "child.py").write_text(CHILD)
        proc = subprocess.run([str(python), str(work / "child.py"), str(work), ",".join(MODELS)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not (work / "finn_results.json").exists():
            print(f"finn_check: FINN's environment failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results = json.loads((work / "finn_results.json").read_text())
    version = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    doc = {"seconds": time.time() - start, "finn_commit": _commit(finn_src), "qonnx_commit": _commit(qonnx_src),
           "pins": _pins(finn_src), "python": version, "samples": args.samples, "models": info, "results": results,
           "pass": {name: verdict(res) for name, res in results.items()}}
    Path(args.out + ".json").write_text(json.dumps(doc, indent=1))
    Path(args.out + ".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0 if all(doc["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
