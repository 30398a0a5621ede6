"""Data sets generated offline, and the Dirichlet client splits."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from edge_sdk import datasets
from edge_sdk.errors import InvalidInputError, UnknownNameError


def test_mnist1d_shapes_split_and_dtypes():
    ds = datasets.load("mnist1d")
    assert ds.name == "mnist1d" and ds.num_classes == 10 and ds.input_shape == (1, 40)
    x, y = ds.train.tensors
    assert x.shape == (4000, 1, 40) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.unique().tolist()) == set(range(10))
    assert ds.test.tensors[0].shape == (1000, 1, 40)


def test_mnist1d_deterministic_and_seed_dependent_and_leaves_global_rng_alone():
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    a = datasets.load("mnist1d", seed=5)
    after = (random.random(), np.random.rand())
    assert before == after  # mnist1d seeds the global generators; load() restores them
    b = datasets.load("mnist1d", seed=5)
    c = datasets.load("mnist1d", seed=6)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    # the returned tensors are fresh copies: mutating one load does not leak into the next
    a.train.tensors[0].zero_()
    assert torch.equal(b.train.tensors[0], datasets.load("mnist1d", seed=5).train.tensors[0])


def test_digits_shapes_range_and_resize():
    ds = datasets.load("digits", seed=0)
    x, y = ds.train.tensors
    assert ds.input_shape == (1, 8, 8)
    assert len(ds.train) + len(ds.test) == 1797
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    # stratified 20% test split: every class in the test set
    assert np.bincount(ds.test_labels, minlength=10).min() >= 30
    big = datasets.load("digits", seed=0, image_size=32, channels=3)
    assert big.input_shape == (3, 32, 32) and big.train.tensors[0].shape[1:] == (3, 32, 32)
    xb = big.train.tensors[0]
    assert torch.equal(xb[:, 0], xb[:, 2])
    assert torch.equal(big.train.tensors[1], y)  # same samples, same order
    # info() predicts what load() gives without loading
    assert datasets.info("digits", image_size=32, channels=3) == (big.input_shape, 10)
    assert datasets.info("digits") == (ds.input_shape, 10)
    assert datasets.info("mnist1d") == ((1, 40), 10)


def test_unknown_dataset_and_bad_options():
    with pytest.raises(UnknownNameError, match="digits, mnist1d"):
        datasets.load("cifar10")
    with pytest.raises(InvalidInputError):
        datasets.load("mnist1d", image_size=32)
    with pytest.raises(InvalidInputError):
        datasets.load("digits", channels=2)


def test_dirichlet_split_is_a_disjoint_cover_with_min_size_and_deterministic():
    labels = np.random.default_rng(0).integers(0, 10, size=2000)
    parts = datasets.dirichlet_split(labels, 20, 0.3, np.random.default_rng(1))
    assert len(parts) == 20
    allidx = np.concatenate(parts)
    assert len(allidx) == len(labels) and len(np.unique(allidx)) == len(labels)
    assert min(len(p) for p in parts) >= 10
    again = datasets.dirichlet_split(labels, 20, 0.3, np.random.default_rng(1))
    assert all(np.array_equal(p, q) for p, q in zip(parts, again))
    other = datasets.dirichlet_split(labels, 20, 0.3, np.random.default_rng(2))
    assert not all(np.array_equal(p, q) for p, q in zip(parts, other))


def _mean_entropy(labels, parts):
    h = datasets.label_histogram(labels, parts, 10).astype(float)
    p = h / h.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return float(ent.mean())


def test_dirichlet_alpha_controls_label_skew():
    labels = np.repeat(np.arange(10), 200)
    skewed = datasets.dirichlet_split(labels, 10, 0.1, np.random.default_rng(0))
    mixed = datasets.dirichlet_split(labels, 10, 100.0, np.random.default_rng(0))
    assert _mean_entropy(labels, skewed) < 1.5 < _mean_entropy(labels, mixed)
    assert _mean_entropy(labels, mixed) > 0.95 * np.log(10)


def test_dirichlet_tops_up_tiny_clients_and_rejects_impossible_requests():
    labels = np.repeat(np.arange(10), 10)  # 100 samples
    parts = datasets.dirichlet_split(labels, 20, 0.01, np.random.default_rng(0), min_size=5, max_redraws=1)
    assert min(len(p) for p in parts) >= 5
    assert len(np.unique(np.concatenate(parts))) == 100
    with pytest.raises(InvalidInputError, match="fewer clients"):
        datasets.dirichlet_split(labels, 200, 0.3, np.random.default_rng(0), min_size=1)
    with pytest.raises(InvalidInputError, match="alpha"):
        datasets.dirichlet_split(labels, 2, 0.0, np.random.default_rng(0))


def test_split_like_follows_each_clients_label_mix():
    train = np.repeat(np.arange(10), 300)
    test = np.repeat(np.arange(10), 100)
    parts = datasets.dirichlet_split(train, 8, 0.3, np.random.default_rng(3))
    tparts = datasets.split_like(test, train, parts, np.random.default_rng(4))
    allidx = np.concatenate(tparts)
    assert len(allidx) == len(test) == len(np.unique(allidx))
    h_train = datasets.label_histogram(train, parts, 10).astype(float)
    h_test = datasets.label_histogram(test, tparts, 10).astype(float)
    # per class, the test samples are shared like the training samples (rounding aside)
    share_train = h_train / h_train.sum(0, keepdims=True)
    share_test = h_test / h_test.sum(0, keepdims=True)
    assert np.abs(share_train - share_test).max() <= 0.011
    # a class a client does not hold in training is absent from its test part
    assert np.all(h_test[h_train == 0] == 0)
