"""The Flower example app, copied out of the repository and run as a user would run it.

A user who installed the package (``pip install "edge-fl-sdk[flower,data]"``) copies
``examples/flower_app`` anywhere and runs it against a local deployment (one SuperLink, three
SuperNodes on 127.0.0.1) with the app's default run settings. The run must end with exit 0, a
summary and one artifact per tier; every tier must have learned (its last training loss below
ln 10, the loss of a 10-class guess) and the smallest tier's final accuracy must be at least
20 points above chance; every edge_sdk log line must be printed once and carry its logger's
name. About 3-4 min here (ten rounds at the defaults): marked slow. The run's log is written to
``EDGE_SDK_EXAMPLE_LOG`` when that variable names a file (the README's example output).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest

from test_flower_deployment import BIN, PROFILES, ROOT, Deployment, _node_config  # noqa: E402 - pytest puts tests/ on sys.path

pytestmark = pytest.mark.slow
RUN_GUARD_S = 600


def test_example_app_runs_from_a_copy_outside_the_repo(tmp_path):
    app = tmp_path / "my-flower-app"
    shutil.copytree(ROOT / "examples" / "flower_app", app)
    assert ROOT not in app.parents
    d = Deployment(tmp_path)
    d.env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "0.2"
    out = tmp_path / "run"
    try:
        d.start_superlink()
        for i, hw in enumerate(PROFILES):
            d.start_supernode(f"node{i}", _node_config(i, hw, tmp_path))
        proc = d._start("flwr-run", [str(BIN / "flwr"), "run", str(app), "local-test", "--stream",
                                     "-c", f'out-dir="{out}"'], d.cli_home)
        t0 = time.monotonic()
        while proc.poll() is None:
            assert time.monotonic() - t0 < RUN_GUARD_S, f"flwr run hangs:\n{d.log('flwr-run')[-4000:]}"
            d.check_alive("superlink")
            time.sleep(0.5)
        print(f"\nflwr run of the copied app took {time.monotonic() - t0:.1f} s")
        log = d.log("flwr-run")
        if os.environ.get("EDGE_SDK_EXAMPLE_LOG"):
            Path(os.environ["EDGE_SDK_EXAMPLE_LOG"]).write_text(log)
    finally:
        d.stop_all()
    assert proc.returncode == 0, log[-4000:]
    summary = json.loads((out / "summary.json").read_text())

    # every tier learned: its nodes' last training loss is below ln 10 (chance on 10 classes)
    last = summary["rounds"][-1]["nodes"]
    assert len(last) == len(PROFILES)
    for node, entry in last.items():
        loss = entry["metrics"]["train_loss"]
        assert loss < math.log(10) - 0.1, f"tier {entry['tier']} (size {entry['ratio']}) learned nothing: loss {loss}"
    # the smallest tier learned to classify: its nodes' final accuracy >= chance + 20 points
    ev = summary["evaluations"][-1]
    sizes = {entry["tier"]: entry["ratio"] for entry in last.values()}
    smallest = min(sizes, key=sizes.get)
    acc = ev["tier_accuracy"][str(smallest)]
    assert acc >= 0.1 + 0.2, f"smallest tier (size {sizes[smallest]}) ends at accuracy {acc:.3f}"
    arts = summary["artifacts"]
    assert {a["target"] for a in arts} == set(PROFILES)
    assert all(Path(a["path"]).is_file() for a in arts if not a.get("error"))

    # logging configured once: no line twice, none through the root logger's default format
    sdk_lines = [line for line in log.splitlines() if "edge_sdk." in line]
    assert sdk_lines and all(line.startswith(("INFO edge_sdk.", "WARNING edge_sdk.")) for line in sdk_lines), sdk_lines
    assert len(sdk_lines) == len(set(sdk_lines)), "an edge_sdk log line was printed twice"
    assert "INFO:edge_sdk" not in log and "WARNING:root" not in log and "DEBUG:flwr" not in log, log[-3000:]
    assert "Please use QuantFormat.QDQ" not in log, "onnxruntime's x64 QDQ advice leaked into an Arm export's log"
