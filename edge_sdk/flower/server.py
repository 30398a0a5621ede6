"""The ServerApp's loop: query capabilities, cluster, size, send per-node payloads, merge.

Everything here talks to Flower through a ``Grid`` (``get_node_ids``, ``push_messages``,
``pull_messages``) and ``flwr.app.Message``; the per-rule decisions are the strategy's
(:mod:`edge_sdk.flower.strategies`). A node that does not answer before a deadline is left
out of that step (the round goes on with the others); a node seen for the first time is
queried and placed at the start of the next round.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk._io import atomic_write_bytes, atomic_write_text, check_writable
from edge_sdk.aggregation.robust_merge import label_clients
from edge_sdk.errors import EdgeSDKError, OutputError, SchemaError, UpdateRejectedError
from edge_sdk.flower._errors import FederationError
from edge_sdk.flower._flwr import require_flwr
from edge_sdk.flower.codec import Payload, encode_payload, payload_sizes, payload_tensors, state_bytes
from edge_sdk.flower.config import RunSettings
from edge_sdk.flower.fleet import Fleet, NodeRecord
from edge_sdk.flower.records import (
    QUERY_ACTION,
    REPORT_KEY,
    STYPE_PAYLOAD,
    STYPE_UPDATE,
    blob_record,
    record_blob,
)
from edge_sdk.flower.strategies import build_global, make_strategy
from edge_sdk.strategies import Strategy, kept_fraction
from edge_sdk.profiler import CapabilityReport

log = logging.getLogger(__name__)

__all__ = ["run_server", "exchange", "make_server_app", "payload_content", "ServerRun"]

SUMMARY_NAME = "summary.json"


# ---- messaging -------------------------------------------------------------------------


def _message(content: Any, node: int, message_type: str, group: str, ttl: float) -> Any:
    flwr = require_flwr()
    return flwr.app.Message(content, dst_node_id=int(node), message_type=message_type, group_id=group, ttl=ttl)


def payload_content(data: bytes, *, round: int, tier: int, ratio: float) -> Any:
    """The ``RecordDict`` of a train/evaluate message: the encoded payload and its labels."""
    flwr = require_flwr()
    return flwr.app.RecordDict({
        "payload": blob_record(data, STYPE_PAYLOAD),
        "config": flwr.app.ConfigRecord({"round": int(round), "tier": int(tier), "ratio": float(ratio)}),
    })


def _ttl(timeout: float) -> float:
    return float(max(timeout, 1.0) + 60.0)


def exchange(grid: Any, messages: Mapping[int, Any], timeout: float, poll: float,
             *, suspects: Iterable[int] = ()) -> tuple[dict[int, Any], list[int]]:
    """Push one message per node and pull replies until all came or ``timeout`` passed.

    Nodes in ``suspects`` (they missed their previous deadline: most likely gone) are sent
    the message but not waited for: once every other node has answered, the exchange ends
    (when every node is a suspect, the full ``timeout`` is waited).
    Returns (node -> reply, nodes without a reply). Replies carrying a Flower error are
    returned too (``reply.has_error()``).
    """
    if not messages:
        return {}, []
    nodes = list(messages)
    ids = list(grid.push_messages([messages[n] for n in nodes]))
    by_id: dict[str, int] = {}
    failed: list[int] = []
    for node, mid in zip(nodes, ids):
        if mid:
            by_id[str(mid)] = node
        else:
            failed.append(node)
    replies: dict[int, Any] = {}
    pending = set(by_id)
    suspect = set(suspects)
    if all(node in suspect for node in by_id.values()):
        suspect = set()
    deadline = time.monotonic() + timeout
    while pending:
        for reply in grid.pull_messages(sorted(pending)):
            mid = reply.metadata.reply_to_message_id
            if mid in pending:
                pending.discard(mid)
                replies[by_id[mid]] = reply
        left = deadline - time.monotonic()
        if not pending or left <= 0 or all(by_id[m] in suspect for m in pending):
            break
        time.sleep(min(poll, left))
    return replies, failed + sorted(by_id[m] for m in pending)


MAX_METRICS = 64
MAX_TEXT = 1 << 22  # a capability report is a few KB


def _reason(exc: BaseException) -> str:
    """One line about why a node's reply was refused (typed errors say it themselves; any
    other exception is a decoder bug, named so it can be reported)."""
    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, EdgeSDKError):
        return text
    return f"malformed reply ({type(exc).__name__}: {text})"


def _bounded_text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise SchemaError(f"reply field {field!r} is a {type(value).__name__}, expected text")
    if len(value) > MAX_TEXT:
        raise SchemaError(f"reply field {field!r} holds {len(value)} characters; at most {MAX_TEXT} accepted")
    return value


def reply_metrics(content: Any) -> dict[str, float]:
    """A node's ``metrics`` record as floats (at most MAX_METRICS short names; NaN stays NaN:
    a node without test data reports a NaN accuracy)."""
    metrics = content.metric_records.get("metrics") or {}
    if len(metrics) > MAX_METRICS:
        raise SchemaError(f"metrics record holds {len(metrics)} entries; at most {MAX_METRICS} accepted")
    out = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or len(key) > 64:
            raise SchemaError("metrics record has a key that is not a short name")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"metric {key!r}={value!r} is not a number")
        out[key] = float(value)
    return out


def _error_text(reply: Any) -> str:
    err = reply.error
    return f"{getattr(err, 'code', '?')}: {str(getattr(err, 'reason', ''))[-300:]}"


# ---- the run ---------------------------------------------------------------------------


class ServerRun:
    """State of one federated run (see :func:`run_server`)."""

    def __init__(self, grid: Any, settings: RunSettings, *, run_id: int | str = 0,
                 strategy: Strategy | None = None) -> None:
        self.grid = grid
        self.settings = settings
        self.run_id = run_id
        self.strategy = strategy or make_strategy(settings)
        if settings.server_data and not self.strategy.uses_server_data:
            log.warning("config server-data=%r is ignored: strategy %s uses no server-side data",
                        settings.server_data, self.strategy.name)
        self.fleet = Fleet(settings.ladder)
        self.out_dir = settings.output_dir(run_id)
        self.rng = np.random.default_rng([settings.seed, 90210])
        self.global_model: nn.Module = build_global(self.strategy, settings, self.rng)
        self.full_bytes = state_bytes(self.global_model)
        self.rounds: list[dict[str, Any]] = []
        self.queries: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.artifacts: list[dict[str, Any]] = []
        self.suspects: set[int] = set()  # nodes that missed their last deadline
        self.started = time.time()

    # -- setup -----------------------------------------------------------------------------
    def prepare_output(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the run folder {self.out_dir}: {exc.strerror or exc}") from exc
        check_writable(self.out_dir / SUMMARY_NAME)
        if self.settings.save_models:
            (self.out_dir / "plans").mkdir(exist_ok=True)
            self._save_state("global-initial.npz")

    def _exchange(self, msgs: Mapping[int, Any], timeout: float) -> tuple[dict[int, Any], list[int]]:
        replies, missing = exchange(self.grid, msgs, timeout, self.settings.poll_interval,
                                    suspects=self.suspects)
        ok = {n for n, r in replies.items() if not r.has_error()}
        self.suspects.difference_update(ok)
        self.suspects.update(set(msgs) - ok)  # no reply, or an error (e.g. the node is unavailable)
        return replies, missing

    def connected(self) -> list[int]:
        return sorted(int(n) for n in self.grid.get_node_ids())

    def wait_for_nodes(self) -> list[int]:
        s = self.settings
        deadline = time.monotonic() + s.wait_timeout
        while True:
            nodes = self.connected()
            if len(nodes) >= s.min_nodes:
                return nodes
            if time.monotonic() >= deadline:
                raise FederationError(f"only {len(nodes)} node(s) connected after {s.wait_timeout:g} s; "
                                      f"min-nodes is {s.min_nodes}")
            log.info("waiting for nodes: %d connected, min-nodes %d", len(nodes), s.min_nodes)
            time.sleep(min(1.0, max(s.poll_interval, 0.05)))

    # -- query -----------------------------------------------------------------------------
    def query(self, nodes: Iterable[int], round: int) -> list[int]:
        """Ask ``nodes`` for their capability report; returns the nodes added."""
        flwr = require_flwr()
        s = self.settings
        nodes = [n for n in nodes if n not in self.fleet]
        if not nodes:
            return []
        content = lambda: flwr.app.RecordDict({"query": flwr.app.ConfigRecord(  # noqa: E731
            {"model": s.model, "quick": s.quick_profile})})
        msgs = {n: _message(content(), n, f"query.{QUERY_ACTION}", f"query-{round}", _ttl(s.query_timeout))
                for n in nodes}
        t0 = time.monotonic()
        replies, missing = self._exchange(msgs, s.query_timeout)
        added = []
        errors = {}
        for node, reply in replies.items():
            if reply.has_error():
                errors[node] = _error_text(reply)
                continue
            try:
                rec = reply.content.config_records[REPORT_KEY]
                report = CapabilityReport.from_json(_bounded_text(rec["json"], "json"), where=f"node {node} report")
                hw = _bounded_text(rec.get("hw-profile", ""), "hw-profile") or None
                source = _bounded_text(rec.get("source", ""), "source")
            except Exception as exc:  # noqa: BLE001 - any bytes from a node: that node is not placed
                errors[node] = f"unreadable report: {_reason(exc)}"
                continue
            self.fleet.add(NodeRecord(node, report, hw, round, source))
            added.append(node)
        for node, why in errors.items():
            log.warning("node %d: capability query failed (%s)", node, why)
        if missing:
            log.warning("node(s) %s did not answer the capability query within %.1f s; asking again next round",
                        missing, s.query_timeout)
        self.queries.append({"round": round, "asked": nodes, "added": added, "missing": missing,
                             "errors": {str(k): v for k, v in errors.items()},
                             "seconds": time.monotonic() - t0})
        return added

    def place(self) -> None:
        changes = self.fleet.assign()
        for node, (old, new, old_ratio) in changes.items():
            rec = self.fleet.nodes[node]
            if old is None:
                log.info("node %d (%s, score %.3g) placed in tier %d: size %g", node, rec.hw_profile or "measured",
                         rec.score, new, rec.ratio)
            elif old_ratio == rec.ratio:  # a new tier below it shifted the numbering only
                log.debug("node %d: tier renumbered %d -> %d (size unchanged: %g)", node, old, new, rec.ratio)
            else:
                log.info("node %d moved from tier %d (size %g) to tier %d (size %g)", node, old, old_ratio, new,
                         rec.ratio)

    def refresh_fleet(self, round: int) -> list[int]:
        """Query nodes seen for the first time (late joiners) and re-place everyone."""
        new = [n for n in self.connected() if n not in self.fleet]
        if not new:
            return []
        added = self.query(new, round)
        if added:
            self.place()
        return added

    # -- rounds ----------------------------------------------------------------------------
    def _payload_messages(self, plans: Mapping[int, Any], round: int, message_type: str,
                          group: str, timeout: float, privacy: Mapping[int, dict[str, float]] | None = None
                          ) -> tuple[dict[int, Any], dict[int, dict[str, Any]]]:
        blobs: dict[int, tuple[bytes, int, Any]] = {}
        msgs, info = {}, {}
        for node, plan in plans.items():
            key = id(plan)
            if key not in blobs:
                payload = self.payload(plan, round, (privacy or {}).get(node))  # equal for one plan
                data = encode_payload(payload)
                blobs[key] = (data, payload.tensor_bytes, payload_sizes(data))
            data, tensor_bytes, sizes = blobs[key]
            rec = self.fleet.nodes[node]
            content = payload_content(data, round=round, tier=int(rec.tier or 0), ratio=float(rec.ratio or 1.0))
            msgs[node] = _message(content, node, message_type, group, _ttl(timeout))
            kept = kept_fraction(plan)
            info[node] = {
                "tier": rec.tier, "ratio": rec.ratio, "kept_fraction": kept,
                "bytes_sent": len(data), "tensor_bytes_sent": tensor_bytes,
                "value_bytes_sent": sizes.values, "index_bytes_sent": sizes.plan,
                "full_model_bytes": self.full_bytes,
                "bytes_vs_kept": len(data) / (kept * self.full_bytes) if kept > 0 else None,
                "tensor_bytes_vs_kept": tensor_bytes / (kept * self.full_bytes) if kept > 0 else None,
            }
        return msgs, info

    def payload(self, plan: Any, round: int, privacy: Mapping[str, float] | None = None) -> Payload:
        """What a node holding ``plan`` receives: the tensors it holds, the strategy's
        local-training options and (client-mode DP) the clip and noise its device applies."""
        s, st = self.settings, self.strategy
        meta: dict[str, Any] = {"train": st.train_options()}
        if privacy:
            meta["privacy"] = dict(privacy)
        return Payload(st.name, round, s.model, dict(s.model_options), plan,
                       payload_tensors(plan, self.global_model, st.fill), meta, st.fill)

    def train_round(self, round: int) -> dict[str, Any]:
        from edge_sdk.training import Update

        s = self.settings
        t0 = time.monotonic()
        joined = self.refresh_fleet(round)
        online = set(self.connected())
        participants = [n for n in self.fleet.placed() if n in online]
        record: dict[str, Any] = {"round": round, "joined": joined, "participants": participants, "nodes": {}}
        if not participants:
            log.warning("round %d: no placed node is connected; the round is skipped", round)
            record.update(aggregated=False, seconds=time.monotonic() - t0)
            return record
        ratios = {n: float(self.fleet.nodes[n].ratio) for n in participants}  # type: ignore[arg-type]
        plans = self.strategy.make_plans(self.global_model, ratios, round=round, rng=self.rng)
        privacy = self.strategy.client_privacy(plans, self.global_model)
        msgs, info = self._payload_messages(plans, round, "train", f"round-{round}", s.round_timeout, privacy)
        if s.save_models:
            for node, plan in plans.items():
                if plan is not None:
                    atomic_write_bytes(self.out_dir / "plans" / f"round-{round}-node-{node}.plan", plan.to_bytes())
        replies, missing = self._exchange(msgs, s.round_timeout)
        updates: list[Update] = []
        used: list[int] = []
        for node in participants:
            entry = dict(info[node])
            entry["replied"] = node in replies
            reply = replies.get(node)
            if reply is None:
                entry["left_out"] = "no reply before the round deadline"
            elif reply.has_error():
                entry["left_out"] = f"error reply ({_error_text(reply)})"
            else:
                try:
                    blob = record_blob(reply.content, "update", STYPE_UPDATE)
                    update = Update.from_bytes(blob)
                    self._check_update(update, plans[node], node)
                    entry["metrics"] = reply_metrics(reply.content)
                    entry["bytes_received"] = len(blob)
                    updates.append(update)
                    used.append(node)
                except Exception as exc:  # noqa: BLE001 - any bytes from a node: drop it, never stop the run
                    entry["left_out"] = f"update refused: {_reason(exc)}"
            if "left_out" in entry:
                log.warning("round %d: node %d left out (%s)", round, node, entry["left_out"])
            record["nodes"][str(node)] = entry
        aggregated = False
        # drop what the merge would refuse (checked one by one; nothing merged, no privacy spent)
        refused = dict(self.strategy.screen(self.global_model, updates, assigned=[plans[n] for n in used]))
        for i, why in refused.items():
            record["nodes"][str(used[i])]["left_out"] = f"update refused: {why}"
            log.warning("round %d: node %d's update refused (%s)", round, used[i], why)
        updates = [u for i, u in enumerate(updates) if i not in refused]
        used = [n for i, n in enumerate(used) if i not in refused]
        if len(updates) >= s.min_replies:
            try:  # the merge checks again before it writes anything (and keeps the model on overflow)
                self.global_model = self.strategy.merge(self.global_model, updates, round=round,
                                                        assigned=[plans[n] for n in used])
                aggregated = True
            except UpdateRejectedError as exc:
                record["merge_refused"] = str(exc)
                log.warning("round %d: merge refused (%s); the global model is kept", round, exc)
            report = self.strategy.last_report
            if aggregated and report is not None:
                record["aggregation"] = {**report, "merge": label_clients(report.get("merge"), used)}
                line = self.strategy.describe_report(report)
                if line:
                    log.info("round %d: %s", round, line)
        if not aggregated:
            log.warning("round %d: %d update(s), min-replies is %d; the global model is kept", round,
                        len(updates), s.min_replies)
        losses = [(record["nodes"][str(n)]["metrics"].get("train_loss"), u.num_samples) for n, u in zip(used, updates)]
        losses = [(l, w) for l, w in losses if l is not None]
        record.update(
            aggregated=aggregated,
            updates=len(updates),
            missing=missing,
            train_loss=float(np.average([l for l, _ in losses], weights=[w for _, w in losses])) if losses else None,
            seconds=time.monotonic() - t0,
        )
        log.info("round %d: %d/%d updates merged (%s), %.1f s", round, len(updates), len(participants),
                 "aggregated" if aggregated else "kept", record["seconds"])
        return record

    def _check_update(self, update: Any, plan: Any, node: int) -> None:
        """The update must be for exactly the plan this node was sent (the whole model when
        it was sent no plan)."""
        if plan is None:
            if update.plan is not None:
                raise UpdateRejectedError(f"node {node} sent a {update.strategy} update for the whole model")
            return
        if update.strategy != plan.strategy:
            raise UpdateRejectedError(f"node {node} sent a {update.strategy} update for a {plan.strategy} plan")
        if update.plan is None or update.plan.to_bytes() != plan.to_bytes():
            raise UpdateRejectedError(f"node {node} sent an update for another plan than the one it was given")

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, round: int) -> dict[str, Any]:
        s = self.settings
        t0 = time.monotonic()
        online = set(self.connected())
        participants = [n for n in self.fleet.placed() if n in online]
        ratios = {n: float(self.fleet.nodes[n].ratio) for n in participants}  # type: ignore[arg-type]
        # the model that stands for each size (as the simulation evaluates and the run exports
        # it), not a training plan: those may explore (random channels per client)
        plans = self.strategy.evaluation_plans(self.global_model, ratios, round=round)
        msgs, info = self._payload_messages(plans, round, "evaluate", f"eval-{round}", s.round_timeout)
        replies, missing = self._exchange(msgs, s.round_timeout)
        per_node: dict[str, Any] = {}
        for node in participants:
            reply = replies.get(node)
            entry = {"tier": info[node]["tier"], "ratio": info[node]["ratio"],
                     "kept_fraction": info[node]["kept_fraction"]}
            if reply is None or reply.has_error():
                entry["left_out"] = "no reply" if reply is None else _error_text(reply)
            else:
                try:
                    entry.update(reply_metrics(reply.content))
                except Exception as exc:  # noqa: BLE001 - a node's bad reply leaves only that node out
                    entry["left_out"] = f"reply refused: {_reason(exc)}"
                    log.warning("evaluation after round %d: node %d left out (%s)", round, node, entry["left_out"])
            per_node[str(node)] = entry
        tiers: dict[str, list[float]] = {}
        for entry in per_node.values():
            if "accuracy" in entry and entry.get("num-examples", 0) > 0:
                tiers.setdefault(str(entry["tier"]), []).append(entry["accuracy"])
        out = {"round": round, "nodes": per_node, "missing": missing,
               "tier_accuracy": {t: float(np.mean(v)) for t, v in tiers.items()},
               "seconds": time.monotonic() - t0}
        log.info("evaluation after round %d: tier accuracy %s", round,
                 {t: round_(a) for t, a in out["tier_accuracy"].items()})
        return out

    # -- the end ---------------------------------------------------------------------------
    def export(self) -> list[dict[str, Any]]:
        from edge_sdk.flower.exporting import export_tiers

        return export_tiers(self)

    def _save_state(self, name: str) -> None:
        import io

        arrays = {k: v.detach().cpu().numpy() for k, v in self.global_model.state_dict().items()}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.out_dir / name, buf.getvalue())

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "strategy": self.strategy.name,
            "settings": self.settings.to_dict(),
            "full_model_bytes": self.full_bytes,
            "global_params": int(sum(p.numel() for p in self.global_model.parameters())),
            "nodes": self.fleet.describe(),
            "tiers": {str(t): {"ratio": self.fleet.tier_ratios.get(t), "nodes": m}
                      for t, m in sorted(self.fleet.tiers().items())},
            "clustering": _jsonable(self.fleet.clustering),
            "queries": self.queries,
            "rounds": self.rounds,
            "evaluations": self.evaluations,
            "artifacts": self.artifacts,
            "wall_time_s": time.time() - self.started,
            "merge": self.strategy.merge_settings.describe(),
            "privacy": self.strategy.privacy_spent(),
        }

    def write_summary(self) -> Path:
        path = self.out_dir / SUMMARY_NAME
        atomic_write_text(path, json.dumps(_jsonable(self.summary()), indent=2, allow_nan=True))
        return path

    def run(self) -> dict[str, Any]:
        s = self.settings
        self.prepare_output()
        self.wait_for_nodes()
        self.query(self.connected(), 0)
        if not self.fleet.nodes:
            raise FederationError(f"no node answered the capability query within {s.query_timeout:g} s")
        self.place()
        self.write_summary()
        for r in range(1, s.rounds + 1):
            self.rounds.append(self.train_round(r))
            if s.save_models:
                self._save_state(f"global-round-{r}.npz")
            if s.eval_every and r % s.eval_every == 0 and r != s.rounds:
                self.evaluations.append(self.evaluate(r))
            self.write_summary()
        self.evaluations.append(self.evaluate(s.rounds))
        if s.export:
            self.artifacts = self.export()
        path = self.write_summary()
        for a in self.artifacts:
            log.info("artifact: tier %s (size %g) -> %s [%s]", a.get("tier"), a.get("ratio", 0),
                     a.get("path") or "-", a.get("format") or a.get("error"))
        log.info("run summary: %s", path)
        return self.summary()


def round_(x: float) -> float:
    return float(f"{x:.4f}")


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def run_server(grid: Any, run_config: Mapping[str, Any], *, run_id: int | str = 0,
               strategy: Strategy | None = None) -> dict[str, Any]:
    """Run a whole federated job on ``grid`` with ``run_config``; returns the run summary
    (also written to ``<out-dir>/summary.json``)."""
    settings = RunSettings.from_config(dict(run_config))
    torch.set_num_threads(1)
    return ServerRun(grid, settings, run_id=run_id, strategy=strategy).run()


def make_server_app() -> Any:
    """A ``flwr.serverapp.ServerApp`` whose main runs :func:`run_server`."""
    flwr = require_flwr()
    app = flwr.serverapp.ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        run_id = getattr(context, "run_id", 0)
        run_server(grid, context.run_config, run_id=run_id)

    return app
