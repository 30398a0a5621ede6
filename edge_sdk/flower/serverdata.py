"""FedTSA's stage-2 data on Flower: the source named by run config ``server-data``.

The server loads it (:func:`load_server_data`); for a built-in set every node leaves the
held-out samples out of its data before its partition is cut (:func:`drop_held_out`), as
``edge-sdk simulate --strategy fedtsa`` holds its proxy slice out before the client split.
Nodes compare samples by content, so the exclusion holds whatever seed a node's own data
uses.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import InvalidInputError
from edge_sdk.flower.config import ServerDataSpec

log = logging.getLogger(__name__)

__all__ = ["held_out_samples", "load_server_data", "drop_held_out", "check_server_data"]

_HOLDOUT_SALT = 4242  # the simulation's: np.random.default_rng([seed, 4242]).permutation(n)


def _bad(spec: ServerDataSpec, why: str) -> InvalidInputError:
    return InvalidInputError(f"config server-data={spec.text!r}: {why}")


def held_out_samples(spec: ServerDataSpec) -> torch.Tensor:
    """The inputs of the ``spec.size`` training samples a built-in ``server-data`` holds out."""
    from edge_sdk import datasets

    if spec.kind != "builtin":
        raise _bad(spec, "is not a built-in data set")
    data = datasets.load(spec.dataset, seed=spec.seed)
    x = data.train.tensors[0]
    n = int(x.shape[0])
    if spec.size >= n:
        raise _bad(spec, f"asks for {spec.size} samples; {spec.dataset} (seed {spec.seed}) has {n} training "
                         f"samples and the nodes need some: expected a size of 1 to {n - 1}")
    perm = np.random.default_rng([spec.seed, _HOLDOUT_SALT]).permutation(n)
    hold = torch.from_numpy(np.sort(perm[:spec.size]))
    return x[hold].clone()


def _load_npz(spec: ServerDataSpec) -> torch.Tensor:
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise _bad(spec, f"no such file ({path}); expected a .npz file holding a float array 'x'")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise _bad(spec, f"the file holds {sorted(z.files)} but no array 'x' (the server's inputs)")
            x = z["x"]
    except InvalidInputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _bad(spec, f"not a readable .npz file ({why})") from None
    if x.dtype.kind != "f" or x.ndim < 2 or x.shape[0] < 1:
        raise _bad(spec, f"array 'x' is {x.dtype} of shape {list(x.shape)}; expected floats (N, *input_shape), N >= 1")
    if not np.isfinite(x).all():
        raise _bad(spec, "array 'x' holds NaN or Inf values")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def load_server_data(spec: ServerDataSpec):
    """The :class:`edge_sdk.server_data.ProxyData` (unlabeled inputs) ``spec`` names."""
    from edge_sdk.server_data import ProxyData

    x = held_out_samples(spec) if spec.kind == "builtin" else _load_npz(spec)
    log.info("fedtsa server data: %d samples of shape %s from %s", x.shape[0], list(x.shape[1:]), spec.text)
    return ProxyData(x)


def check_server_data(spec: ServerDataSpec, x: torch.Tensor, model: nn.Module, model_name: str) -> None:
    """Refuse server data the global model cannot take as input (before any node is asked)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2])
    except (RuntimeError, ValueError, TypeError) as exc:
        raise _bad(spec, f"model {model_name!r} cannot take its samples of shape {list(x.shape[1:])} "
                         f"({str(exc).splitlines()[0]})") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise _bad(spec, f"model {model_name!r} does not return (batch, classes) logits on these samples")


def _row_keys(x: torch.Tensor) -> list[bytes]:
    rows = x.detach().contiguous().reshape(x.shape[0], -1).numpy()
    return [r.tobytes() for r in rows]


def drop_held_out(x: torch.Tensor, y: torch.Tensor, held: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` without the samples whose input equals one of ``held`` (bit for bit)."""
    if held.shape[1:] != x.shape[1:] or x.shape[0] == 0:
        return x, y
    held_keys = set(_row_keys(held.to(x.dtype)))
    keep = torch.tensor([k not in held_keys for k in _row_keys(x)], dtype=torch.bool)
    return x[keep].clone(), y[keep].clone()
