"""Hostile files and numbers given to the CLI: every case exits 2 with one line on stderr,
no traceback, and leaves an existing output untouched (issue 11)."""

from __future__ import annotations

import shutil

import numpy as np

from edge_sdk.cli import main

DEEP = "[" * 100_000 + "]" * 100_000


def _files(tmp):
    """name -> path of a hostile input file."""
    out = {}
    for name, data in {
        "empty": b"",
        "random": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "deep.json": DEEP.encode(),
        "huge-number.json": b'{"schema_version": 1e400}',
        "bool-version.json": b'{"schema_version": true}',
        "deep.toml": ("a = " + "[" * 50_000 + "]" * 50_000 + "\n").encode(),
        "not-utf8": b"\xff\xfe\x00garbage\x80",
    }.items():
        path = tmp / name
        path.write_bytes(data)
        out[name] = str(path)
    empty_npy = tmp / "empty.npy"
    empty_npy.write_bytes(b"")
    out["empty.npy"] = str(empty_npy)
    np.save(tmp / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    out["objects.npy"] = str(tmp / "objects.npy")
    return out


def _cases(files, out):
    cases = []
    for name in ("empty", "random", "deep.json", "not-utf8"):
        cases.append((f"export --plan {name}", ["export", "--model", "cnn1d", "--format", "int8-onnx",
                                                "--plan", files[name], "--out", out]))
    for name in ("empty", "random", "deep.json", "huge-number.json", "bool-version.json", "not-utf8"):
        cases.append((f"cluster {name}", ["cluster", files[name], "--json", out]))
    for name in ("empty", "random", "deep.toml", "not-utf8"):
        path = files[name] + ".toml"
        shutil.copyfile(files[name], path)
        cases.append((f"hw show {name}", ["hw", "show", path, "--json", out]))
    for name in ("empty.npy", "objects.npy", "random"):
        cases.append((f"export --calib {name}", ["export", "--model", "cnn1d", "--format", "int8-onnx",
                                                 "--calib", files[name], "--out", out]))
    cases += [
        ("export --seed huge", ["export", "--model", "cnn1d", "--format", "int8-onnx", "--seed", "1" + "0" * 400,
                                "--out", out]),
        ("extract --seed huge", ["extract", "--model", "cnn1d", "--strategy", "heterofl", "--ratio", "1/4",
                                 "--seed", "1" + "0" * 400, "--out", out]),
        ("extract --round negative", ["extract", "--model", "cnn1d", "--strategy", "fedrolex", "--ratio", "1/4",
                                      "--round", "-3", "--out", out]),
        ("extract --ratio nan", ["extract", "--model", "cnn1d", "--strategy", "heterofl", "--ratio", "nan",
                                 "--out", out]),
        ("export --threads huge", ["export", "--model", "cnn1d", "--format", "int8-onnx", "--threads", "1000000",
                                   "--out", out]),
        ("profile --threads huge", ["profile", "--no-model", "--quick", "--threads", "1000000", "--json", out]),
        ("simulate --rounds huge", ["simulate", "--rounds", "1" + "0" * 30, "--json", out]),
        ("simulate --lr inf", ["simulate", "--lr", "inf", "--json", out]),
        ("export --out equals --json", ["export", "--model", "cnn1d", "--format", "int8-onnx", "--out", out,
                                        "--json", out]),
    ]
    return cases


def test_every_hostile_case_exits_2_with_one_line(tmp_path, capsys):
    files = _files(tmp_path)
    out = tmp_path / "existing-output"
    out.write_bytes(b"keep me")
    failures = []
    for label, argv in _cases(files, str(out)):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors: exit 2 with one line
            code = exc.code
        except BaseException as exc:  # noqa: BLE001 - anything else escaping main is the failure
            code = f"{type(exc).__name__} escaped: {exc}"[:300]
        err = capsys.readouterr().err
        err_lines = [line for line in err.splitlines() if line.strip() and not line.startswith("WARNING ")]
        ok = code == 2 and len(err_lines) == 1 and "Traceback" not in err
        if not ok or out.read_bytes() != b"keep me":
            failures.append(f"{label}: exit {code}, stderr {err[-400:]!r}, "
                            f"output {'kept' if out.read_bytes() == b'keep me' else 'CHANGED'}")
        out.write_bytes(b"keep me")
    assert not failures, "\n".join(failures)


def test_outputs_that_clobber_an_input_or_each_other_exit_2(tmp_path, capsys):
    hw = tmp_path / "board.toml"
    hw.write_text("keep")
    png = tmp_path / "x.png"
    for argv in (["profile", "--hw", str(hw), "--json", str(hw)],
                 ["simulate", "--rounds", "1", "--json", str(png), "--plot", str(png)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and ("same file" in err or "overwrite the input" in err), err
    assert hw.read_text() == "keep" and not png.exists()
