"""Export bars: int8 ONNX (integer-only, size, accuracy, latency), QONNX parity, FPGA fit.

Trains resnet8 on scikit-learn digits upscaled to 32x32 (1 channel) and cnn1d on MNIST-1D
(generated offline), then for each model:

* ``to_int_onnx`` (QOperator, per-channel int8 weights, uint8 activations on x86): integer-only,
  file <= 0.3x the fp32 ONNX, accuracy drop <= 1 point, onnxruntime latency <= 0.5x fp32 at
  one thread (batch 1, and batch 64 throughput reported beside it);
* where the batch-1 time goes: the fixed cost of a call (a one-node graph called the same
  way), the graphs' time above it, the int8 graph without the layout rewrites, the int8 graph
  with its input quantized last (float stem data moves first, the order before #13), the old
  calling method (``session.run`` with numpy), onnxruntime's per-node profile, and the
  latency ratio by batch size (dynamic-batch graphs) with the smallest batch meeting 0.5x;
* our QDQ int8 graph (``quant_format="qdq"``) beside the QOperator one: latency, size, accuracy;
* onnxruntime ``quantize_static`` at its defaults (QDQ, int8 activations, per-tensor) side by
  side: its latency ratio, accuracy and integer-only status;
* QONNX at W4A4 and W8A8 (Brevitas PTQ) against the Brevitas model, executed with qonnx;
* the FPGA estimate of W4A4 cnn1d on pynq-z2.

Writes ``bench_export.md`` and ``bench_export.json`` next to this file. Run:

    OMP_NUM_THREADS=1 python bench/bench_export.py            # a few minutes
    python bench/bench_export.py --quick                       # smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

HERE = Path(__file__).resolve().parent


def machine_info() -> dict:
    import brevitas
    import onnx
    import onnxruntime
    import qonnx  # noqa: F401

    from edge_sdk.export._target import _host_flags

    flags = _host_flags()
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "")
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": model,
        "cpus_affinity": affinity,
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
        "avx512f": "avx512f" in flags,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "brevitas": brevitas.__version__,
        "qonnx": version("qonnx"),
    }


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * ((len(x) + 63) // 64))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def ort_defaults(model: nn.Module, calib: np.ndarray, x: np.ndarray, y: np.ndarray, tmp: str) -> dict:
    """onnxruntime quantize_static at its defaults on the same pre-processed fp32 graph."""
    from onnxruntime.quantization import quantize_static

    from edge_sdk.export import _ort, check_integer_only
    from edge_sdk.export._torch_onnx import export_float_onnx
    from edge_sdk.export.int_onnx import _preprocess, _Reader

    fp32, prep, q = (os.path.join(tmp, n) for n in ("d_fp32.onnx", "d_prep.onnx", "d_q.onnx"))
    export_float_onnx(model, torch.from_numpy(calib[:1]), fp32)
    _preprocess(fp32, prep)
    quantize_static(prep, q, _Reader(calib, 1))  # defaults: QDQ, int8/int8, per-tensor, MinMax
    s_q, s_f = _ort.make_session(q, 1), _ort.make_session(fp32, 1)
    lat_q, lat_f = _ort.paired_latency_ms([s_q, s_f], x[:1], min_seconds=1.0)
    pred = _ort.run(s_q, x).argmax(1)
    return {
        "integer_only": check_integer_only(q).integer_only,
        "accuracy": float((pred == y).mean()),
        "file_bytes": os.path.getsize(q),
        "latency_ms": lat_q,
        "latency_ms_fp32": lat_f,
        "latency_ratio": lat_q / lat_f,
    }


BATCHES = (1, 2, 4, 8, 16, 32, 64)


def batch_sweep(model: nn.Module, calib: np.ndarray, x: np.ndarray, tmp: str, quick: bool) -> list[dict]:
    """Our int8 graph exported with a dynamic batch, timed against fp32 at each batch size."""
    from edge_sdk.export import _ort, to_int_onnx
    from edge_sdk.export._torch_onnx import export_float_onnx

    path, fp32 = os.path.join(tmp, "dyn.onnx"), os.path.join(tmp, "dyn_fp32.onnx")
    to_int_onnx(model, calib, path, batch_size=None, measure_latency=False)
    export_float_onnx(model, torch.from_numpy(calib[:1]), fp32, dynamic_batch=True)
    sessions = [_ort.make_session(path, 1), _ort.make_session(fp32, 1)]
    out = []
    for batch in BATCHES:
        # three runs, medians: the first run at a new batch size was measured up to 2x off
        # (onnxruntime growing its buffers; resnet8 b64 0.55 then 0.33, 0.33)
        runs = [_ort.paired_latency_ms(sessions, x[:batch], batch=batch, min_seconds=0.3 if quick else 1.0)
                for _ in range(3)]
        ratios = [q / f for q, f in runs]
        out.append({"batch": batch, "latency_ms": float(np.median([r[0] for r in runs])),
                    "latency_ms_fp32": float(np.median([r[1] for r in runs])),
                    "latency_ratio": float(np.median(ratios)), "latency_ratio_runs": ratios})
    return out


def input_quantized_last(model: onnx.ModelProto) -> onnx.ModelProto:
    """The int8 graph in the order onnxruntime's quantizer leaves it (and this SDK did before the
    input was quantized first): the data-moving ops after the input's ``QuantizeLinear`` run on
    the float input, then the ``QuantizeLinear``. The same integers (a per-tensor quantizer
    commutes with them); timed beside our graph to show what quantizing first costs or saves."""
    from onnx import numpy_helper

    from edge_sdk.export._input_quant import MOVABLE_OPS
    from edge_sdk.export.integer_check import producers_and_consumers

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    _, consumers = producers_and_consumers(graph)
    for quant in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inputs]:
        chain, tensor = [], quant.output[0]
        while len(consumers.get(tensor, [])) == 1 and consumers[tensor][0].op_type in MOVABLE_OPS:
            chain.append(consumers[tensor][0])
            tensor = chain[-1].output[0]
        if not chain:
            continue
        for pad in (n for n in chain if n.op_type == "Pad" and len(n.input) > 2 and n.input[2]):
            zero = f"{pad.name or pad.output[0]}_float_zero"  # a float Pad pads with 0.0
            graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
            pad.input[2] = zero
        source, out = quant.input[0], chain[-1].output[0]
        chain[0].input[0] = source
        chain[-1].output[0] = f"{out}_float"
        quant.input[0], quant.output[0] = f"{out}_float", out
        nodes = [n for n in graph.node if n is not quant]
        nodes.insert(nodes.index(chain[-1]) + 1, quant)
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.value_info[:]
        _, consumers = producers_and_consumers(graph)
    return model


def batch1_detail(model: nn.Module, calib: np.ndarray, x: np.ndarray, int8_path: str, tmp: str,
                  quick: bool) -> dict:
    """Where the batch-1 time goes, int8 (ours) against fp32, both called the same way.

    Each call method is timed in ``repeats`` separate runs of alternating rounds; the numbers
    are the medians over the runs, with the lowest and highest int8/fp32 ratio beside them."""
    import onnx

    from edge_sdk.export import _ort, to_int_onnx
    from edge_sdk.export._compact import compact_model
    from edge_sdk.export._torch_onnx import export_float_onnx

    fp32 = os.path.join(tmp, "b1_fp32.onnx")
    export_float_onnx(model, torch.from_numpy(calib[:1]), fp32)
    onnx.save(compact_model(onnx.load(fp32)), fp32)  # the baseline to_int_onnx times
    plain = os.path.join(tmp, "b1_no_layout.onnx")
    to_int_onnx(model, calib, plain, measure_latency=False, layout_rewrites=False)
    late = os.path.join(tmp, "b1_input_quantized_last.onnx")
    late_model = input_quantized_last(onnx.load(int8_path))
    onnx.save(late_model, late)
    late_moved = [n.op_type for n in late_model.graph.node[:4]]
    seconds, repeats = (0.5, 2) if quick else (2.0, 5)
    sessions = [_ort.make_session(p, 1) for p in (int8_path, fp32, plain, late)]
    out: dict = {"methods": {}, "repeats": repeats, "seconds_per_repeat": seconds,
                 "input_quantized_last_first_ops": late_moved}
    med = lambda v: float(np.median(v))  # noqa: E731
    for method in _ort.LATENCY_METHODS:
        runs = [_ort.call_floor_ms(sessions, x[:1], method=method, min_seconds=seconds) for _ in range(repeats)]
        q, f, plain_q, late_q, floor = (med([r[i] for r in runs]) for i in range(5))
        ratios = [r[0] / r[1] for r in runs]
        out["methods"][method] = {
            "int8_ms": q, "fp32_ms": f, "ratio": med(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratio_runs": ratios, "floor_ms": floor,
            "int8_above_floor_ms": q - floor, "fp32_above_floor_ms": f - floor,
            "ratio_above_floor": med([(r[0] - r[4]) / (r[1] - r[4]) for r in runs]),
            "int8_no_layout_rewrites_ms": plain_q, "ratio_no_layout_rewrites": med([r[2] / r[1] for r in runs]),
            "int8_input_quantized_last_ms": late_q, "ratio_input_quantized_last": med([r[3] / r[1] for r in runs]),
        }
    out["profile"] = {}
    for label, path in (("int8", int8_path), ("fp32", fp32), ("int8_no_layout_rewrites", plain)):
        nodes = _ort.profile_nodes(path, x[:1], runs=500 if quick else 2000)
        by_type: dict[str, float] = {}
        for n in nodes:
            by_type[n["op_type"]] = by_type.get(n["op_type"], 0.0) + n["mean_us"]
        out["profile"][label] = {"nodes": nodes, "node_count": len(nodes),
                                 "us_by_op_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]))}
    return out


def qdq_vs_qoperator(model: nn.Module, calib: np.ndarray, x: np.ndarray, y: np.ndarray, int8_path: str,
                     tmp: str, quick: bool) -> dict:
    """The QDQ int8 graph (standard ops, what OpenVINO reads) beside the QOperator one: both
    timed with the fp32 graph in the same alternating rounds (batch 1, 1 thread, 2 s)."""
    import onnx

    from edge_sdk.export import _ort, check_integer_only, to_int_onnx
    from edge_sdk.export._compact import compact_model
    from edge_sdk.export._torch_onnx import export_float_onnx

    qdq_path, fp32 = os.path.join(tmp, "qdq.onnx"), os.path.join(tmp, "qdq_fp32.onnx")
    rep = to_int_onnx(model, calib, qdq_path, eval_data=(x, y), quant_format="qdq", measure_latency=False)
    export_float_onnx(model.eval(), torch.from_numpy(calib[:1]), fp32)
    onnx.save(compact_model(onnx.load(fp32)), fp32)
    sessions = [_ort.make_session(p, 1) for p in (int8_path, qdq_path, fp32)]
    op_ms, qdq_ms, fp32_ms = _ort.paired_latency_ms(sessions, x[:1], min_seconds=0.5 if quick else 2.0)
    return {"integer_only": rep.integer_only and check_integer_only(qdq_path).integer_only,
            "file_bytes": rep.file_bytes, "size_ratio": rep.size_ratio, "accuracy": rep.accuracy_int,
            "qoperator_ms": op_ms, "qdq_ms": qdq_ms, "fp32_ms": fp32_ms, "qoperator_ratio": op_ms / fp32_ms,
            "qdq_ratio": qdq_ms / fp32_ms, "qdq_over_qoperator": qdq_ms / op_ms}


def bench_model(name: str, model: nn.Module, data, tmp: str, quick: bool) -> dict:
    from edge_sdk.export import BrevitasExportConfig, to_int_onnx, to_qonnx

    x_tr, y_tr, x_te, y_te = data
    calib = x_tr[:256]
    row: dict = {"model": name, "params": sum(p.numel() for p in model.parameters()),
                 "accuracy_float": accuracy(model, x_te, y_te)}
    t0 = time.perf_counter()
    int8_path = os.path.join(tmp, f"{name}.int8.onnx")
    rep = to_int_onnx(model, calib, int8_path, eval_data=(x_te, y_te), threads=1)
    row["export_s"] = time.perf_counter() - t0
    row["int8"] = {
        "integer_only": rep.integer_only,
        "float_ops": rep.float_ops,
        "file_bytes": rep.file_bytes,
        "fp32_file_bytes": rep.fp32_file_bytes,
        "size_ratio": rep.size_ratio,
        "accuracy": rep.accuracy_int,
        "accuracy_drop_points": 100 * (rep.accuracy_float - rep.accuracy_int),
        "top1_agreement": rep.top1_agreement,
        "latency_ms": rep.latency_ms_int8,
        "latency_ms_fp32": rep.latency_ms_fp32,
        "latency_ratio": rep.latency_ratio,
        "latency_method": rep.extra["latency_method"],
        "activation_type": rep.activation_type,
        "rewrites": rep.extra["rewrites"],
    }
    row["int8_qdq"] = qdq_vs_qoperator(model, calib, x_te, y_te, int8_path, tmp, quick)
    row["int8_batch1_detail"] = batch1_detail(model, calib, x_te, int8_path, tmp, quick)
    row["int8_by_batch"] = batch_sweep(model, calib, x_te, tmp, quick)
    row["int8_batch64"] = next(b for b in row["int8_by_batch"] if b["batch"] == 64)
    row["int8_smallest_batch_at_half"] = next(
        (b["batch"] for b in row["int8_by_batch"] if b["latency_ratio"] <= 0.5), None)
    row["ort_defaults"] = ort_defaults(model, calib, x_te, y_te, tmp)
    row["qonnx"] = {}
    for wb, ab in ((4, 4), (8, 8)):
        t0 = time.perf_counter()
        config = BrevitasExportConfig(weight_bits=wb, act_bits=ab, verify_samples=4 if quick else 16,
                                      tolerance_steps=float("inf"))  # record the error; the bar judges it
        q = to_qonnx(model, calib, os.path.join(tmp, f"{name}.w{wb}a{ab}.onnx"), config, eval_data=(x_te, y_te))
        row["qonnx"][f"W{wb}A{ab}"] = {
            "verified_samples": q.extra["verified_samples"],
            "max_abs_diff_vs_brevitas": q.extra["qonnx_vs_brevitas_max_abs"],
            "max_error_steps": q.max_abs_error_steps,
            "exact_fraction": q.extra["exact_fraction"],
            "output_step": q.extra["output_step"],
            "accuracy_brevitas": q.accuracy_int,
            "finn": q.extra["finn"],
            "seconds": time.perf_counter() - t0,
        }
    return row


def bench_transformers(tmp: str) -> list[dict]:
    """vit_tiny and its integer-friendly variant (BatchNorm, ReLU): what stays float in int8.

    Untrained models calibrated on synthetic samples: only the graph structure and the
    latency mean something here, not the parity numbers.
    """
    from edge_sdk import models
    from edge_sdk.export import to_int_onnx

    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    out = []
    for label, kw in (("vit_tiny", {}), ("vit_tiny norm=batchnorm act=relu", {"norm": "batchnorm", "act": "relu"})):
        model = models.create("vit_tiny", **kw).eval()
        rep = to_int_onnx(model, x, os.path.join(tmp, "vit.onnx"), threads=1)
        out.append({"model": label, "integer_only": rep.integer_only,
                    "float_op_types": rep.extra["float_op_types"], "float_ops": len(rep.float_ops),
                    "size_ratio": rep.size_ratio, "latency_ms": rep.latency_ms_int8,
                    "latency_ms_fp32": rep.latency_ms_fp32, "latency_ratio": rep.latency_ratio})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and samples (smoke run)")
    parser.add_argument("--out", default=str(HERE / "bench_export"), help="output stem (.md and .json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from edge_sdk import datasets, models
    from edge_sdk.export import estimate_fpga

    started = time.time()
    load_start = list(os.getloadavg())
    digits = datasets.load("digits", image_size=32)
    mnist = datasets.load("mnist1d")
    arrays = lambda s: (s.train.tensors[0].numpy(), s.train.tensors[1].numpy(),  # noqa: E731
                        s.test.tensors[0].numpy(), s.test.tensors[1].numpy())
    d_data, m_data = arrays(digits), arrays(mnist)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        resnet = train(models.create("resnet8", in_channels=1), d_data[0], d_data[1],
                       epochs=2 if args.quick else 6, lr=3e-3)
        train_resnet_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cnn = train(models.create("cnn1d"), m_data[0], m_data[1], epochs=5 if args.quick else 30, lr=3e-3)
        train_cnn_s = time.perf_counter() - t0
        torch.set_num_threads(1)
        rows.append(bench_model("resnet8", resnet, d_data, tmp, args.quick))
        rows[-1]["train_s"] = train_resnet_s
        rows.append(bench_model("cnn1d", cnn, m_data, tmp, args.quick))
        rows[-1]["train_s"] = train_cnn_s
        est = estimate_fpga(cnn, "pynq-z2", weight_bits=4, act_bits=4)
        transformers = bench_transformers(tmp)
    doc = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "quick": args.quick,
        "seconds": time.time() - started,
        "load_start": load_start,
        "load_end": list(os.getloadavg()),
        "nice": os.nice(0),
        "models": rows,
        "fpga_cnn1d_w4a4_pynq_z2": {k: v for k, v in est.to_dict().items() if k != "layers"},
        "transformers": transformers,
        "bars": bars(rows, est),
    }
    from edge_sdk._io import atomic_write_text

    atomic_write_text(args.out + ".json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(args.out + ".md", markdown(doc))
    print(markdown(doc))
    return 0


def bars(rows: list[dict], est) -> list[dict]:
    out = []
    for r in rows:
        i8, m = r["int8"], r["model"]
        b1 = r["int8_batch1_detail"]["methods"]["iobinding"]["ratio"]  # the export's own method, timed 2 s
        out += [
            {"bar": f"{m}: int8 graph integer-only", "value": i8["integer_only"], "pass": bool(i8["integer_only"])},
            {"bar": f"{m}: file <= 0.3x fp32 ONNX", "value": round(i8["size_ratio"], 3), "pass": i8["size_ratio"] <= 0.3},
            {"bar": f"{m}: accuracy drop <= 1 point", "value": round(i8["accuracy_drop_points"], 2),
             "pass": i8["accuracy_drop_points"] <= 1.0},
            {"bar": f"{m}: int8 latency <= 0.5x fp32 (1 thread, batch 1)", "value": round(b1, 3), "pass": b1 <= 0.5},
            {"bar": f"{m}: int8 latency <= 0.5x fp32 (1 thread, batch 64)",
             "value": round(r["int8_batch64"]["latency_ratio"], 3), "pass": r["int8_batch64"]["latency_ratio"] <= 0.5},
        ]
        q = r["int8_qdq"]
        out += [
            {"bar": f"{m}: QDQ int8 graph integer-only from its input", "value": q["integer_only"],
             "pass": bool(q["integer_only"])},
        ]
        for key, q in r["qonnx"].items():
            steps = q["max_error_steps"]
            out.append({"bar": f"{m}: QONNX {key} matches Brevitas within 1 step", "value": steps,
                        "pass": steps is not None and steps <= 1.0 + 1e-4})
    out.append({"bar": "cnn1d W4A4 fits pynq-z2 (estimate)", "value": est.budget_line(), "pass": est.fits})
    return out


def _f(v, digits: int = 3) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _load(v) -> str:
    return "/".join(f"{x:.1f}" for x in v) if v else "n/a"


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        "# Export bench",
        "",
        f"Command: `{doc['command']}` ({'quick' if doc['quick'] else 'full'} run, {doc['seconds']:.0f} s).",
        f"Machine: {m['cpu']} ({m['machine']}, {m['cpus_affinity']} CPUs, VNNI {m['vnni']}); Python {m['python']}, "
        f"torch {m['torch']}, onnx {m['onnx']}, onnxruntime {m['onnxruntime']}, brevitas {m['brevitas']}, "
        f"qonnx {m['qonnx']}.",
        f"Load average (1/5/15 min) at start {_load(doc.get('load_start'))}, at end {_load(doc.get('load_end'))} "
        f"(2 CPUs shared with other jobs; this process ran at nice {doc.get('nice', 'n/a')}; the ratios "
        f"compare graphs timed in the same rounds).",
        "Latencies: onnxruntime, 1 intra-op thread, same session options for both graphs (full graph "
        "optimisation, sequential), median of alternating calls (int8 and fp32 interleaved), each call a "
        "`run_with_iobinding` on input and output buffers bound once (the same for both graphs).",
        "",
        "## Bars",
        "",
        "| bar | value | pass |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {b['bar']} | {_f(b['value'])} | {'yes' if b['pass'] else 'NO'} |" for b in doc["bars"]]
    lines += ["", "The batch-1 latency bar is the `iobinding` row of 'Batch-1 latency: where the time goes' "
              "(median of 5 runs of 2 s of alternating calls, their range beside it); the export report's own "
              "0.5 s measurement is `ratio b1` below.",
              "", "## int8 ONNX (ours) vs onnxruntime quantize_static defaults", "",
              "| model | params | acc fp32 | acc int8 | drop (pts) | size ratio | int8 ms | fp32 ms | ratio b1 | "
              "ratio b64 | defaults: int-only | defaults: acc | defaults: ratio b1 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["models"]:
        i8, d = r["int8"], r["ort_defaults"]
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['accuracy_float']:.4f} | {i8['accuracy']:.4f} | "
            f"{i8['accuracy_drop_points']:.2f} | {i8['size_ratio']:.3f} | {i8['latency_ms']:.4f} | "
            f"{i8['latency_ms_fp32']:.4f} | {i8['latency_ratio']:.3f} | {r['int8_batch64']['latency_ratio']:.3f} | "
            f"{d['integer_only']} | {d['accuracy']:.4f} | {d['latency_ratio']:.3f} |")
    lines += ["", "## int8 graph formats on onnxruntime: QOperator (default) vs QDQ", "",
              "Both graphs and the fp32 graph timed in the same alternating rounds (batch 1, 1 thread, 2 s). "
              "QDQ holds standard ops only (OpenVINO reads it); onnxruntime fuses it into integer kernels "
              "at load time.", "",
              "| model | QOperator ms | QDQ ms | fp32 ms | QOperator / fp32 | QDQ / fp32 | QDQ / QOperator | "
              "QDQ size ratio | QDQ acc | QDQ integer-only |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["models"]:
        q = r["int8_qdq"]
        lines.append(
            f"| {r['model']} | {q['qoperator_ms']:.4f} | {q['qdq_ms']:.4f} | {q['fp32_ms']:.4f} | "
            f"{q['qoperator_ratio']:.3f} | {q['qdq_ratio']:.3f} | {q['qdq_over_qoperator']:.3f} | "
            f"{q['size_ratio']:.3f} | {q['accuracy']:.4f} | {q['integer_only']} |")
    lines += ["", "## QONNX (Brevitas PTQ) vs Brevitas, executed with qonnx", "",
              "| model | bits | samples | bit-exact outputs | max abs diff | output step | error (steps) | "
              "Brevitas acc | zero-points 0 | unsigned after ReLU |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["models"]:
        for key, q in r["qonnx"].items():
            lines.append(
                f"| {r['model']} | {key} | {q['verified_samples']} | {q['exact_fraction']:.3f} | "
                f"{q['max_abs_diff_vs_brevitas']:.3g} | "
                f"{_f(q['output_step'])} | {_f(q['max_error_steps'])} | {q['accuracy_brevitas']:.4f} | "
                f"{q['finn']['zero_points_zero']} | {q['finn']['unsigned_after_relu']} |")
    lines += ["", "## Batch-1 latency: where the time goes", "",
              "floor: a one-node (Identity) graph on the same input called the same way, timed in the same "
              "alternating rounds: the fixed cost of a call that no graph goes below. `above floor`: latency "
              "minus floor. `no layout rewrites`: our int8 graph without the post-quantization rewrites "
              "(stem space-to-depth, channels-last flatten). `input quantized last`: our int8 graph with the "
              "input's QuantizeLinear after the stem's data-moving ops (float Reshape / Transpose / Pad first, "
              "the order before the input was quantized first; same integers). `run`: `session.run` with a "
              "numpy feed (the previous method). Each method: repeated runs of alternating rounds, medians "
              "over the runs; `ratio range`: the lowest and highest int8/fp32 ratio of the runs.", "",
              "| model | call method | int8 ms | fp32 ms | ratio | ratio range (runs) | floor ms | int8 above floor | "
              "fp32 above floor | ratio above floor | int8 no layout rewrites ms | its ratio | "
              "int8 input quantized last ms | its ratio |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["models"]:
        det = r["int8_batch1_detail"]
        # no data-moving op after the input's QuantizeLinear: the same graph, timed twice
        same = " (same graph)" if det.get("input_quantized_last_first_ops", [""])[0] == "QuantizeLinear" else ""
        for method, d in det["methods"].items():
            lines.append(
                f"| {r['model']} | {method} | {d['int8_ms']:.4f} | {d['fp32_ms']:.4f} | {d['ratio']:.3f} | "
                f"{d['ratio_min']:.3f}-{d['ratio_max']:.3f} ({det['repeats']}) | "
                f"{d['floor_ms']:.4f} | {d['int8_above_floor_ms']:.4f} | {d['fp32_above_floor_ms']:.4f} | "
                f"{d['ratio_above_floor']:.3f} | {d['int8_no_layout_rewrites_ms']:.4f} | "
                f"{d['ratio_no_layout_rewrites']:.3f} | {d['int8_input_quantized_last_ms']:.4f} | "
                f"{d['ratio_input_quantized_last']:.3f}{same} |")
    lines += ["", "## Latency ratio int8 / fp32 by batch size (dynamic-batch graphs, 1 thread)", "",
              "Median of three runs of alternating rounds at each batch size (all runs in the .json).", "",
              "| model | " + " | ".join(f"b{b}" for b in BATCHES) + " | smallest batch <= 0.5x | b64 runs |",
              "| --- | " + " | ".join("---" for _ in BATCHES) + " | --- | --- |"]
    for r in doc["models"]:
        ratios = {b["batch"]: b["latency_ratio"] for b in r["int8_by_batch"]}
        lines.append(f"| {r['model']} | " + " | ".join(f"{ratios[b]:.3f}" for b in BATCHES)
                     + f" | {r['int8_smallest_batch_at_half'] or 'none up to 64'} | "
                     + ", ".join(f"{v:.3f}" for v in r["int8_batch64"].get("latency_ratio_runs", [])) + " |")
    lines += ["", "## Per-node profile at batch 1 (onnxruntime profiler, mean us per call)", "",
              "Nodes as onnxruntime runs them after its optimisations. The profiler adds about 2 us to every "
              "node, so the sums exceed the latencies; they locate the time.", "",
              "| model | graph | nodes | us by op type |", "| --- | --- | --- | --- |"]
    for r in doc["models"]:
        for label, p in r["int8_batch1_detail"]["profile"].items():
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in p["us_by_op_type"].items())
            lines.append(f"| {r['model']} | {label} | {p['node_count']} | {kinds} |")
    e = doc["fpga_cnn1d_w4a4_pynq_z2"]
    lines += ["", "## FPGA estimate: cnn1d W4A4 on pynq-z2", "",
              f"fits: {e['fits']}; needed/available: "
              + ", ".join(f"{k} {e['needed'][k]:,}/{e['available'][k]:,}" for k in e["needed"])
              + f"; folding {e['folding']}; {e['cycles_per_frame']:,} cycles/frame, {e['fps']:,.0f} frames/s at "
              f"{e['clock_mhz']:g} MHz; MACs {e['macs']:,}, BOPs {e['bops']:,}, weight memory "
              f"{e['weight_memory_bits']:,} bits.", "",
              "## Transformers in int8 ONNX (untrained, synthetic calibration: structure and latency only)", "",
              "| model | integer-only | float op types left | size ratio | int8 ms | fp32 ms | ratio |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for t in doc["transformers"]:
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(t["float_op_types"].items())) or "none"
        lines.append(f"| {t['model']} | {t['integer_only']} | {kinds} | {t['size_ratio']:.3f} | "
                     f"{t['latency_ms']:.3f} | {t['latency_ms_fp32']:.3f} | {t['latency_ratio']:.3f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
