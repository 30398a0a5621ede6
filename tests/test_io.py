"""Output integrity: atomic replacement of regular files, write-through for FIFOs and
devices, a symlink's target replaced (not the link), outputs that would clobber each other
or an input refused before anything is written."""

from __future__ import annotations

import os
import threading

import pytest

from edge_sdk._io import atomic_write_text, check_distinct, check_writable
from edge_sdk.cli import main
from edge_sdk.errors import InvalidInputError, OutputError


def test_symlink_target_is_replaced_and_the_link_kept(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_fifo_and_device_are_written_through_not_replaced(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    check_writable(fifo)
    atomic_write_text(fifo, "through")
    reader.join(timeout=10)
    assert got == ["through"] and not fifo.is_file() and fifo.exists()
    atomic_write_text("/dev/null", "x")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text("precious")
    with pytest.raises(OutputError):
        atomic_write_text(tmp_path / "missing-folder" / "x.json", "y")
    assert target.read_text() == "precious"


def test_outputs_that_clobber_each_other_or_an_input_are_refused(tmp_path):
    a = tmp_path / "a.onnx"
    with pytest.raises(InvalidInputError, match="--json .* same file as --out"):
        check_distinct({"--out": a, "--json": str(a)})
    a.write_text("input")
    link = tmp_path / "alias"
    link.symlink_to(a)
    with pytest.raises(InvalidInputError, match="would overwrite the input --plan"):
        check_distinct({"--out": link}, {"--plan": a})
    check_distinct({"--out": a, "--json": "-"}, {"--plan": tmp_path / "b"})  # distinct: fine


def test_cli_refuses_out_equal_to_json_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "plan.bin"
    out.write_bytes(b"existing")
    code = main(["extract", "--model", "cnn1d", "--strategy", "heterofl", "--ratio", "1/4",
                 "--out", str(out), "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "same file" in err
    assert out.read_bytes() == b"existing"
