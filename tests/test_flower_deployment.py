"""A real Flower deployment on 127.0.0.1: one SuperLink, three SuperNodes, ``flwr run``.

Every process is started in its own session and stopped by PID at the end (with every
descendant Flower spawned: SuperExec, ServerApp, ClientApp processes), even when a test
fails. Telemetry is off; only loopback ports are used.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="needs the flower extra (flwr >= 1.41)")
psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower_app"
BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
PROFILES = ("raspberry-pi-5", "raspberry-pi-4", "pynq-z2")  # three clearly separated capability levels
LADDER = "1/2,1/8,1/32"  # nobody holds the whole model, so "unchanged where unheld" is tested


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class Deployment:
    """Processes of a local deployment, each tracked by PID."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.seen: dict[int, str] = {}  # every PID started or spawned by one of ours
        self.env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")
        self.port = free_port()
        self.cli_home = root / "cli"
        self.cli_home.mkdir()
        (self.cli_home / "config.toml").write_text(
            '[superlink]\ndefault = "local-test"\n\n'
            f'[superlink.local-test]\naddress = "{LOOPBACK}:{self.port}"\ninsecure = true\n')

    def _start(self, name: str, args: list[str], home: Path) -> subprocess.Popen:
        home.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, env=dict(self.env, FLWR_HOME=str(home)), cwd=home, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs[name] = proc
        self.seen[proc.pid] = name
        return proc

    def start_superlink(self) -> None:
        self._start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", LOOPBACK,
                                  "--port", str(self.port), "--disable-runtime-dependency-installation"],
                    self.root / "superlink")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((LOOPBACK, self.port)) == 0:
                    return
            self.check_alive("superlink")
            time.sleep(0.2)
        raise RuntimeError("the SuperLink did not open its port within 60 s")

    def start_supernode(self, name: str, node_config: str) -> None:
        self._start(name, [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"{LOOPBACK}:{self.port}",
                           "--host", LOOPBACK, "--port", str(free_port()), "--node-config", node_config],
                    self.root / name)

    def check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _descendants(self) -> None:
        for pid, name in list(self.seen.items()):
            try:
                for child in psutil.Process(pid).children(recursive=True):
                    self.seen.setdefault(child.pid, f"{name}/child")
            except psutil.Error:
                continue

    def run(self, overrides: str) -> subprocess.Popen:
        """``flwr run <app> local-test --stream -c overrides`` (returns the running CLI)."""
        args = [str(BIN / "flwr"), "run", str(APP), "local-test", "--stream", "-c", overrides]
        return self._start(f"flwr-run-{len(self.procs)}", args, self.cli_home)

    def kill(self, name: str) -> None:
        """Kill one process (a SuperNode) and everything it spawned, by PID."""
        self._descendants()
        proc = self.procs[name]
        victims = [proc.pid] + [p for p, n in self.seen.items() if n.startswith(f"{name}/")]
        for pid in victims:
            _signal(pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        self._descendants()
        for pid in list(self.seen):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for pid in list(self.seen):
            _signal(pid, signal.SIGKILL)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def alive(self) -> list[int]:
        out = []
        for pid in self.seen:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
            except psutil.Error:
                continue
        return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---- the tests -----------------------------------------------------------------------------

NUM_PARTITIONS = 4  # three nodes from the start, one joining later in the kill test
RUN_GUARD_S = 420  # hang guard for one `flwr run`; the measured time is printed


def _node_config(i: int, hw: str, root: Path) -> str:
    return (f'hw-profile="{hw}" partition-id={i} num-partitions={NUM_PARTITIONS} alpha=0.3 seed=0 '
            f'cache-dir="{root / f"cache{i}"}" threads=1')


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("flower-deployment")
    d = Deployment(root)
    d.env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "0.2"
    try:
        d.start_superlink()
        for i, hw in enumerate(PROFILES):
            d.start_supernode(f"node{i}", _node_config(i, hw, root))
        yield d
    finally:
        d.stop_all()
        left = d.alive()
        assert not left, f"processes still alive after stop: {left}"


def _overrides(out: Path, **extra) -> str:
    cfg = {"rounds": 2, "local-steps": 3, "ladder": f'"{LADDER}"', "out-dir": f'"{out}"', "min-nodes": 3,
           "save-models": "true", "query-timeout": 90.0, "round-timeout": 90.0, "poll-interval": 0.2}
    cfg.update(extra)
    return " ".join(f"{k}={v}" for k, v in cfg.items())


def _wait_run(d: Deployment, proc: subprocess.Popen, name: str, out: Path, during=None) -> dict:
    t0 = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - t0 > RUN_GUARD_S:
            raise AssertionError(f"flwr run did not finish within {RUN_GUARD_S} s:\n{d.log(name)[-4000:]}")
        if during is not None:
            during()
        for node in [n for n in d.procs if n.startswith("superlink")]:
            d.check_alive(node)
        time.sleep(0.5)
    took = time.monotonic() - t0
    print(f"\nflwr run ({name}) took {took:.1f} s")
    assert proc.returncode == 0, d.log(name)[-4000:]
    path = out / "summary.json"
    assert path.is_file(), f"no run summary; flwr run log:\n{d.log(name)[-4000:]}"
    summary = json.loads(path.read_text())
    summary["_took_s"] = took
    return summary


def _summary_rounds(out: Path) -> int:
    try:
        return len(json.loads((out / "summary.json").read_text())["rounds"])
    except (OSError, ValueError, KeyError):
        return 0


def test_three_nodes_two_rounds_of_fiarse(deployment):
    d = deployment
    out = d.root / "run-fiarse"
    proc = d.run(_overrides(out, strategy='"fiarse"'))  # the app's default is fiarse-structured
    name = [n for n, p in d.procs.items() if p is proc][0]
    summary = _wait_run(d, proc, name, out)
    assert summary["strategy"] == "fiarse"
    nodes = summary["nodes"]
    assert sorted(v["hw_profile"] for v in nodes.values()) == sorted(PROFILES)
    size = {v["hw_profile"]: v["ratio"] for v in nodes.values()}
    assert size["raspberry-pi-5"] > size["raspberry-pi-4"] > size["pynq-z2"]
    assert set(size.values()) <= {0.5, 0.125, 0.03125}
    assert len(summary["rounds"]) == 2
    for rnd in summary["rounds"]:
        assert rnd["aggregated"] and rnd["updates"] == 3, rnd
        for node, entry in rnd["nodes"].items():
            metrics = entry["metrics"]
            # the node trained a submodel of its tier's size, counted on the node itself (the
            # released budget: ratio x the conv/linear weights, the norm parameters on top)
            assert nodes[node]["ratio"] <= metrics["trained-fraction"] <= nodes[node]["ratio"] + 0.02
            assert metrics["trained-fraction"] == pytest.approx(entry["kept_fraction"], abs=1e-9)
            # what the node received is what the server sent for it
            assert metrics["bytes-received"] == entry["bytes_sent"]
    # the global model changed only where some node held it
    from edge_sdk.submodel import SubmodelPlan

    init = dict(np.load(out / "global-initial.npz"))
    final = dict(np.load(out / "global-round-2.npz"))
    held = {k: np.zeros(v.shape, bool) for k, v in init.items()}
    plans = sorted((out / "plans").glob("round-*-node-*.plan"))
    assert len(plans) == 6
    for f in plans:
        plan = SubmodelPlan.from_bytes(f.read_bytes())
        for k in held:
            if k in plan.masks:
                held[k] |= plan.masks[k].numpy()
            else:
                held[k][...] = True
    unheld = sum(int((~h).sum()) for h in held.values())
    assert unheld > 1000
    for k in init:
        assert not ((init[k] != final[k]) & ~held[k]).any(), k
    assert any((init[k] != final[k]).any() for k in init)
    # evaluation on every node, and one exported artifact per tier target
    ev = summary["evaluations"][-1]
    assert set(ev["nodes"]) == set(nodes)
    assert all(0.0 <= e["accuracy"] <= 1.0 for e in ev["nodes"].values())
    arts = {a["target"]: a for a in summary["artifacts"]}
    assert set(arts) == set(PROFILES)
    assert arts["raspberry-pi-4"]["format"] == "int8-onnx" and Path(arts["raspberry-pi-4"]["path"]).is_file()
    assert arts["pynq-z2"]["format"] == "qonnx" or arts["pynq-z2"].get("error")


def test_killing_a_supernode_mid_run_does_not_stop_it(deployment):
    d = deployment
    out = d.root / "run-kill"
    proc = d.run(_overrides(out, rounds=2, export="false", **{"round-timeout": 30.0}))
    name = [n for n, p in d.procs.items() if p is proc][0]
    state = {"joined": False, "killed": False}

    def during():
        if not state["joined"] and (out / "summary.json").is_file():
            # a node joins once the first three are placed: it is queried before round 2
            d.start_supernode("node3", _node_config(3, "x86-gateway-j6412", d.root))
            state["joined"] = True
        if not state["killed"] and _summary_rounds(out) >= 1:
            d.kill("node2")  # the pynq-z2 node dies after round 1
            state["killed"] = True

    summary = _wait_run(d, proc, name, out, during)
    assert state["killed"]
    rounds = summary["rounds"]
    assert len(rounds) == 2 and all(r["aggregated"] for r in rounds)
    by_hw = {v["hw_profile"]: n for n, v in summary["nodes"].items()}
    dead, late = by_hw["pynq-z2"], by_hw.get("x86-gateway-j6412")
    assert "left_out" in rounds[-1]["nodes"][dead]
    assert rounds[-1]["updates"] >= 2
    for hw in ("raspberry-pi-5", "raspberry-pi-4"):
        assert all("left_out" not in r["nodes"][by_hw[hw]] for r in rounds)
    # the late joiner was queried, placed and trained
    assert late is not None and summary["nodes"][late]["joined_round"] >= 1
    assert "metrics" in rounds[1]["nodes"][late] and rounds[1]["updates"] == 3


def test_one_hostile_supernode_among_honest_ones(deployment):
    """A SuperNode configured to corrupt its updates (node config ``attack="corrupt"``):
    the run completes, every corrupted update is refused, the honest ones are merged and the
    global model stays finite."""
    d = deployment
    honest = [n for n in d.procs if n.startswith("node") and d.procs[n].poll() is None]
    d.start_supernode("hostile", _node_config(0, "raspberry-pi-4", d.root) + ' attack="corrupt"')
    out = d.root / "run-hostile"
    proc = d.run(_overrides(out, strategy='"heterofl"', **{"min-nodes": len(honest) + 1}))
    name = [n for n, p in d.procs.items() if p is proc][0]
    summary = _wait_run(d, proc, name, out)
    assert len(summary["rounds"]) == 2
    for rnd in summary["rounds"]:
        refused = [e for e in rnd["nodes"].values() if "left_out" in e]
        assert rnd["aggregated"] and rnd["updates"] == len(honest), rnd
        assert len(refused) == 1 and "checksum" in refused[0]["left_out"].lower(), refused
    final = dict(np.load(out / "global-round-2.npz"))
    assert all(np.isfinite(v).all() for v in final.values())
