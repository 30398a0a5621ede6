"""The Flower end-of-run export goes through the format registry as ``edge-sdk export
--target`` does: the same bits for an FPGA tier, and the target's preferred format (QCDQ
included) rather than a fallback. Driven with a small stand-in for the server's run."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
import torch

import edge_sdk.cli as cli
from edge_sdk import hw_profiles, models
from edge_sdk.export import save_checkpoint
from edge_sdk.export.formats import get_format
from edge_sdk.flower.exporting import export_tiers


def _qcdq_profile(folder: Path) -> Path:
    """pynq-z2's profile with ``preferred_format = "qcdq"`` under another name."""
    text = (Path(hw_profiles.__file__).parent / "data" / "pynq-z2.toml").read_text(encoding="utf-8")
    assert 'preferred_format = "qonnx"' in text and 'name = "pynq-z2"' in text
    text = text.replace('preferred_format = "qonnx"', 'preferred_format = "qcdq"')
    text = text.replace('name = "pynq-z2"', 'name = "pynq-z2-qcdq"')
    path = folder / "pynq-z2-qcdq.toml"
    path.write_text(text, encoding="utf-8")
    return path


class _Fleet:
    def __init__(self, targets: dict[int, str]) -> None:
        self.nodes = {n: SimpleNamespace(hw_profile=t, tier=i, ratio=1.0) for i, (n, t) in enumerate(targets.items())}

    def placed(self) -> list[int]:
        return sorted(self.nodes)


class _Strategy:
    """The three methods export_tiers calls on a strategy (every size is the whole model)."""

    def sizes(self, ratios: dict[int, float]) -> dict[int, float]:
        return dict(ratios)

    def export_size(self, ratio: float) -> float:
        return ratio

    def tier_model(self, global_model: torch.nn.Module, ratio: float, *, round: int) -> torch.nn.Module:
        return copy.deepcopy(global_model)


@pytest.fixture(scope="module")
def global_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.create("cnn1d", width=0.5)
    with torch.no_grad():
        model.train()(torch.randn(64, 1, 40))  # non-trivial BatchNorm statistics
    return model.eval()


@pytest.fixture(scope="module")
def exported(global_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("flower-export")
    qcdq_target = str(_qcdq_profile(folder))
    run = SimpleNamespace(
        settings=SimpleNamespace(dataset="mnist1d", seed=0, export_samples=32, rounds=1),
        fleet=_Fleet({1: "pynq-z2", 2: qcdq_target}), strategy=_Strategy(), global_model=global_model,
        out_dir=folder,
    )
    arts = {a["target"]: a for a in export_tiers(run)}
    return arts, qcdq_target, folder


def _cli_export(model, target: str, folder: Path) -> dict:
    ckpt = folder / "model.pt"
    save_checkpoint(model, ckpt)
    js = folder / f"{Path(target).stem}.json"
    code = cli.main(["export", "--checkpoint", str(ckpt), "--target", target, "--calib-synthetic", "8",
                     "--out", str(folder / f"{Path(target).stem}.cli.onnx"), "--json", str(js)])
    assert code == 0
    return json.loads(js.read_text())


def test_fpga_tier_gets_the_bits_the_cli_picks_for_its_target(exported, global_model, tmp_path):
    arts, _, _ = exported
    art = arts["pynq-z2"]
    assert "error" not in art, art.get("error")
    assert art["format"] == "qonnx" and Path(art["path"]).stat().st_size > 0
    est = art["fpga_estimate"]
    assert est["fits"] and (est["weight_bits"], est["act_bits"]) == (art["weight_bits"], art["act_bits"])
    assert (art["weight_bits"], art["act_bits"]) != get_format("qonnx").default_bits  # not a blind W4A4
    doc = _cli_export(global_model, "pynq-z2", tmp_path)
    assert doc["report"]["format"] == "qonnx"
    assert (doc["report"]["weight_bits"], doc["report"]["act_bits"]) == (art["weight_bits"], art["act_bits"])
    assert (art["report"]["weight_bits"], art["report"]["act_bits"]) == (art["weight_bits"], art["act_bits"])


def test_target_preferring_qcdq_gets_a_qcdq_file(exported, global_model, tmp_path):
    arts, qcdq_target, _ = exported
    assert hw_profiles.load(qcdq_target).preferred_format == "qcdq"  # the schema takes it
    art = arts[qcdq_target]
    assert "error" not in art, art.get("error")
    assert art["format"] == "qcdq" and art["report"]["format"] == "qcdq"
    assert art["path"].endswith(get_format("qcdq").suffix)
    ops = {n.op_type for n in onnx.load(art["path"]).graph.node}
    assert {"QuantizeLinear", "Clip", "DequantizeLinear"} <= ops and "Quant" not in ops
    doc = _cli_export(global_model, qcdq_target, tmp_path)
    assert doc["report"]["format"] == "qcdq"
    assert (doc["report"]["weight_bits"], doc["report"]["act_bits"]) == (art["weight_bits"], art["act_bits"])
