"""Small data sets generated offline, and the non-IID client splits simulations use.

Nothing here downloads: MNIST-1D is generated with the ``mnist1d`` package and the digits
come bundled with scikit-learn (both in the ``data`` extra: ``pip install "edge-fl-sdk[data]"``).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset

from edge_sdk.errors import InvalidInputError, MissingDependencyError, UnknownNameError

__all__ = [
    "DatasetSplit",
    "names",
    "info",
    "load",
    "dirichlet_split",
    "split_like",
    "label_histogram",
]

_DATASETS = ("digits", "mnist1d")


@dataclass
class DatasetSplit:
    """A train/test pair of ``TensorDataset`` s of ``(x, y)``: x float32, y int64."""

    name: str
    train: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, ...]  # one sample, without the batch dimension

    @property
    def train_labels(self) -> np.ndarray:
        return self.train.tensors[1].numpy()

    @property
    def test_labels(self) -> np.ndarray:
        return self.test.tensors[1].numpy()


def names() -> list[str]:
    """Names :func:`load` accepts."""
    return list(_DATASETS)


def info(name: str, *, image_size: int | None = None, channels: int | None = None) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` that :func:`load` would give, without loading anything."""
    key = str(name).strip().lower()
    if key == "mnist1d":
        if image_size is not None or channels is not None:
            raise InvalidInputError(
                "dataset 'mnist1d': image_size/channels apply only to 'digits'; "
                "mnist1d signals are (1, 40)"
            )
        return (1, 40), 10
    if key == "digits":
        if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
            raise InvalidInputError(f"image_size must be a positive integer, got {image_size!r}")
        if channels is not None and channels not in (1, 3):
            raise InvalidInputError(f"channels must be 1 or 3, got {channels!r}")
        side = 8 if image_size is None else int(image_size)
        return (1 if channels is None else int(channels), side, side), 10
    raise UnknownNameError(f"unknown dataset {name!r}; valid: {', '.join(_DATASETS)}")


def load(
    name: str,
    *,
    seed: int = 0,
    image_size: int | None = None,
    channels: int | None = None,
) -> DatasetSplit:
    """Load a data set by name.

    * ``mnist1d``: MNIST-1D generated offline (5000 signals, the package's 4000/1000 split),
      x of shape (N, 1, 40). ``seed`` is the generator's seed (the package's reference data
      set uses 42).
    * ``digits``: scikit-learn's 8x8 digits (1797 images) scaled to [0, 1], x of shape
      (N, 1, 8, 8); a seeded, class-stratified 80/20 train/test split. ``image_size``
      (e.g. 32) upscales bilinearly and ``channels=3`` repeats the gray channel, for
      CIFAR-style models.
    """
    info(name, image_size=image_size, channels=channels)  # checks the name and options
    key = str(name).strip().lower()
    if key == "mnist1d":
        x_tr, y_tr, x_te, y_te = _mnist1d_arrays(int(seed))
        return _make_split("mnist1d", x_tr, y_tr, x_te, y_te, 10)
    if key == "digits":
        x_tr, y_tr, x_te, y_te = _digits_arrays(int(seed))
        x_tr, x_te = (_resize(x, image_size, channels) for x in (x_tr, x_te))
        return _make_split("digits", x_tr, y_tr, x_te, y_te, 10)
    raise UnknownNameError(f"unknown dataset {name!r}; valid: {', '.join(_DATASETS)}")


def _make_split(name, x_tr, y_tr, x_te, y_te, num_classes) -> DatasetSplit:
    train = TensorDataset(torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr, dtype=torch.int64))
    test = TensorDataset(torch.tensor(x_te, dtype=torch.float32), torch.tensor(y_te, dtype=torch.int64))
    return DatasetSplit(name, train, test, num_classes, tuple(x_tr.shape[1:]))


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int) -> tuple[np.ndarray, ...]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise MissingDependencyError(
            'dataset "mnist1d" needs mnist1d (the data extra): pip install "edge-fl-sdk[data]"'
        ) from exc
    args = get_dataset_args()
    args.seed = seed
    # make_dataset seeds Python's and NumPy's global generators: keep the caller's state.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)  # generates; never touches the network
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x_tr = data["x"].astype(np.float32)[:, None, :]
    x_te = data["x_test"].astype(np.float32)[:, None, :]
    return x_tr, data["y"].astype(np.int64), x_te, data["y_test"].astype(np.int64)


@functools.lru_cache(maxsize=4)
def _digits_arrays(seed: int) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise MissingDependencyError(
            'dataset "digits" needs scikit-learn (the data extra): pip install "edge-fl-sdk[data]"'
        ) from exc
    bunch = load_digits()  # bundled with scikit-learn, no download
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx = []
    for k in np.unique(y):  # stratified 20% test
        idx = rng.permutation(np.flatnonzero(y == k))
        test_idx.append(idx[: int(round(0.2 * len(idx)))])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(y)), test)
    train = train[rng.permutation(len(train))]
    return x[train], y[train], x[test], y[test]


def _resize(x: np.ndarray, image_size: int | None, channels: int | None) -> np.ndarray:
    if image_size is not None:
        if int(image_size) != x.shape[-1]:
            t = torch.nn.functional.interpolate(
                torch.from_numpy(x), size=(int(image_size), int(image_size)), mode="bilinear",
                align_corners=False,
            )
            x = t.clamp_(0.0, 1.0).numpy()
    if channels is not None:
        if int(channels) == 3:
            x = np.repeat(x, 3, axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def dirichlet_split(
    labels: Sequence[int] | np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_size: int | None = None,
    max_redraws: int = 100,
) -> list[np.ndarray]:
    """Split sample indices over ``num_clients`` with per-class Dirichlet(``alpha``) shares.

    For every class, a share vector ~ Dir(alpha x 1) divides that class's (shuffled) samples
    among the clients; smaller ``alpha`` gives more skewed label mixes. The parts are
    disjoint and cover all samples. Every client gets at least ``min_size`` samples
    (default ``min(10, n // (2 x num_clients))``, at least 1): the draw is repeated up to
    ``max_redraws`` times, then the smallest clients are topped up from the largest.
    Deterministic for a given ``rng`` state. Returns sorted index arrays.
    """
    y = np.asarray(labels).reshape(-1)
    n = len(y)
    if int(num_clients) != num_clients or num_clients < 1:
        raise InvalidInputError(f"num_clients must be a positive integer, got {num_clients!r}")
    num_clients = int(num_clients)
    if not (np.isfinite(alpha) and alpha > 0):
        raise InvalidInputError(f"alpha must be a positive number, got {alpha!r}")
    if min_size is None:
        min_size = max(1, min(10, n // (2 * num_clients)))
    if n < num_clients * min_size:
        raise InvalidInputError(
            f"cannot give {num_clients} clients {min_size} samples each from {n} samples; "
            "use fewer clients"
        )
    classes = np.unique(y)
    parts: list[list[int]] = []
    for _ in range(max(1, max_redraws)):
        parts = [[] for _ in range(num_clients)]
        for k in classes:
            idx = rng.permutation(np.flatnonzero(y == k))
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for c, chunk in enumerate(np.split(idx, cuts)):
                parts[c].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            break
    else:
        _top_up(parts, min_size, rng)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _top_up(parts: list[list[int]], min_size: int, rng: np.random.Generator) -> None:
    """Move random samples from the largest parts to parts below ``min_size``."""
    for c in range(len(parts)):
        while len(parts[c]) < min_size:
            donor = max(range(len(parts)), key=lambda i: len(parts[i]))
            j = int(rng.integers(len(parts[donor])))
            parts[c].append(parts[donor].pop(j))


def split_like(
    labels: Sequence[int] | np.ndarray,
    reference_labels: Sequence[int] | np.ndarray,
    reference_parts: Sequence[np.ndarray],
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Split ``labels`` (e.g. a test set) so that each part has the label mix of the
    matching reference part (e.g. a client's training data).

    For each class, the samples are shuffled and divided among the parts in proportion to
    each part's count of that class in the reference (largest remainder rounding), so the
    parts are disjoint, cover every class some reference part holds, and give each client
    test data drawn from its own label distribution.
    """
    y = np.asarray(labels).reshape(-1)
    ref = np.asarray(reference_labels).reshape(-1)
    num_parts = len(reference_parts)
    if num_parts < 1:
        raise InvalidInputError("reference_parts must hold at least one part")
    out: list[list[int]] = [[] for _ in range(num_parts)]
    for k in np.unique(y):
        counts = np.array([np.count_nonzero(ref[np.asarray(p, dtype=np.int64)] == k) for p in reference_parts],
                          dtype=np.float64)
        if counts.sum() == 0:
            continue
        idx = rng.permutation(np.flatnonzero(y == k))
        quota = counts / counts.sum() * len(idx)
        alloc = np.floor(quota).astype(int)
        rest = len(idx) - alloc.sum()
        if rest:
            order = np.argsort(-(quota - alloc), kind="stable")
            alloc[order[:rest]] += 1
        start = 0
        for c in range(num_parts):
            out[c].extend(idx[start:start + alloc[c]].tolist())
            start += alloc[c]
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in out]


def label_histogram(labels: Sequence[int] | np.ndarray, parts: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Counts per (part, class): shape (len(parts), num_classes)."""
    y = np.asarray(labels).reshape(-1)
    return np.stack([np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=num_classes) for p in parts])
