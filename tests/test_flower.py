"""edge_sdk.flower without a deployment: payload encoding, node work, strategies, and the
whole ServerApp loop driven through an in-process Grid that hands each message to the
real ClientApp (timeouts, late joiners, refused updates, error replies)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="needs the flower extra (flwr >= 1.41)")

from flwr.app import Context, Error, Message, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from edge_sdk import models, submodel  # noqa: E402
from edge_sdk.errors import InvalidInputError, MissingDependencyError, UnknownNameError  # noqa: E402
from edge_sdk.flower import make_client_app, run_server  # noqa: E402
from edge_sdk.flower._errors import FederationError, PayloadError  # noqa: E402
from edge_sdk.flower.codec import (  # noqa: E402
    Payload,
    decode_payload,
    encode_payload,
    materialize,
    payload_tensors,
    state_bytes,
)
from edge_sdk.flower.config import NodeSettings, RunSettings, parse_ladder  # noqa: E402
from edge_sdk.flower.node import capability_report, local_data  # noqa: E402
from edge_sdk.flower.server import exchange  # noqa: E402
from edge_sdk.flower.strategies import build_global, make_strategy, strategy_names  # noqa: E402
from edge_sdk.strategies import Strategy, strategy_class  # noqa: E402
from edge_sdk.submodel import SubmodelPlan  # noqa: E402

PLAN_STRATEGIES = ("fiarse", "fiarse-structured", "heterofl", "fedrolex")
PROFILES = {11: "raspberry-pi-5", 22: "raspberry-pi-4", 33: "pynq-z2"}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained_global(seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    g = models.create("cnn1d", **options)
    g.train()
    with torch.no_grad():
        g(torch.randn(16, 1, 40))  # non-trivial BatchNorm statistics
    return g.eval()


# ---- payload encoding ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", PLAN_STRATEGIES)
@pytest.mark.parametrize("ratio", [1.0, 0.25, 1 / 16])
def test_payload_rebuilds_exactly_the_servers_submodel(strategy, ratio):
    g = _trained_global()
    plan = submodel.plan(strategy, g, ratio, round=2)
    payload = Payload(strategy, 2, "cnn1d", {}, plan, payload_tensors(plan, g))
    data = encode_payload(payload)
    assert data.startswith(b"EDGEPAYL") and b"pickle" not in data[:64]
    got = decode_payload(data)
    assert set(got.tensors) == set(plan.held_shapes())
    for name, shape in plan.held_shapes().items():
        assert tuple(got.tensors[name].shape) == tuple(shape)
    sub, ref = materialize(got).eval(), plan.extract(g).eval()
    x = torch.randn(5, 1, 40)
    with torch.no_grad():
        assert torch.equal(sub(x), ref(x))


def test_payload_carries_no_unheld_values():
    g = _trained_global()
    plan = submodel.plan("fiarse", g, 0.25)
    payload = Payload("fiarse", 0, "cnn1d", {}, plan, payload_tensors(plan, g))
    sent = {float(v) for t in payload.tensors.values() for v in t.reshape(-1)}
    name = "features.3.weight"
    unheld = g.state_dict()[name].reshape(-1)[~plan.masks[name].reshape(-1)]
    assert unheld.numel() > 0
    assert not any(float(v) in sent for v in unheld[:200])


def test_payload_bytes_follow_the_kept_fraction():
    g = _trained_global(width=2)
    full = state_bytes(g)
    for strategy in PLAN_STRATEGIES:
        for ratio in (1.0, 0.5, 0.25):
            plan = submodel.plan(strategy, g, ratio)
            payload = Payload(strategy, 0, "cnn1d", {"width": 2}, plan, payload_tensors(plan, g))
            assert payload.tensor_bytes == pytest.approx(plan.kept_fraction * full, rel=0.10), (strategy, ratio)


def test_fedavg_payload_is_the_whole_model():
    g = _trained_global()
    payload = Payload("fedavg", 0, "cnn1d", {}, None, payload_tensors(None, g))
    got = materialize(decode_payload(encode_payload(payload)))
    for name, t in g.state_dict().items():
        assert torch.equal(got.state_dict()[name], t)


@pytest.mark.parametrize("mangle", ["magic", "truncate", "fill"])
def test_malformed_payload_is_refused(mangle):
    g = _trained_global()
    plan = submodel.plan("heterofl", g, 0.5)
    payload = Payload("heterofl", 0, "cnn1d", {}, plan, payload_tensors(plan, g))
    data = encode_payload(payload)
    if mangle == "magic":
        data = b"NOTEDGE!" + data[8:]
    elif mangle == "truncate":
        data = data[: len(data) - 100]
    else:
        payload.fill = "bogus"
        data = encode_payload(payload)
    with pytest.raises(PayloadError):
        decode_payload(data)


def test_payload_with_wrong_tensors_is_refused():
    g = _trained_global()
    plan = submodel.plan("fiarse", g, 0.5)
    tensors = payload_tensors(plan, g)
    tensors.pop("fc.bias")
    with pytest.raises(PayloadError, match="fc.bias"):
        materialize(Payload("fiarse", 0, "cnn1d", {}, plan, tensors))


# ---- settings --------------------------------------------------------------------------------


def test_run_settings_parse_and_refuse():
    s = RunSettings.from_config({"rounds": 4, "ladder": "1/2, 1/8", "model-options": '{"width": 0.5}',
                                 "export": "false", "round-timeout": 2})
    assert (s.rounds, s.ladder, s.model_options, s.export, s.round_timeout) == (4, (0.5, 0.125), {"width": 0.5},
                                                                                   False, 2.0)
    for bad, key in [({"rounds": 0}, "rounds"), ({"lr": "fast"}, "lr"), ({"ladder": "1,2"}, "ladder"),
                     ({"model-options": "{"}, "model-options"), ({"momentum": 1.5}, "momentum")]:
        with pytest.raises(InvalidInputError, match=key):
            RunSettings.from_config(bad)
    assert parse_ladder("1/64,1,1/4") == (1.0, 0.25, 1 / 64)


def test_node_settings_parse_and_refuse():
    n = NodeSettings.from_config({"hw-profile": "pynq-z2", "partition-id": 2, "num-partitions": 3})
    assert (n.hw_profile, n.partition_id) == ("pynq-z2", 2)
    with pytest.raises(InvalidInputError, match="partition-id"):
        NodeSettings.from_config({"partition-id": 3, "num-partitions": 3})
    with pytest.raises(InvalidInputError, match="alpha"):
        NodeSettings.from_config({"alpha": 0})


# ---- node work -------------------------------------------------------------------------------


def test_local_partitions_are_disjoint_non_iid_and_cached(tmp_path):
    parts = [local_data(NodeSettings(partition_id=i, num_partitions=3, cache_dir=str(tmp_path)), "mnist1d")
             for i in range(3)]
    rows = [{tuple(np.round(x.numpy().ravel()[:8], 5)) for x in p.train.tensors[0]} for p in parts]
    assert not rows[0] & rows[1] and not rows[1] & rows[2]
    assert sum(p.num_train for p in parts) == 4000
    mixes = np.array([np.array(p.label_counts) / p.num_train for p in parts])
    assert np.abs(mixes[0] - mixes[1]).sum() > 0.2  # Dirichlet(0.3): clearly different label mixes
    assert len(list(tmp_path.glob("data-mnist1d-*.npz"))) == 3
    again = local_data(NodeSettings(partition_id=1, num_partitions=3, cache_dir=str(tmp_path)), "mnist1d")
    assert torch.equal(again.train.tensors[0], parts[1].train.tensors[0])


def test_capability_report_from_profile_and_measured_once(tmp_path, monkeypatch):
    report, cached = capability_report(NodeSettings(hw_profile="pynq-z2"), "cnn1d")
    assert report.device.source == "hw:pynq-z2" and not cached
    calls = []
    import edge_sdk.profiler as profiler

    def measure(**kw):  # stands for the real device measurement (slow); counts the calls
        calls.append(kw)
        return profiler.build_report(model=kw["model"], quick=True, hw="raspberry-pi-4")

    real = profiler.build_report
    monkeypatch.setattr(profiler, "build_report", lambda **kw: real(**kw) if kw.get("hw") else measure(**kw))
    settings = NodeSettings(cache_dir=str(tmp_path))
    first, c1 = capability_report(settings, "cnn1d")
    second, c2 = capability_report(settings, "cnn1d")
    assert len(calls) == 1 and (c1, c2) == (False, True)
    assert second.to_json() == first.to_json()


# ---- strategies ------------------------------------------------------------------------------


def test_every_rule_is_a_small_class_over_the_shared_base():
    assert {"fiarse", "fiarse-structured", "heterofl", "fedrolex", "fedra", "fedtsa", "fedavg"} <= set(strategy_names())
    for name in strategy_names():
        assert issubclass(strategy_class(name), Strategy) and strategy_class(name).name == name
    assert "fedtsa" in strategy_names(available_only=True)
    for name in strategy_names(available_only=True):
        extra = {"server_data": "mnist1d:64"} if name == "fedtsa" else {}
        assert make_strategy(RunSettings(strategy=name, **extra)).name == name
    with pytest.raises(UnknownNameError, match="known"):
        make_strategy(RunSettings(strategy="fedmagic"))
    for name in set(strategy_names()) - set(strategy_names(available_only=True)):
        with pytest.raises(MissingDependencyError, match=name):
            make_strategy(RunSettings(strategy=name))
    # FedTSA's stage 2 needs server-side data: without server-data it is refused, not run as stage 1 only
    with pytest.raises(InvalidInputError, match="server-data is empty.*fedtsa.*server-side data"):
        make_strategy(RunSettings(strategy="fedtsa"))


def test_strategy_shares_one_plan_per_size_and_fedavg_sends_everything():
    s = make_strategy(RunSettings(strategy="heterofl"))
    g = build_global(s, RunSettings(strategy="heterofl"), np.random.default_rng(0))
    plans = s.make_plans(g, {1: 0.5, 2: 0.25, 3: 0.5}, round=1, rng=np.random.default_rng(0))
    assert plans[1] is plans[3] and plans[1] is not plans[2]
    assert plans[1].kept_fraction > plans[2].kept_fraction
    f = make_strategy(RunSettings(strategy="fedavg"))
    assert all(p is None for p in f.make_plans(g, {1: 0.25}, round=1, rng=np.random.default_rng(0)).values())


def test_exchange_stops_waiting_for_suspects_only():
    class SlowGrid:
        def __init__(self):
            self.pulls = 0

        def push_messages(self, msgs):
            return [f"m{i}" for i, _ in enumerate(msgs)]

        def pull_messages(self, ids):
            self.pulls += 1
            return [_Reply("m0")] if "m0" in ids else []

    grid = SlowGrid()
    replies, missing = exchange(grid, {1: object(), 2: object()}, timeout=0.3, poll=0.01, suspects={2})
    assert set(replies) == {1} and missing == [2] and grid.pulls == 1
    grid = SlowGrid()
    replies, missing = exchange(grid, {1: object(), 2: object()}, timeout=0.3, poll=0.01)
    assert missing == [2] and grid.pulls > 3  # 2 is not a suspect: waited until the deadline


class _Reply:
    def __init__(self, mid):
        self.metadata = type("M", (), {"reply_to_message_id": mid})()


# ---- the ServerApp loop over an in-process Grid ----------------------------------------------


class FakeGrid:
    """Delivers each pushed message to the real ClientApp with the node's own Context.

    ``silent`` nodes never answer; ``on_push(grid, message)`` runs before delivery (to add
    nodes mid-run); ``tamper(node, reply)`` may replace a reply.
    """

    def __init__(self, nodes, run_config, *, silent=(), on_push=None, tamper=None):
        self.app = make_client_app()
        self.run_config = dict(run_config)
        self.contexts = {}
        self.replies = {}
        self.silent = set(silent)
        self.on_push = on_push
        self.tamper = tamper
        self.log = []
        for node, cfg in nodes.items():
            self.add_node(node, cfg)

    def add_node(self, node, cfg):
        self.contexts[node] = Context(run_id=1, node_id=node, node_config=dict(cfg), state=RecordDict(),
                                      run_config=self.run_config)

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            node = msg.metadata.dst_node_id
            self.log.append((node, msg.metadata.message_type, msg.metadata.group_id))
            if self.on_push:
                self.on_push(self, msg)
            if node in self.contexts and node not in self.silent:
                try:
                    reply = self.app(msg, self.contexts[node])
                except Exception as exc:  # what a SuperNode turns into an error reply
                    reply = Message(Error(code=1, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
                if self.tamper:
                    reply = self.tamper(node, msg, reply)
                self.replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, ids):
        return [self.replies.pop(i) for i in list(ids) if i in self.replies]


@pytest.fixture
def task_identity():
    """Flower's message constructor reads the task identity a real ServerApp process has."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("node-cache")


def _nodes(cache_dir, ids=(11, 22, 33), num=3):
    return {n: {"hw-profile": PROFILES[n], "partition-id": i, "num-partitions": num, "cache-dir": str(cache_dir)}
            for i, n in enumerate(ids)}


def _config(tmp_path, **over):
    cfg = {"strategy": "fiarse", "rounds": 2, "local-steps": 2, "ladder": "1/2,1/8,1/32", "out-dir": str(tmp_path),
           "query-timeout": 5.0, "round-timeout": 5.0, "poll-interval": 0.01, "export": False,
           "save-models": True, "min-nodes": 1}
    cfg.update(over)
    return cfg


def _held_union(out_dir, init):
    held = {k: np.zeros(v.shape, bool) for k, v in init.items()}
    for f in sorted((out_dir / "plans").glob("*.plan")):
        plan = SubmodelPlan.from_bytes(f.read_bytes())
        for name in held:
            if name in getattr(plan, "masks", {}):
                held[name] |= plan.masks[name].numpy()
            elif name in plan.held_shapes():
                held[name][...] = True
    return held


def test_server_loop_fiarse_sizes_tiers_and_merges_only_held(tmp_path, cache_dir, task_identity):
    cfg = _config(tmp_path)
    grid = FakeGrid(_nodes(cache_dir), cfg)
    summary = run_server(grid, cfg)
    nodes = summary["nodes"]
    ratio = {int(n): v["ratio"] for n, v in nodes.items()}
    assert ratio[11] > ratio[22] > ratio[33]  # pi-5 > pi-4 > pynq-z2
    assert set(ratio.values()) <= {0.5, 0.125, 0.03125}
    assert [m[1] for m in grid.log[:3]] == ["query.capability"] * 3
    for rnd in summary["rounds"]:
        assert rnd["aggregated"] and rnd["updates"] == 3
        for n, entry in rnd["nodes"].items():
            m = entry["metrics"]
            assert m["trained-fraction"] == pytest.approx(entry["kept_fraction"], abs=1e-9)
            # the released budget: ratio x the conv/linear weights, the norm parameters on top
            assert ratio[int(n)] <= m["trained-fraction"] <= ratio[int(n)] + 0.02
            assert entry["bytes_sent"] == m["bytes-received"]
    init = dict(np.load(tmp_path / "global-initial.npz"))
    final = dict(np.load(tmp_path / "global-round-2.npz"))
    held = _held_union(tmp_path, init)
    assert sum(int((~h).sum()) for h in held.values()) > 1000  # nobody holds everything
    for name in init:
        changed = init[name] != final[name]
        assert not (changed & ~held[name]).any(), name
    assert sum(int((init[n] != final[n]).sum()) for n in init) > 0.5 * sum(int(h.sum()) for h in held.values())
    ev = summary["evaluations"][-1]
    assert set(ev["nodes"]) == {"11", "22", "33"}
    assert all(0.0 <= e["accuracy"] <= 1.0 and e["num-examples"] > 0 for e in ev["nodes"].values())
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["rounds"][1]["round"] == 2 and on_disk["artifacts"] == []


def test_silent_node_is_left_out_and_round_goes_on(tmp_path, cache_dir, task_identity):
    cfg = _config(tmp_path, rounds=1, **{"round-timeout": 0.5})
    grid = FakeGrid(_nodes(cache_dir), cfg)
    original = grid.push_messages

    def push(messages):  # node 22 answers the query, then goes silent
        messages = list(messages)
        if any(m.metadata.message_type == "train" for m in messages):
            grid.silent.add(22)
        return original(messages)

    grid.push_messages = push
    summary = run_server(grid, cfg)
    rnd = summary["rounds"][0]
    assert rnd["aggregated"] and rnd["updates"] == 2 and rnd["missing"] == [22]
    assert "deadline" in rnd["nodes"]["22"]["left_out"]
    assert summary["evaluations"][-1]["missing"] == [22]


def test_too_few_replies_keep_the_global_model(tmp_path, cache_dir, task_identity):
    cfg = _config(tmp_path, rounds=1, **{"min-replies": 4})
    summary = run_server(FakeGrid(_nodes(cache_dir), cfg), cfg)
    assert not summary["rounds"][0]["aggregated"]
    init = np.load(tmp_path / "global-initial.npz")
    final = np.load(tmp_path / "global-round-1.npz")
    assert all(np.array_equal(init[k], final[k]) for k in init.files)


def test_late_joiner_is_queried_and_placed(tmp_path, cache_dir, task_identity):
    cfg = _config(tmp_path, rounds=2)
    nodes = _nodes(cache_dir, ids=(11, 22, 33))
    late = nodes.pop(22)

    def on_push(grid, msg):
        if msg.metadata.group_id == "round-1" and 22 not in grid.contexts:
            grid.add_node(22, late)

    summary = run_server(FakeGrid(nodes, cfg, on_push=on_push), cfg)
    assert summary["nodes"]["22"]["joined_round"] == 2
    assert summary["rounds"][0]["participants"] == [11, 33]
    assert summary["rounds"][1]["joined"] == [22] and 22 in summary["rounds"][1]["participants"]
    late_round = summary["rounds"][1]["nodes"]["22"]
    assert late_round["metrics"]["trained-fraction"] == pytest.approx(late_round["kept_fraction"], abs=1e-9)
    assert summary["nodes"]["22"]["ratio"] <= late_round["kept_fraction"] <= summary["nodes"]["22"]["ratio"] + 0.02


def test_bad_update_and_error_reply_are_left_out(tmp_path, cache_dir, task_identity):
    cfg = _config(tmp_path, rounds=1, strategy="heterofl")
    nodes = _nodes(cache_dir)
    nodes[33]["alpha"] = 0  # invalid node config: the ClientApp raises -> error reply

    def tamper(node, msg, reply):
        if node == 22 and msg.metadata.message_type == "train":
            from edge_sdk.flower.records import STYPE_UPDATE, blob_record, record_blob
            from edge_sdk.training import Update

            u = Update.from_bytes(record_blob(reply.content, "update", STYPE_UPDATE))
            u.plan = submodel.plan("heterofl", models.create("cnn1d"), 1.0)  # claims a bigger plan
            reply.content.array_records["update"] = blob_record(u.to_bytes(), STYPE_UPDATE)
        return reply

    summary = run_server(FakeGrid(nodes, cfg, tamper=tamper), cfg)
    assert "33" not in summary["nodes"] and summary["queries"][0]["errors"]["33"].startswith("1:")
    rnd = summary["rounds"][0]
    assert rnd["updates"] == 1 and rnd["aggregated"]
    assert "another plan" in rnd["nodes"]["22"]["left_out"]


def test_no_node_at_all_fails_clearly(tmp_path, task_identity):
    cfg = _config(tmp_path, **{"min-nodes": 2, "wait-timeout": 0.05})
    with pytest.raises(FederationError, match="min-nodes"):
        run_server(FakeGrid({}, cfg), cfg)


def test_each_tier_is_exported_for_its_target(tmp_path, cache_dir, task_identity):
    cfg = _config(tmp_path, rounds=1, strategy="fiarse-structured", ladder="1/2,1/8", export=True)
    summary = run_server(FakeGrid(_nodes(cache_dir, ids=(22, 33), num=2), cfg), cfg)
    arts = {a["target"]: a for a in summary["artifacts"]}
    assert set(arts) == {"raspberry-pi-4", "pynq-z2"}
    pi, fpga = arts["raspberry-pi-4"], arts["pynq-z2"]
    assert pi["format"] == "int8-onnx" and pi["report"]["integer_only"]
    assert fpga["format"] == "qonnx" or "error" in fpga
    for a in summary["artifacts"]:
        if a.get("path"):
            assert (tmp_path / "artifacts").joinpath(a["path"].rsplit("/", 1)[-1]).stat().st_size > 0
    assert pi["params"] > fpga["params"]  # the weaker tier's submodel is physically smaller


def test_fedra_sends_frozen_blocks_and_merges_adapters(tmp_path, cache_dir, task_identity):
    if "fedra" not in strategy_names(available_only=True):
        pytest.skip("FedRA is not in this build")
    options = {"in_channels": 1, "img_size": 8, "width": 0.25, "depth": 8}
    cfg = _config(tmp_path, rounds=1, strategy="fedra", model="mixer_tiny", dataset="digits", ladder="1,1/4,1/16",
                  **{"model-options": json.dumps(options), "lora-rank": 4})
    summary = run_server(FakeGrid(_nodes(cache_dir), cfg), cfg)
    rnd = summary["rounds"][0]
    assert rnd["aggregated"] and rnd["updates"] == 3
    sent = {n: e["bytes_sent"] for n, e in rnd["nodes"].items()}
    assert sent["11"] > sent["22"] > sent["33"]  # fewer blocks, fewer frozen weights sent
    for e in rnd["nodes"].values():
        assert 0 < e["metrics"]["trained-fraction"] < e["kept_fraction"]  # adapters + head only
    init = dict(np.load(tmp_path / "global-initial.npz"))
    final = dict(np.load(tmp_path / "global-round-1.npz"))
    changed = {k for k in init if not np.array_equal(init[k], final[k])}
    assert changed and all(k.endswith(("lora_A", "lora_B")) or k.startswith("head") for k in changed)


def test_payload_decodes_in_a_fresh_process(tmp_path):
    """A SuperNode runs each message in a new process: every plan kind must decode there."""
    import subprocess
    import sys

    blobs = []
    g = _trained_global()
    plan = submodel.plan("fiarse-structured", g, 0.25)
    blobs.append(encode_payload(Payload("fiarse-structured", 0, "cnn1d", {}, plan, payload_tensors(plan, g))))
    if "fedra" in strategy_names(available_only=True):
        from edge_sdk.flower.config import RunSettings as RS
        settings = RS(strategy="fedra", model="mixer_tiny", strategy_options={"lora_rank": 2},
                      model_options={"in_channels": 1, "img_size": 8, "width": 0.25, "depth": 2})
        s = make_strategy(settings)
        gm = build_global(s, settings, np.random.default_rng(0))
        p = s.make_plans(gm, {1: 0.5}, round=0, rng=np.random.default_rng(0))[1]
        blobs.append(encode_payload(Payload(s.name, 0, settings.model, dict(settings.model_options), p,
                                            payload_tensors(p, gm, s.fill), {}, s.fill)))
    for i, blob in enumerate(blobs):
        (tmp_path / f"p{i}.bin").write_bytes(blob)
    code = ("import sys, pathlib\nfrom edge_sdk.flower.codec import decode_payload, materialize\n"
            "for f in sorted(pathlib.Path(sys.argv[1]).glob('p*.bin')):\n"
            "    p = decode_payload(f.read_bytes()); materialize(p); print(p.strategy)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [b for b in ("fiarse-structured", "fedra")][: len(blobs)]


def test_node_whose_budget_fits_no_size_is_left_out(tmp_path, cache_dir, task_identity):
    cfg = _config(tmp_path, rounds=1, export=False)
    nodes = _nodes(cache_dir)
    nodes[33]["budget-ms"] = 1e-6  # no submodel trains a step that fast
    summary = run_server(FakeGrid(nodes, cfg), cfg)
    assert summary["nodes"]["33"]["ratio"] is None and summary["nodes"]["33"]["max_ratio"] is None
    assert summary["rounds"][0]["participants"] == [11, 22] and summary["rounds"][0]["aggregated"]


def test_non_finite_and_garbage_updates_are_dropped_the_rest_merged(tmp_path, cache_dir, task_identity):
    cfg = _config(tmp_path, rounds=1, strategy="fiarse")
    from edge_sdk.flower.records import STYPE_UPDATE, blob_record, record_blob
    from edge_sdk.training import Update

    def tamper(node, msg, reply):
        if msg.metadata.message_type != "train":
            return reply
        if node == 11:  # NaN weights: only the aggregation rule's own check catches these
            u = Update.from_bytes(record_blob(reply.content, "update", STYPE_UPDATE))
            u.tensors["fc.bias"] = torch.full_like(u.tensors["fc.bias"], float("nan"))
            reply.content.array_records["update"] = blob_record(u.to_bytes(), STYPE_UPDATE)
        if node == 22:
            reply.content.array_records["update"] = blob_record(b"EDGEUPDT\xff\xff\xff\xffgarbage", STYPE_UPDATE)
        return reply

    summary = run_server(FakeGrid(_nodes(cache_dir), cfg, tamper=tamper), cfg)
    rnd = summary["rounds"][0]
    assert rnd["aggregated"] and rnd["updates"] == 1
    assert "NaN" in rnd["nodes"]["11"]["left_out"] and "refused" in rnd["nodes"]["22"]["left_out"]
    assert "left_out" not in rnd["nodes"]["33"]
    final = np.load(tmp_path / "global-round-1.npz")
    assert all(np.isfinite(final[k]).all() for k in final.files)


def test_fedtsa_runs_both_stages_through_the_server_loop(tmp_path, cache_dir, task_identity):
    """FedTSA on the ServerApp path: nodes train HeteroFL tiers without the server's samples,
    the server's stage 2 (mutual learning on ``server-data``) changes the merged model."""
    import copy

    from edge_sdk.aggregation.fedtsa import fedtsa_aggregate
    from edge_sdk.strategies.fedtsa import FedTSA

    class Recording(FedTSA):
        def merge(self, global_model, updates, *, round=0, assigned=None):
            self.seen = (copy.deepcopy(global_model), list(updates), round)
            return super().merge(global_model, updates, round=round, assigned=assigned)

    cfg = _config(tmp_path, rounds=1, strategy="fedtsa", **{"server-data": "mnist1d:200:3", "fedtsa-steps": 6,
                                                             "fedtsa-batch-size": 32})
    settings = RunSettings.from_config(cfg)
    strategy = Recording(seed=settings.seed, server_data=make_strategy(settings).server_data, **settings.strategy_options)
    assert tuple(strategy.server_data.x.shape) == (200, 1, 40)
    summary = run_server(FakeGrid(_nodes(cache_dir), cfg), cfg, strategy=strategy)
    rnd = summary["rounds"][0]
    assert rnd["aggregated"] and rnd["updates"] == 3
    agg = rnd["aggregation"]
    assert agg["stage2"] and agg["distill_steps"] == 6 and len(agg["tiers"]) == 3 and agg["fallback_tiers"] == 0
    for entry in rnd["nodes"].values():  # nodes hold HeteroFL slices of their tier's size
        assert entry["metrics"]["trained-fraction"] == pytest.approx(entry["kept_fraction"], abs=1e-9)
    before, updates, round_ = strategy.seen
    assert round_ == 1 and {u.plan.strategy for u in updates} == {"heterofl"}
    final = {k: torch.from_numpy(v) for k, v in np.load(tmp_path / "global-round-1.npz").items()}
    stage1, _ = fedtsa_aggregate(copy.deepcopy(before), updates, stage2=False)
    redo, _ = fedtsa_aggregate(copy.deepcopy(before), updates, server_data=strategy.server_data, distill_steps=6,
                               batch_size=32, rng=np.random.default_rng([0, 1231, 1]))
    params = {n for n, _ in before.named_parameters()}
    moved = 0
    for name, t in stage1.state_dict().items():
        assert torch.equal(final[name], redo.state_dict()[name]), name  # exactly the configured stage 2
        if name not in params:
            assert torch.equal(final[name], t), name  # BatchNorm statistics come from stage 1
        else:
            moved += int((final[name] != t).sum())
    assert moved > 1000  # stage 2 changed the global model beyond stage 1's merge
    unheld = 0
    for name, t in before.state_dict().items():  # elements no tier holds keep their value
        den = torch.zeros(t.shape, dtype=torch.float64)
        for u in updates:
            shape = u.plan.held_shapes().get(name)
            if shape is not None:
                u.plan.scatter_add(name, torch.ones(shape), t.double(), torch.zeros_like(den), den, 1.0)
        assert torch.equal(final[name][den == 0], t[den == 0]), name
        unheld += int((den == 0).sum())
    assert unheld > 1000  # the largest tier holds 1/2: much is unheld


def _registry_case(name: str) -> dict:
    """Run-config keys for a one-round run of strategy ``name`` (a block model when it needs one)."""
    extra: dict = {}
    model = models.create("cnn1d")
    if strategy_class(name).model_problem(model) is not None:
        options = {"in_channels": 1, "img_size": 8, "width": 0.25, "depth": 4}
        extra = {"model": "mixer_tiny", "dataset": "digits", "model-options": json.dumps(options)}
    if strategy_class(name).uses_server_data:
        extra["server-data"] = ("digits:64" if extra else "mnist1d:200:3")
    return extra


@pytest.mark.parametrize("name", strategy_names(available_only=True))
def test_every_registered_strategy_runs_on_the_server_loop(name, tmp_path, cache_dir, task_identity):
    """The ServerApp drives any registered strategy with no code of its own: one round, three
    nodes, every update merged, the global model changed."""
    cfg = _config(tmp_path, rounds=1, strategy=name, **_registry_case(name))
    summary = run_server(FakeGrid(_nodes(cache_dir), cfg), cfg)
    rnd = summary["rounds"][0]
    assert summary["strategy"] == name
    assert rnd["aggregated"] and rnd["updates"] == 3, rnd
    init = dict(np.load(tmp_path / "global-initial.npz"))
    final = dict(np.load(tmp_path / "global-round-1.npz"))
    assert any(not np.array_equal(init[k], final[k]) for k in init if k in final)
    assert all(np.isfinite(v).all() for v in final.values() if v.dtype.kind == "f")


def _hostile(kind: str):
    """A reply tamperer for node 44 (the attacker) doing ``kind``."""
    from edge_sdk.flower.records import STYPE_UPDATE, blob_record, record_blob
    from edge_sdk.training import Update

    def tamper(node, msg, reply):
        if node != 44 or msg.metadata.message_type != "train" or reply.has_error():
            return reply
        blob = record_blob(reply.content, "update", STYPE_UPDATE)
        if kind == "random-bytes":
            blob = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        elif kind == "bit-flip":
            data = bytearray(blob)
            data[len(data) // 2] ^= 0x10
            blob = bytes(data)
        elif kind == "truncated":
            blob = blob[: len(blob) // 3]
        elif kind in ("huge-values", "huge-samples", "other-plan"):
            u = Update.from_bytes(blob)
            if kind == "huge-values":
                u.tensors = {k: torch.full_like(v, 3e38) if v.is_floating_point() else v for k, v in u.tensors.items()}
            elif kind == "huge-samples":
                u.num_samples = 10**9
            else:
                u.plan = submodel.plan("heterofl", models.create("cnn1d"), 1.0)
            blob = u.to_bytes()
        elif kind == "junk-metrics":
            reply.content.metric_records["metrics"] = type(reply.content.metric_records["metrics"])(
                {f"m{i}": float(i) for i in range(1000)})
        reply.content.array_records["update"] = blob_record(blob, STYPE_UPDATE)
        return reply

    return tamper


@pytest.mark.parametrize("kind", ["random-bytes", "bit-flip", "truncated", "huge-values", "huge-samples",
                                  "other-plan", "junk-metrics"])
def test_one_hostile_node_among_three_honest_ones(kind, tmp_path, cache_dir, task_identity):
    """The run completes, the global model stays finite, the honest nodes' updates keep being merged."""
    PROFILES.setdefault(44, "raspberry-pi-4")
    cfg = _config(tmp_path, rounds=2, strategy="heterofl")
    nodes = _nodes(cache_dir, ids=(11, 22, 33, 44), num=4)
    summary = run_server(FakeGrid(nodes, cfg, tamper=_hostile(kind)), cfg)
    for rnd in summary["rounds"]:
        assert rnd["aggregated"], rnd
        honest = [rnd["nodes"][str(n)] for n in (11, 22, 33)]
        assert all("left_out" not in e for e in honest), honest
    final = np.load(tmp_path / "global-round-2.npz")
    assert all(np.isfinite(final[k]).all() for k in final.files)
    state = {k: np.abs(final[k]).max() for k in final.files if final[k].dtype.kind == "f"}
    assert max(state.values()) < 1e6  # not poisoned by an attacker's finite-but-huge values


def test_node_config_attack_is_checked():
    assert NodeSettings.from_config({"attack": "corrupt"}).attack == "corrupt"
    assert NodeSettings.from_config({"attack": "scale:10"}).attack == "scale:10"
    assert NodeSettings.from_config({}).attack == ""
    with pytest.raises(InvalidInputError):
        NodeSettings.from_config({"attack": "teleport"})


def test_nodes_evaluate_the_model_that_stands_for_their_size(tmp_path, cache_dir, task_identity):
    # fiarse-structured's training plans explore (random channels per client); what a node
    # evaluates is the global model at its size as the run exports it: the importance ranking
    from edge_sdk.flower.records import STYPE_PAYLOAD, record_blob

    cfg = _config(tmp_path, strategy="fiarse-structured", rounds=1)
    sent = {}

    def on_push(grid, msg):
        kind = msg.metadata.message_type
        if kind in ("train", "evaluate"):
            payload = decode_payload(record_blob(msg.content, "payload", STYPE_PAYLOAD))
            sent[(kind, msg.metadata.dst_node_id)] = payload.plan

    summary = run_server(FakeGrid(_nodes(cache_dir), cfg, on_push=on_push), cfg)
    final = dict(np.load(tmp_path / "global-round-1.npz"))
    model = models.create("cnn1d")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in final.items()})
    x = torch.randn(2, *model.config.input_shape)
    for node, entry in summary["nodes"].items():
        want = submodel.plan("fiarse-structured", model, entry["ratio"], example_input=x)
        got = sent[("evaluate", int(node))]
        assert [k.tolist() for k in got.keep] == [k.tolist() for k in want.keep], node
    assert {kind for kind, _ in sent} == {"train", "evaluate"}
