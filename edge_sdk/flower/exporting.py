"""End of a run: each tier's submodel exported for its members' targets.

A tier whose members include an FPGA hardware profile (``preferred_format = "qonnx"``) gets a
Brevitas QONNX export (when ``edge_sdk.export.to_qonnx`` is available); every other target
gets integer-only int8 ONNX (``to_int_onnx``) tuned for the member's CPU (its hardware
profile, or this host for a measured device). Calibration and parity samples come from the
run's data set on the server. A failed export is listed with its error; the others go on.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from edge_sdk.errors import EdgeSDKError

log = logging.getLogger(__name__)

__all__ = ["export_tiers", "export_targets"]

_EVAL = 256


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def export_targets(fleet: Any, sizes: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """One entry per (size, target) the placed nodes need: ratio, tier, target, format, nodes.

    ``sizes``: node -> the size it trains (default: its tier's ratio)."""
    from edge_sdk import hw_profiles

    out: dict[tuple[float, str | None], dict[str, Any]] = {}
    for node in fleet.placed():
        rec = fleet.nodes[node]
        target = rec.hw_profile
        fmt = "int8-onnx"
        if target:
            try:
                fmt = hw_profiles.load(target).preferred_format
            except EdgeSDKError as exc:
                log.warning("node %d: hardware profile %r not loadable here (%s); exporting int8 ONNX for this host",
                            node, target, exc)
                target = None
        ratio = float(sizes[node]) if sizes is not None and node in sizes else float(rec.ratio)
        key = (ratio, target)
        entry = out.setdefault(key, {"ratio": ratio, "tier": rec.tier, "target": target,
                                     "format": fmt, "nodes": []})
        entry["nodes"].append(node)
    return [out[k] for k in sorted(out, key=lambda k: (-k[0], k[1] or ""))]


def export_tiers(run: Any) -> list[dict[str, Any]]:
    """Export every tier of ``run`` (a :class:`edge_sdk.flower.server.ServerRun`)."""
    try:
        from edge_sdk import export
    except ImportError as exc:  # pragma: no cover - export ships with the SDK
        log.warning("edge_sdk.export is not available (%s); nothing exported", exc)
        return []
    from edge_sdk import datasets

    s = run.settings
    placed = run.fleet.placed()
    sizes = run.strategy.sizes({n: float(run.fleet.nodes[n].ratio) for n in placed})
    targets = export_targets(run.fleet, {n: run.strategy.export_size(r) for n, r in sizes.items()})
    if not targets:
        return []
    data = datasets.load(s.dataset, seed=s.seed)
    x, y = data.test.tensors
    calib = x[: s.export_samples].numpy()
    eval_x = x[s.export_samples: s.export_samples + _EVAL].numpy()
    eval_y = y[s.export_samples: s.export_samples + _EVAL].numpy()
    if len(eval_x) == 0:
        eval_x, eval_y = calib, y[: s.export_samples].numpy()
    folder = run.out_dir / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = []
    models: dict[float, torch.nn.Module] = {}
    for t in targets:
        ratio = t["ratio"]
        if ratio not in models:
            models[ratio] = run.strategy.tier_model(run.global_model, ratio, round=s.rounds).eval()
        model = models[ratio]
        entry = dict(t, params=int(sum(int(p.numel()) for p in model.parameters())),
                     nonzero_params=int(sum(int((p != 0).sum()) for p in model.parameters())))
        stem = f"tier{t['tier']}-r{ratio:.4g}-{_safe(t['target'] or 'host')}"
        try:
            if t["format"] == "qonnx" and hasattr(export, "to_qonnx"):
                path = folder / f"{stem}.qonnx.onnx"
                report = export.to_qonnx(model, calib, path, eval_data=(eval_x, eval_y))
            else:
                if t["format"] == "qonnx":
                    entry["note"] = "edge_sdk.export.to_qonnx not available: exported int8 ONNX instead"
                path = folder / f"{stem}.int8.onnx"
                report = export.to_int_onnx(model, calib, path, eval_data=(eval_x, eval_y), target=t["target"],
                                            measure_latency=False)
            entry.update(path=str(path), format=report.format, report=report.to_dict())
        except (EdgeSDKError, RuntimeError, ValueError) as exc:
            entry.update(path=None, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            log.warning("export of tier %s for %s failed: %s", t["tier"], t["target"] or "host", entry["error"])
        artifacts.append(entry)
    return artifacts
