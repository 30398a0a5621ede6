"""`edge-sdk extract`: a plan file that export and the submodel API read back."""

from __future__ import annotations

import json

import torch

from edge_sdk import models
from edge_sdk.cli import main
from edge_sdk.submodel import SubmodelPlan


def test_extract_writes_plan_that_applies_to_the_global_model(tmp_path, capsys):
    out = tmp_path / "c.plan"
    assert main(["extract", "--model", "cnn1d", "--strategy", "fiarse-structured", "--ratio", "1/4", "--out", str(out), "--json", "-"]) == 0
    summary = json.loads(capsys.readouterr().out)
    plan = SubmodelPlan.from_bytes(out.read_bytes())
    assert plan.strategy == "fiarse-structured" and summary["kept_fraction"] == plan.kept_fraction
    torch.manual_seed(0)
    sub = plan.extract(models.create("cnn1d"))
    assert sum(p.numel() for p in sub.parameters()) == summary["submodel_parameters"] < summary["global_parameters"]


def test_extract_bad_ratio_and_unwritable_out(tmp_path, capsys):
    assert main_exit(["extract", "--model", "cnn1d", "--strategy", "heterofl", "--ratio", "0", "--out", str(tmp_path / "p")]) == 2
    assert main(["extract", "--model", "cnn1d", "--strategy", "heterofl", "--ratio", "1/4", "--out", str(tmp_path / "no" / "p")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def main_exit(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse refuses bad values with exit 2
        return exc.code
