"""On-device local training of a submodel, and the Update a client sends back.

``train_local(submodel, data, plan, ...)`` trains the module returned by
``plan.extract(global_model)`` with SGD on any iterable of ``(x, y)`` batches and returns an
:class:`Update` holding only the tensors the client holds under its plan (so its byte size
scales with ``plan.kept_fraction``), the sample count and training metrics.
``plan=None`` means the full model (FedAvg): the update holds the whole state dict.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edge_sdk import _decode
from edge_sdk._decode import Budget, DecodeLimits
from edge_sdk.errors import InvalidInputError, PlanMismatchError, SchemaError
from edge_sdk.submodel import _serial
from edge_sdk.submodel._plan import SubmodelPlan
from edge_sdk.submodel._value_planes import ZLIB_LEVEL, check_slots, pack_values, read_tensors
from edge_sdk.submodel.fiarse import GRADIENT_MODES, FiarseSubmodel

log = logging.getLogger(__name__)

__all__ = ["Update", "train_local", "evaluate", "recompute_bn_stats"]

UPDATE_MAGIC = b"EDGEUPDT"
UPDATE_VERSION = 2
READABLE_UPDATE_VERSIONS = (1, 2)  # 1: tensors raw; 2: values as compressed byte planes


@dataclass
class Update:
    """What one client sends back after local training.

    ``tensors`` maps global state-dict names to the values the client holds: for ``fiarse``
    the held elements of each masked tensor as a 1-D tensor (in row-major mask order) and
    the other tensors whole; for structured strategies the kept slices; for ``fedra`` the
    trained LoRA adapters and head; for ``fedavg`` (``plan=None``) the whole state dict.
    ``num_bytes`` is the payload (tensor data); ``index_bytes`` is everything else in
    :meth:`to_bytes` (the plan with its masks / indices, and the header), reported apart.
    """

    strategy: str
    plan: SubmodelPlan | None
    tensors: dict[str, torch.Tensor]
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def num_bytes(self) -> int:
        return sum(_serial.tensor_nbytes(t) for t in self.tensors.values())

    @property
    def index_bytes(self) -> int:
        """Plan and header bytes, counted as if the values went raw (the version 1 layout), so
        the figure does not depend on how well the values compress."""
        header, blobs = self._parts()
        for name, t in self.tensors.items():
            blobs[f"t:{name}"] = t
        return _serial.packed_size(UPDATE_MAGIC, 1, header, blobs) - self.num_bytes

    def _parts(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        blobs: dict[str, torch.Tensor] = {}
        if self.plan is not None:
            blobs["plan"] = torch.frombuffer(bytearray(self.plan.to_bytes()), dtype=torch.uint8)
        header = {"strategy": self.strategy, "num_samples": int(self.num_samples),
                  "metrics": {k: float(v) for k, v in self.metrics.items()}}
        return header, blobs

    def to_bytes(self) -> bytes:
        """Serialise without pickle: JSON header, the plan's bytes, then the tensor values
        losslessly compressed (byte planes + zlib, :mod:`edge_sdk.submodel._value_planes`)."""
        header, blobs = self._parts()
        header["values"], blobs["values"] = pack_values(self.tensors, ZLIB_LEVEL)
        return _serial.pack(UPDATE_MAGIC, UPDATE_VERSION, header, blobs)

    @classmethod
    def from_bytes(cls, data: bytes, *, limits: DecodeLimits | None = None) -> Update:
        """Inverse of :meth:`to_bytes`; also reads version 1 (raw tensors).

        Raises SchemaError (ChecksumError, LimitExceededError, SchemaVersionError) naming
        the field on anything malformed, altered or over ``limits``; nothing else.
        Non-finite metric values are read as they are (the server judges the update).
        """
        budget = Budget.for_input(len(data) if isinstance(data, (bytes, bytearray, memoryview)) else 0,
                                  "update", limits)
        version, header, blobs = _serial.unpack_versions(data, UPDATE_MAGIC, READABLE_UPDATE_VERSIONS, "update",
                                                         budget=budget, limits=limits, views=("plan", "values"))
        _decode.check_keys(header, ("version", "strategy", "num_samples") + (("values",) if version > 1 else ()),
                           ("metrics",), "update")
        strategy = _decode.check_str(header["strategy"], "update: strategy", 64)
        num_samples = _decode.check_int(header["num_samples"], "update: num_samples")
        metrics = {k: _decode.check_number(v, f"update: metric {k!r}")
                   for k, v in _decode.check_dict(header.get("metrics", {}), "update: metrics").items()}
        plan = None
        if "plan" in blobs:
            plan = SubmodelPlan.from_bytes(blobs.pop("plan"), limits=limits, budget=budget)
        tensors = read_tensors(version, header, blobs, budget, "update")
        check_slots(tensors, plan, "update")
        if plan is not None and strategy != plan.strategy:
            raise SchemaError(f"update: strategy {strategy!r} is not its plan's ({plan.strategy!r})")
        return cls(strategy, plan, tensors, num_samples, metrics)


def _batches(data: Iterable[Any], steps: int | None, epochs: int | None):
    """Yield (pass index, batch): ``steps`` batches cycling through data, or ``epochs`` passes."""
    done = 0
    passes = 0
    while True:
        got = False
        for batch in data:
            got = True
            yield passes, batch
            done += 1
            if steps is not None and done >= steps:
                return
        if not got:
            raise InvalidInputError("train_local: data yielded no batches")
        passes += 1
        if steps is None and passes >= (epochs or 1):
            return


def _split(batch: Any) -> tuple[Any, torch.Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise InvalidInputError(f"train_local: each batch must be an (x, y) pair, got {type(batch).__name__}")


def _dataset_size(data: Any) -> int | None:
    ds = getattr(data, "dataset", None)
    try:
        return len(ds) if ds is not None else None
    except TypeError:
        return None


def _check_int(name: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InvalidInputError(f"train_local: {name}={v!r} is not accepted; expected an integer >= 1")
    return v


def train_local(
    submodel: nn.Module,
    data: Iterable[Any],
    plan: SubmodelPlan | None,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    fiarse_gradient: str = "surrogate",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    num_samples: int | None = None,
) -> Update:
    """Train ``submodel`` (from ``plan.extract``) with SGD and return the client's Update.

    Give ``steps`` (optimizer steps, cycling through ``data``) or ``epochs`` (passes; 1 if
    neither is given). ``fiarse_gradient`` selects the FIARSE gradient mode ("surrogate",
    the default, or "hard"; see :mod:`edge_sdk.submodel.fiarse`). ``num_samples`` (the
    aggregation weight) defaults to ``len(data.dataset)`` when there is one, else to the
    number of samples in the first pass over ``data``.
    """
    steps, epochs = _check_int("steps", steps), _check_int("epochs", epochs)
    if steps is not None and epochs is not None:
        raise InvalidInputError("train_local: give steps or epochs, not both")
    for name, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InvalidInputError(f"train_local: {name}={v!r} is not accepted; expected a finite number >= 0")
    if fiarse_gradient not in GRADIENT_MODES:
        raise InvalidInputError(f"train_local: fiarse_gradient={fiarse_gradient!r} is not accepted; "
                                f"expected one of {', '.join(GRADIENT_MODES)}")
    if not isinstance(submodel, nn.Module):
        raise InvalidInputError(f"train_local: submodel must be a torch.nn.Module, got {type(submodel).__name__}")
    if plan is not None and not isinstance(plan, SubmodelPlan):
        raise InvalidInputError(f"train_local: plan must be a SubmodelPlan or None, got {type(plan).__name__}")
    if isinstance(submodel, FiarseSubmodel):
        if plan is None or plan.strategy != "fiarse":
            raise PlanMismatchError("train_local: a FiarseSubmodel must be trained with its fiarse plan")
        submodel.gradient = fiarse_gradient
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    params = [p for p in submodel.parameters() if p.requires_grad]
    if not params:
        raise InvalidInputError("train_local: the submodel has no trainable parameters")
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    submodel.train()
    t0 = time.perf_counter()
    n_steps = 0
    loss_sum = 0.0
    correct = 0
    seen = 0
    first_pass = 0
    size = _dataset_size(data)
    for pass_idx, batch in _batches(data, steps, epochs):
        x, y = _split(batch)
        opt.zero_grad(set_to_none=True)
        out = submodel(x)
        loss = loss_fn(out, y)
        loss.backward()
        opt.step()
        n_steps += 1
        bs = int(y.shape[0]) if isinstance(y, torch.Tensor) and y.dim() else 1
        loss_sum += float(loss.detach()) * bs
        seen += bs
        if pass_idx == 0:
            first_pass += bs
        if isinstance(out, torch.Tensor) and out.dim() == 2 and isinstance(y, torch.Tensor) and y.dim() == 1:
            correct += int((out.detach().argmax(1) == y).sum())
    metrics = {
        "train_loss": loss_sum / max(seen, 1),
        "train_accuracy": correct / max(seen, 1),
        "steps": float(n_steps),
        "seconds": time.perf_counter() - t0,
    }
    if not math.isfinite(metrics["train_loss"]):
        log.warning("local training produced a non-finite loss; the server will refuse this update")
    if num_samples is None:
        num_samples = size if size is not None else first_pass
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise InvalidInputError(f"train_local: num_samples={num_samples!r} is not accepted; expected an integer >= 1")
    if plan is None:
        tensors = {n: t.detach().clone() for n, t in submodel.state_dict().items()}
        strategy = "fedavg"
    else:
        tensors = plan.collect(submodel)  # type: ignore[attr-defined]
        strategy = plan.strategy
    return Update(strategy, plan, tensors, int(num_samples), metrics)


@torch.no_grad()
def evaluate(model: nn.Module, data: Iterable[Any],
             loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Accuracy, mean loss and sample count of ``model`` (in eval mode) on ``data``."""
    loss_fn = loss_fn or nn.CrossEntropyLoss(reduction="sum")
    was = model.training
    model.eval()
    loss_sum = 0.0
    correct = 0
    n = 0
    try:
        for batch in data:
            x, y = _split(batch)
            out = model(x)
            loss = loss_fn(out, y)
            bs = int(y.shape[0])
            loss_sum += float(loss) if getattr(loss_fn, "reduction", "mean") == "sum" else float(loss) * bs
            correct += int((out.argmax(1) == y).sum())
            n += bs
    finally:
        model.train(was)
    return {"accuracy": correct / n if n else 0.0, "loss": loss_sum / n if n else 0.0, "samples": n}


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, loader: Iterable[Any]) -> None:
    """Replace the running statistics of every BatchNorm that tracks them by the exact
    average over ``loader`` (forward passes only, weights untouched)."""
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    try:
        for batch in loader:
            model(_split(batch)[0])
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        model.train(was)
