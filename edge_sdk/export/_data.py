"""Calibration / evaluation samples: shape checks and conversion to float32 arrays."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import InvalidInputError

__all__ = ["model_input_shape", "as_samples", "split_eval", "float_logits"]


def model_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """Per-sample input shape: ``model.config.input_shape`` for reference models, else ``None``."""
    cfg = getattr(model, "config", None)
    shape = getattr(cfg, "input_shape", None)
    return tuple(int(d) for d in shape) if shape is not None else None


def as_samples(data: Any, input_shape: Sequence[int] | None, what: str) -> np.ndarray:
    """``data`` as a float32 array ``(N, *input_shape)``; refuses any other shape in one line."""
    if isinstance(data, torch.Tensor):
        array = data.detach().cpu().numpy()
    else:
        try:
            array = np.asarray(data)
        except Exception as exc:  # noqa: BLE001 - ragged lists and the like
            raise InvalidInputError(f"{what} data is not an array: {exc}") from exc
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InvalidInputError(f"{what} data has dtype {array.dtype}; expected a numeric array")
    expected = f"(N, {', '.join(str(d) for d in input_shape)})" if input_shape is not None else "(N, ...)"
    if array.ndim < 2 or array.shape[0] < 1:
        raise InvalidInputError(f"{what} data has shape {tuple(array.shape)}; expected an array {expected} with N >= 1")
    if input_shape is not None and tuple(array.shape[1:]) != tuple(input_shape):
        raise InvalidInputError(
            f"{what} data has shape {tuple(array.shape)} but the model takes samples of shape "
            f"{tuple(input_shape)}; expected an array {expected}"
        )
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{what} data holds NaN or infinite values; expected finite numbers")
    return np.ascontiguousarray(array)


def split_eval(eval_data: Any, input_shape: Sequence[int] | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``eval_data`` is ``None``, an array of samples, or a tuple ``(samples, labels)``."""
    if eval_data is None:
        return None, None
    if isinstance(eval_data, tuple):
        if len(eval_data) != 2:
            raise InvalidInputError(
                f"evaluation data is a tuple of {len(eval_data)}; expected (samples, labels) or an array")
        x = as_samples(eval_data[0], input_shape, "evaluation")
        y = np.asarray(eval_data[1].detach().cpu().numpy() if isinstance(eval_data[1], torch.Tensor) else eval_data[1])
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise InvalidInputError(
                f"evaluation labels have shape {tuple(y.shape)} and dtype {y.dtype}; expected "
                f"{x.shape[0]} integer class labels"
            )
        return x, y.astype(np.int64)
    return as_samples(eval_data, input_shape, "evaluation"), None


def float_logits(model: nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Outputs of the float model (eval mode, no grad), as a float32 array."""
    outs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            out = model(torch.from_numpy(x[start : start + batch]))
            if not isinstance(out, torch.Tensor):
                raise InvalidInputError(
                    f"the model returns {type(out).__name__}; export needs a model returning one tensor"
                )
            outs.append(out.float().cpu().numpy())
    return np.concatenate(outs, axis=0)


def check_model_accepts(model: nn.Module, x: np.ndarray, what: str) -> np.ndarray:
    """Run one sample through the model; a shape error becomes a one-line InvalidInputError."""
    try:
        return float_logits(model, x[:1])
    except InvalidInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the model raises on a bad shape
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(
            f"{what} samples of shape {tuple(x.shape[1:])} do not fit the model: {first}"
        ) from exc
