"""FedTSA on Flower: run config ``server-data`` (parsing, loading, refusals) and the nodes
leaving the server's samples out of their partitions. The whole ServerApp loop with FedTSA
is tested in test_flower.py (test_fedtsa_runs_both_stages_through_the_server_loop)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from edge_sdk.errors import InvalidInputError
from edge_sdk.flower.config import NodeSettings, RunSettings, ServerDataSpec, parse_server_data
from edge_sdk.flower.node import local_data
from edge_sdk.flower.serverdata import held_out_samples, load_server_data
from edge_sdk.flower.strategies import build_global, make_strategy


def test_server_data_forms_parse():
    assert parse_server_data("") is None and parse_server_data("  ") is None
    s = parse_server_data("mnist1d:512")
    assert (s.kind, s.dataset, s.size, s.seed) == ("builtin", "mnist1d", 512, 0)
    s = parse_server_data(" Digits:300:7 ")
    assert (s.kind, s.dataset, s.size, s.seed) == ("builtin", "digits", 300, 7)
    s = parse_server_data("~/proxy/unlabeled.NPZ")
    assert (s.kind, s.path) == ("npz", "~/proxy/unlabeled.NPZ")
    cfg = RunSettings.from_config({"strategy": "fedtsa", "server-data": "mnist1d:256:1", "fedtsa-steps": 5,
                                   "fedtsa-temperature": 2, "fedtsa-lr": "0.05", "fedtsa-batch-size": 16})
    assert cfg.strategy_options == {"steps": 5, "temperature": 2.0, "lr": 0.05, "batch_size": 16}
    assert cfg.server_holdout() == ServerDataSpec("mnist1d:256:1", "builtin", "mnist1d", 256, 1)
    assert cfg.to_dict()["server-data"] == "mnist1d:256:1"
    # only FedTSA uses server data, and only a built-in set is held out of the nodes' data
    assert RunSettings(strategy="heterofl", server_data="mnist1d:256").server_holdout() is None
    assert RunSettings(strategy="fedtsa", server_data="/tmp/x.npz").server_holdout() is None


@pytest.mark.parametrize("value, why", [
    ("cifar10:100", "unknown data set 'cifar10'"),
    ("mnist1d", "expected a size"),
    ("mnist1d:1:2:3", "expected a size"),
    ("mnist1d:lots", "must be integers"),
    ("mnist1d:0", "size must be >= 1"),
    ("digits:10:-1", "seed >= 0"),
    (512, "not a string"),
])
def test_bad_server_data_is_refused_naming_key_value_and_forms(value, why):
    with pytest.raises(InvalidInputError) as err:
        RunSettings.from_config({"strategy": "fedtsa", "server-data": value})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"config server-data={value!r} is not accepted")
    assert why in msg and "'<dataset>:<size>[:<seed>]'" in msg and "digits, mnist1d" in msg and ".npz" in msg


@pytest.mark.parametrize("cfg, key", [({"fedtsa-steps": 0}, "fedtsa-steps"), ({"fedtsa-lr": 0}, "fedtsa-lr"),
                                      ({"fedtsa-temperature": -1}, "fedtsa-temperature"),
                                      ({"fedtsa-batch-size": "big"}, "fedtsa-batch-size")])
def test_bad_fedtsa_options_are_refused(cfg, key):
    with pytest.raises(InvalidInputError, match=f"config {key}="):
        RunSettings.from_config({"strategy": "fedtsa", **cfg})


def test_fedtsa_without_server_data_is_refused():
    with pytest.raises(InvalidInputError, match="config server-data is empty; strategy 'fedtsa' needs"):
        make_strategy(RunSettings.from_config({"strategy": "fedtsa"}))


def test_builtin_holdout_is_the_simulations_slice_and_bounded():
    from edge_sdk import datasets

    spec = parse_server_data("mnist1d:300:5")
    x = held_out_samples(spec)
    train = datasets.load("mnist1d", seed=5).train.tensors[0]
    perm = np.random.default_rng([5, 4242]).permutation(len(train))  # simulate's proxy slice
    assert torch.equal(x, train[torch.from_numpy(np.sort(perm[:300]))])
    assert torch.equal(load_server_data(spec).x, x)
    with pytest.raises(InvalidInputError, match=r"server-data='mnist1d:4000'.*expected a size of 1 to 3999"):
        load_server_data(parse_server_data("mnist1d:4000"))


def test_npz_server_data_loads_x_and_refuses_bad_files(tmp_path):
    good = tmp_path / "proxy.npz"
    x = np.random.default_rng(0).normal(size=(50, 1, 40))
    np.savez(good, x=x, y=np.zeros(50, dtype=np.int64))  # y is ignored: stage 2 needs no labels
    src = load_server_data(parse_server_data(str(good)))
    assert src.x.dtype == torch.float32 and torch.equal(src.x, torch.from_numpy(x.astype(np.float32)))
    settings = RunSettings(strategy="fedtsa", server_data=str(good))
    build_global(make_strategy(settings), settings, np.random.default_rng(0))  # cnn1d takes (1, 40) inputs
    np.savez(tmp_path / "noimage.npz", images=x)
    np.savez(tmp_path / "ints.npz", x=np.zeros((4, 1, 40), dtype=np.uint8))
    np.savez(tmp_path / "nan.npz", x=np.full((4, 1, 40), np.nan))
    np.savez(tmp_path / "flat.npz", x=np.zeros(40))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    for name, why in [("missing.npz", "no such file"), ("noimage.npz", "no array 'x'"), ("ints.npz", "uint8"),
                      ("nan.npz", "NaN"), ("flat.npz", "shape [40]"), ("junk.npz", "not a readable .npz")]:
        path = str(tmp_path / name)
        match = re.escape(f"config server-data={path!r}: ") + ".*" + re.escape(why)
        with pytest.raises(InvalidInputError, match=match):
            make_strategy(RunSettings(strategy="fedtsa", server_data=path))


def test_server_data_the_model_cannot_take_is_refused_before_any_node(tmp_path):
    settings = RunSettings(strategy="fedtsa", model="cnn1d", server_data="digits:64")  # 8x8 images
    s = make_strategy(settings)
    with pytest.raises(InvalidInputError, match=r"server-data='digits:64': model 'cnn1d' cannot take .*\[1, 8, 8\]"):
        build_global(s, settings, np.random.default_rng(0))


def test_nodes_leave_the_servers_samples_out(tmp_path):
    spec = parse_server_data("mnist1d:400")
    held = {bytes(r.numpy().tobytes()) for r in held_out_samples(spec)}
    parts = [local_data(NodeSettings(partition_id=i, num_partitions=3, cache_dir=str(tmp_path)), "mnist1d", spec)
             for i in range(3)]
    assert sum(p.num_train for p in parts) == 4000 - 400  # as the simulation: held out before the split
    for p in parts:
        for x in (p.train.tensors[0], p.test.tensors[0]):
            assert not {bytes(r.numpy().tobytes()) for r in x} & held
    # the same nodes without server data hold some of those samples; the caches are kept apart
    plain = local_data(NodeSettings(partition_id=0, num_partitions=3, cache_dir=str(tmp_path)), "mnist1d")
    assert {bytes(r.numpy().tobytes()) for r in plain.train.tensors[0]} & held
    assert len(list(tmp_path.glob("data-mnist1d-*.npz"))) == 4
    # another seed for the server's draw of digits: overlap is removed by content, train and test
    spec = parse_server_data("digits:200:9")
    held = {bytes(r.numpy().tobytes()) for r in held_out_samples(spec)}
    node = local_data(NodeSettings(partition_id=0, num_partitions=1, seed=0, cache_dir=str(tmp_path)), "digits", spec)
    full = local_data(NodeSettings(partition_id=0, num_partitions=1, seed=0, cache_dir=str(tmp_path)), "digits")
    for x in (node.train.tensors[0], node.test.tensors[0]):
        assert not {bytes(r.numpy().tobytes()) for r in x} & held
    assert len(node.train) + len(node.test) < len(full.train) + len(full.test)
