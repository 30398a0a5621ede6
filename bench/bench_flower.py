"""Bytes the Flower ServerApp sends one node per round, against its kept fraction.

Bar (issue 6): bytes sent to a node per round within 10% of kept_fraction x full model
bytes (full = every state-dict tensor of the global model, fp32). For every strategy, model
and ladder size this builds the node's payload with the ServerApp's own code path
(``strategy.make_plans`` -> ``strategy.payload`` -> ``encode_payload`` ->
``payload_content`` -> ``flwr.app.Message``) and reports, separately:

* ``raw tensor``: the tensor values uncompressed (what scales with the kept fraction);
* ``index``: the plan's own bytes (FIARSE's element masks, bit-packed + zlib; channel
  indices for the structured strategies);
* ``values``: the tensor values as sent (payload format 2: byte planes, zlib);
* ``payload``: the whole encoded payload (header + plan + values) = the one Flower Array;
* ``message``: every object Flower pushes for that message (record and array framing,
  metadata), i.e. what crosses the wire apart from HTTP framing;

each divided by ``kept_fraction x full``. It also times encode/decode of the full resnet18
payload at several zlib levels (the level the codec uses is chosen from that table).

Run: ``python bench/bench_flower.py`` (``--quick``: small models only). Writes
bench/bench_flower.md and bench/bench_flower.json next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import machine_info, machine_markdown  # noqa: E402

from edge_sdk._io import atomic_write_text, check_writable  # noqa: E402
from edge_sdk.flower.codec import (  # noqa: E402
    PAYLOAD_VERSION,
    ZLIB_LEVEL,
    Payload,
    decode_payload,
    encode_payload,
    payload_sizes,
    payload_tensors,
    state_bytes,
)
from edge_sdk.flower.config import RunSettings  # noqa: E402
from edge_sdk.flower.server import payload_content  # noqa: E402
from edge_sdk.flower.strategies import STRATEGIES  # noqa: E402

LADDER = (1.0, 1 / 4, 1 / 16, 1 / 64)
LADDER_NAMES = ("1", "1/4", "1/16", "1/64")
CHANNEL_STRATEGIES = ("fiarse", "fiarse-structured", "heterofl", "fedrolex")
BAR = 0.10
LEVELS = (1, 2, 3, 6)
REPEATS = 3


def wire_bytes(message) -> int:
    """Bytes of every object Flower pushes for ``message`` (its deflated object tree)."""
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


def make_message(content, node: int):
    from flwr.app import Message

    return Message(content, dst_node_id=node, message_type="train", group_id="round-1", ttl=120.0)


def global_model(strategy, seed: int = 0) -> torch.nn.Module:
    model = strategy.build_global()
    shape = tuple(getattr(model.config, "input_shape"))
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after a round
        model(torch.randn(8, *shape, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


def bench_case(strategy_name: str, model: str, options: dict) -> list[dict]:
    settings = RunSettings(strategy=strategy_name, model=model, model_options=options)
    strategy = STRATEGIES[strategy_name](settings)
    g = global_model(strategy)
    full = state_bytes(g)
    params = int(sum(p.numel() for p in g.parameters()))
    buffers = int(sum(b.numel() for b in g.buffers()))
    nodes = {i + 1: r for i, r in enumerate(LADDER)}
    t0 = time.perf_counter()
    plans = strategy.make_plans(g, nodes, round=1, rng=np.random.default_rng(0))
    plan_s = time.perf_counter() - t0
    rows = []
    for node, ratio in nodes.items():
        plan = plans[node]
        t1 = time.perf_counter()
        payload = strategy.payload(plan, g, round=1)
        data = encode_payload(payload)
        build_s = time.perf_counter() - t1
        msg = make_message(payload_content(data, round=1, tier=node - 1, ratio=ratio), node)
        sizes = payload_sizes(data)
        kept = float(plan.kept_fraction) if plan is not None else 1.0
        ref = kept * full
        message = wire_bytes(msg)
        rows.append({
            "strategy": strategy_name,
            "model": model,
            "model_options": options,
            "params": params,
            "buffers": buffers,
            "size": LADDER_NAMES[LADDER.index(ratio)],
            "ratio": ratio,
            "kept_fraction": kept,
            "full_model_bytes": full,
            "tensor_bytes": payload.tensor_bytes,
            "index_bytes": sizes.plan,
            "value_bytes": sizes.values,
            "header_bytes": sizes.header,
            "payload_bytes": len(data),
            "message_bytes": message,
            "tensor_vs_kept": payload.tensor_bytes / ref,
            "index_vs_kept": sizes.plan / ref,
            "value_compression": sizes.values / sizes.raw_values if sizes.raw_values else 1.0,
            "payload_vs_kept": len(data) / ref,
            "message_vs_kept": message / ref,
            "payload_build_s": build_s,
            "plans_s": plan_s,
        })
    return rows


def _median_time(fn, repeats: int = REPEATS) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def level_table(model: str) -> list[dict]:
    """Encode/decode time and value compression of ``model``'s payloads per zlib level: the
    full model (FedAvg) and a FIARSE 1/16 share."""
    settings = RunSettings(strategy="fiarse", model=model)
    strategy = STRATEGIES["fiarse"](settings)
    g = global_model(strategy)
    plan = strategy.make_plans(g, {1: 1 / 16}, round=1, rng=np.random.default_rng(0))[1]
    cases = [("full model", Payload("fedavg", 1, model, {}, None, payload_tensors(None, g))),
             ("fiarse 1/16", strategy.payload(plan, g, round=1))]
    out = []
    for label, payload in cases:
        for level in LEVELS:
            enc_s, data = _median_time(lambda: encode_payload(payload, level=level))
            dec_s, _ = _median_time(lambda: decode_payload(data))
            sizes = payload_sizes(data)
            out.append({"model": model, "payload": label, "level": level, "raw_value_bytes": sizes.raw_values,
                        "value_bytes": sizes.values, "value_compression": sizes.values / sizes.raw_values,
                        "encode_s": enc_s, "decode_s": dec_s, "chosen": level == ZLIB_LEVEL})
        print(f"zlib levels on {model} {label}: done", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="cnn1d and resnet8 only")
    ap.add_argument("--out", default=str(HERE / "bench_flower"), help="output stem (.md and .json are added)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    md_path, json_path = Path(args.out + ".md"), Path(args.out + ".json")
    check_writable(md_path)
    check_writable(json_path)
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # as in a ServerApp process
    info = machine_info()
    cases = [("cnn1d", {}), ("resnet8", {})] + ([] if args.quick else [("resnet18", {})])
    rows: list[dict] = []
    for model, options in cases:
        for name in CHANNEL_STRATEGIES:
            rows += bench_case(name, model, options)
            print(f"{name} on {model}: done", flush=True)
    fedra = STRATEGIES["fedra"]
    if fedra.available():
        rows += bench_case("fedra", "mixer_tiny", {})
    for r in rows:
        r["tensor_within_bar"] = abs(r["tensor_vs_kept"] - 1.0) <= BAR
        r["message_within_bar"] = r["message_vs_kept"] <= 1.0 + BAR
    levels = level_table("resnet8" if args.quick else "resnet18")
    lines = [
        "# Flower: bytes sent to a node per round vs kept fraction x full model",
        "",
        machine_markdown(info),
        "",
        "Bar: bytes sent to a node per round within 10% of kept_fraction x full model bytes "
        "(full = every state-dict tensor of the global model, fp32). Ratios are bytes / (kept x full). "
        "Built with the ServerApp's own code path, payload format "
        f"{PAYLOAD_VERSION} (tensor values byte-shuffled and zlib-compressed at level {ZLIB_LEVEL}, lossless).",
        "",
        "* `raw tensor`: the tensor values uncompressed, what scales with the kept fraction; "
        "`index`: the plan's own bytes (FIARSE's element masks, bit-packed + zlib; channel indices); "
        "`values`: the tensor values as sent (compressed); `payload`: the whole encoded payload "
        "(header + index + values) = the one Flower Array we send; `message`: every object Flower "
        "pushes for the message (records, array, metadata), i.e. what crosses the wire apart from HTTP framing.",
        "* `raw ok`: raw tensor bytes within +-10% of kept x full (the payload follows the kept fraction; "
        "uncompressed, index apart, as in bench_submodel). `message ok`: the whole message is at most "
        "1.10 x kept x full. Compression makes most messages *smaller* than kept x full fp32 bytes; "
        "that counts as meeting the bar, so read the raw columns for how the payload scales.",
        "",
        "| strategy | model | size | kept fraction | full bytes | raw tensor | index | values | payload | message "
        "| raw/kept | index/kept | values/raw | message/kept | raw ok | message ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    yes = {True: "yes", False: "no"}
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['model']} | {r['size']} | {r['kept_fraction']:.4f} | {r['full_model_bytes']:,} | "
            f"{r['tensor_bytes']:,} | {r['index_bytes']:,} | {r['value_bytes']:,} | {r['payload_bytes']:,} | "
            f"{r['message_bytes']:,} | {r['tensor_vs_kept']:.3f} | {r['index_vs_kept']:.3f} | "
            f"{r['value_compression']:.3f} | {r['message_vs_kept']:.3f} | {yes[r['tensor_within_bar']]} | "
            f"{yes[r['message_within_bar']]} |")
    lines.append("")
    for model in dict.fromkeys(r["model"] for r in rows):
        sub = [r for r in rows if r["model"] == model]
        t_ok = sum(r["tensor_within_bar"] for r in sub)
        m_ok = sum(r["message_within_bar"] for r in sub)
        worst = max(sub, key=lambda r: r["message_vs_kept"])
        lines.append(f"* {model} ({sub[0]['params']:,} parameters, {sub[0]['buffers']:,} buffer values): raw tensor "
                     f"bytes within 10% in {t_ok}/{len(sub)} rows, whole message within the bar in {m_ok}/{len(sub)}; "
                     f"worst message/kept {worst['message_vs_kept']:.3f} ({worst['strategy']} at size {worst['size']}).")
    misses = [r for r in rows if not r["message_within_bar"]]
    if misses:
        lines += ["", "Why rows miss: " + "; ".join(sorted({_why(r) for r in misses})) + "."]
    lm = levels[0]["model"]
    lines += [
        "",
        f"## zlib level ({lm}; median of {REPEATS}, 1 thread)",
        "",
        "Encode = `encode_payload` (byte shuffle, probe, zlib, container); decode = `decode_payload` "
        "(inflate, unshuffle, plan). Planes whose probe shows under 5% gain (the low mantissa bytes) "
        "are stored as is at every level.",
        "",
        "| payload | level | raw values | values sent | values/raw | encode s | decode s | used |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in levels:
        lines.append(f"| {r['payload']} | {r['level']} | {r['raw_value_bytes']:,} | {r['value_bytes']:,} | "
                     f"{r['value_compression']:.4f} | {r['encode_s']:.3f} | {r['decode_s']:.3f} | "
                     f"{'yes' if r['chosen'] else ''} |")
    doc = {"bench": "flower_bytes", "bar": BAR, "payload_version": PAYLOAD_VERSION, "zlib_level": ZLIB_LEVEL,
           "machine": info, "rows": rows, "zlib_levels": levels,
           "tensor_within_bar": sum(r["tensor_within_bar"] for r in rows),
           "message_within_bar": sum(r["message_within_bar"] for r in rows), "total": len(rows)}
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    atomic_write_text(json_path, json.dumps(doc, indent=2))
    print("\n".join(lines))
    return 0


def _why(r: dict) -> str:
    if r["tensor_vs_kept"] > 1 + BAR:
        return (f"{r['model']}: the buffers (BatchNorm statistics) every node holds whole are not parameters, so "
                "not in the kept fraction, and weigh a lot next to a small model's small shares")
    if r["strategy"] == "fiarse" and r["index_vs_kept"] > BAR:
        return (f"{r['model']}: FIARSE's element masks (the node must learn which elements it holds; bit-packed, "
                "zlib) are large next to a small model's small shares")
    return (f"{r['model']}: fixed bytes (the JSON header with every tensor name and shape, the plan's header "
            "and channel indices, Flower's framing) are large next to a small model's small shares")


if __name__ == "__main__":
    raise SystemExit(main())
