"""End of a run: each tier's submodel exported for its members' targets.

Each target is exported in its hardware profile's ``preferred_format`` through the format
registry (:mod:`edge_sdk.export.formats`), exactly as ``edge-sdk export --target`` does it:
the format's ``fit`` chooses the bits (for an FPGA, the widest whose resource estimate
fits) and its ``export`` writes and verifies. A measured device without a profile gets
int8 ONNX for this host. Calibration and parity samples come from the run's data set on the
server. A failed export is listed with its error; the others go on.
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
            entry.update(_export_one(model, t, calib, (eval_x, eval_y), folder, stem))
        except (EdgeSDKError, RuntimeError, ValueError) as exc:
            entry.update(path=None, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            log.warning("export of tier %s for %s failed: %s", t["tier"], t["target"] or "host", entry["error"])
        artifacts.append(entry)
    return artifacts


def _export_one(model: torch.nn.Module, target: dict[str, Any], calib: Any, eval_data: Any, folder: Any,
                stem: str) -> dict[str, Any]:
    """Fit and write one (model, target); the fields it adds to the artifact entry."""
    from edge_sdk.export.formats import get_format

    fmt = get_format(target["format"])
    fit = fmt.fit(model, tuple(calib.shape[1:]), target["target"])
    path = folder / f"{stem}{fmt.suffix}"
    report = fmt.export(model, calib, path, fit, eval_data=eval_data, measure_latency=False)
    return {"path": str(path), "format": report.format, "weight_bits": fit.weight_bits,
            "act_bits": fit.act_bits, "fpga_estimate": fit.estimate.to_dict() if fit.estimate else None,
            "report": report.to_dict()}
