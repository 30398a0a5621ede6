"""What a node does for each message, without Flower: report, local data, train, evaluate.

A SuperNode runs every message in a fresh ClientApp process, so anything slow is cached on
disk in the node's ``cache-dir``: the measured capability report (profiled once per node,
model and mode) and the node's data partition.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from edge_sdk._io import atomic_write_bytes, atomic_write_text
from edge_sdk.errors import InvalidInputError, SchemaError
from edge_sdk.flower.codec import Payload, held_param_count, materialize
from edge_sdk.flower.config import NodeSettings, RunSettings, ServerDataSpec
from edge_sdk.profiler import CapabilityReport

log = logging.getLogger(__name__)

__all__ = ["LocalData", "capability_report", "local_data", "train_payload", "evaluate_payload"]

_EVAL_BATCH = 512


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def capability_report(settings: NodeSettings, model: str | None, *, quick: bool = True) -> tuple[CapabilityReport, bool]:
    """This node's capability report and whether it came from the cache.

    With ``hw-profile`` set the report is estimated from that profile (cheap, not cached);
    otherwise the device is profiled once and the report kept in ``cache-dir``.
    """
    from edge_sdk.profiler import build_report

    kwargs = dict(model=model, quick=quick, budget_ms=settings.budget_ms, budget_mb=settings.budget_mb)
    if settings.hw_profile:
        return build_report(hw=settings.hw_profile, **kwargs), False
    folder = settings.cache_path()
    path = folder / f"report-{_key('measured', model, quick, settings.budget_ms, settings.budget_mb)}.json"
    if path.is_file():
        try:
            return CapabilityReport.from_json(path.read_text(encoding="utf-8"), where=str(path)), True
        except (OSError, SchemaError) as exc:
            log.warning("ignoring unreadable cached report %s: %s", path, exc)
    report = build_report(threads=settings.threads, **kwargs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, report.to_json())
    except OSError as exc:  # a read-only cache only costs a re-profile next time
        log.warning("cannot cache the capability report in %s: %s", folder, exc)
    return report, False


@dataclass
class LocalData:
    """The node's share of a data set: a train and a test set with its own label mix."""

    train: TensorDataset
    test: TensorDataset
    num_classes: int
    label_counts: list[int]

    @property
    def num_train(self) -> int:
        return len(self.train)


def local_data(settings: NodeSettings, run_dataset: str, holdout: ServerDataSpec | None = None) -> LocalData:
    """The node's partition: Dirichlet(alpha) split of the train set over ``num-partitions``
    (the same split on every node for the same seed), and test data with the same label mix.
    ``holdout``: FedTSA's built-in server data (``RunSettings.server_holdout()``), whose
    samples are removed from this data set first. Cached in ``cache-dir``."""
    name = settings.dataset or run_dataset
    if holdout is not None and holdout.dataset != name:
        holdout = None  # the server's samples come from another data set: nothing to remove
    folder = settings.cache_path()
    parts = [name, settings.seed, settings.alpha, settings.num_partitions, settings.partition_id]
    if holdout is not None:
        parts.append(["server-holdout", holdout.dataset, holdout.size, holdout.seed])
    path = folder / f"data-{name}-{_key(*parts)}.npz"
    arrays = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("x_tr", "y_tr", "x_te", "y_te", "num_classes")}
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cached partition %s: %s", path, exc)
    if arrays is None:
        arrays = _make_partition(settings, name, holdout)
        try:
            import io

            folder.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:
            log.warning("cannot cache the data partition in %s: %s", folder, exc)
    x_tr, y_tr = torch.from_numpy(arrays["x_tr"]), torch.from_numpy(arrays["y_tr"])
    x_te, y_te = torch.from_numpy(arrays["x_te"]), torch.from_numpy(arrays["y_te"])
    k = int(arrays["num_classes"])
    counts = np.bincount(arrays["y_tr"], minlength=k).tolist()
    return LocalData(TensorDataset(x_tr, y_tr), TensorDataset(x_te, y_te), k, counts)


def _make_partition(settings: NodeSettings, name: str,
                    holdout: ServerDataSpec | None = None) -> dict[str, np.ndarray]:
    from edge_sdk import datasets

    data = datasets.load(name, seed=settings.seed)
    if holdout is not None:  # as the simulation does: the server's samples go before the split
        from edge_sdk.flower.serverdata import drop_held_out, held_out_samples

        held = held_out_samples(holdout)
        n_train, n_test = len(data.train), len(data.test)
        data.train = TensorDataset(*drop_held_out(*data.train.tensors, held))
        data.test = TensorDataset(*drop_held_out(*data.test.tensors, held))
        log.info("left out %d train and %d test samples the server holds (%s)", n_train - len(data.train),
                 n_test - len(data.test), holdout.text)
    rng = np.random.default_rng([settings.seed, 1777])
    parts = datasets.dirichlet_split(data.train_labels, settings.num_partitions, settings.alpha, rng)
    test_parts = datasets.split_like(data.test_labels, data.train_labels, parts, np.random.default_rng([settings.seed, 1778]))
    tr, te = parts[settings.partition_id], test_parts[settings.partition_id]
    x_tr, y_tr = data.train.tensors
    x_te, y_te = data.test.tensors
    return {
        "x_tr": x_tr[tr].numpy(), "y_tr": y_tr[tr].numpy(),
        "x_te": x_te[te].numpy(), "y_te": y_te[te].numpy(),
        "num_classes": np.asarray(data.num_classes),
    }


# train_local keywords the server's strategy may set through a payload (train_local checks
# their values); anything else in the payload's "train" entry is refused
_TRAIN_OPTIONS = frozenset({"fiarse_gradient"})


def _train_options(payload: Payload) -> dict[str, Any]:
    options = payload.meta.get("train", {}) if isinstance(payload.meta, dict) else None
    if not isinstance(options, dict) or set(options) - _TRAIN_OPTIONS:
        raise InvalidInputError(f"{payload.strategy} payload: training options {options!r} are not accepted; "
                                f"expected a map of {', '.join(sorted(_TRAIN_OPTIONS))}")
    return dict(options)


def _privacy(payload: Payload) -> dict[str, float]:
    """Client-mode DP of the payload's meta ``privacy`` entry (``dp_clip``, ``dp_noise_std``;
    see ``Strategy.client_privacy``); empty when the server asked for none."""
    options = payload.meta.get("privacy", {}) if isinstance(payload.meta, dict) else None
    if not options:
        return {}
    ok = isinstance(options, dict) and set(options) == {"dp_clip", "dp_noise_std"} and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for v in options.values()) and options["dp_clip"] > 0
    if not ok:
        raise InvalidInputError(f"{payload.strategy} payload: privacy options {options!r} are not accepted; expected "
                                "dp_clip > 0 and dp_noise_std >= 0")
    return {k: float(v) for k, v in options.items()}


def train_payload(payload: Payload, data: LocalData, run: RunSettings, *, seed: int = 0) -> tuple[Any, dict[str, float]]:
    """Rebuild the submodel from ``payload``, train it on ``data``; returns (Update, metrics).
    With client-mode DP in the payload, the change is clipped and noised here, on the device,
    before it leaves (noise from the operating system's entropy)."""
    from edge_sdk.training import train_local

    if data.num_train == 0:
        raise InvalidInputError("this node's partition holds no training samples; give it a larger share")
    t0 = time.perf_counter()
    submodel = materialize(payload)
    gen = torch.Generator().manual_seed(int(seed))
    loader = DataLoader(data.train, batch_size=run.batch_size, shuffle=True, generator=gen,
                        drop_last=data.num_train > run.batch_size)
    kwargs: dict[str, Any] = {**run.train_kwargs(), **_train_options(payload), "num_samples": data.num_train}
    privacy = _privacy(payload)
    update = train_local(submodel, loader, payload.plan, **kwargs)
    if privacy:
        import secrets

        from edge_sdk.privacy import privatize_update

        received = {n: payload.tensors[n] for n in update.tensors}
        update = privatize_update(update, received, privacy["dp_clip"], privacy["dp_noise_std"],
                                  torch.Generator().manual_seed(secrets.randbits(63)))
    sig = payload.plan.signature if payload.plan is not None else {
        n: (tuple(t.shape), True) for n, t in submodel.named_parameters()}
    total = sum(int(np.prod(s)) for s, p in sig.values() if p)
    trained = held_param_count(payload.plan, update.tensors, sig)
    metrics = {k: float(v) for k, v in update.metrics.items()}
    metrics.update({
        "num-examples": float(update.num_samples),
        "trained-params": float(trained),
        "total-params": float(total),
        "trained-fraction": trained / total if total else 0.0,
        "kept-fraction": float(payload.plan.kept_fraction) if payload.plan is not None else 1.0,
        "node-seconds": time.perf_counter() - t0,
    })
    return update, metrics


def evaluate_payload(payload: Payload, data: LocalData) -> dict[str, float]:
    """Accuracy and loss of the payload's submodel on the node's local test data, its
    BatchNorm statistics first recomputed on the node's training data (HeteroFL's static BN,
    as ``edge-sdk simulate`` evaluates: merged running statistics fit no single size)."""
    from edge_sdk.training import evaluate, recompute_bn_stats

    if len(data.test) == 0:
        return {"accuracy": float("nan"), "loss": float("nan"), "num-examples": 0.0}
    submodel = materialize(payload)
    if data.num_train:
        recompute_bn_stats(submodel, DataLoader(data.train, batch_size=_EVAL_BATCH, shuffle=False))
    out = evaluate(submodel, DataLoader(data.test, batch_size=_EVAL_BATCH, shuffle=False))
    return {"accuracy": float(out["accuracy"]), "loss": float(out["loss"]), "num-examples": float(out["samples"])}
