"""The allocator settings of edge_sdk.allocator: set once, observable in where glibc puts a
1 MiB block, and left alone when the user says so."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

GLIBC = sys.platform.startswith("linux") and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "") \
    if hasattr(os, "confstr") and "CS_GNU_LIBC_VERSION" in os.confstr_names else False

# mmapped bytes (mallinfo2's hblkhd) while a 1 MiB block is held, in a fresh process
_PROBE = textwrap.dedent("""
    import ctypes, sys
    from edge_sdk.allocator import configure_allocator
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    first = configure_allocator()
    again = configure_allocator()
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(1 << 20)
    mapped = libc.mallinfo2().hblkhd - before
    libc.free(block)
    print(first, again, mapped)
""")


def _probe(**env: str) -> tuple[str, str, int]:
    full = {k: v for k, v in os.environ.items() if k not in ("EDGE_SDK_ALLOCATOR", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**full, **env}, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    return out[0], out[1], int(out[2])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_configured_process_serves_a_1mib_block_from_the_heap() -> None:
    first, again, mapped = _probe()
    assert (first, again) == ("True", "True")
    assert mapped == 0  # below the 32 MiB threshold: heap, no fresh mmap


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
@pytest.mark.parametrize("env", [{"EDGE_SDK_ALLOCATOR": "default"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.check=0"}])
def test_left_alone_when_the_user_says_so(env: dict[str, str]) -> None:
    first, again, mapped = _probe(**env)
    assert (first, again) == ("False", "False")
    assert mapped >= 1 << 20  # glibc's default: a 1 MiB block is a fresh mapping


def test_cli_configures_the_allocator_before_running_a_command(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from edge_sdk import cli

    calls: list[str] = []

    def fake() -> bool:
        calls.append(capsys.readouterr().out)  # what the command had printed by then
        return True

    monkeypatch.setattr(cli, "configure_allocator", fake)
    assert cli.main(["hw", "list"]) == 0
    assert calls == [""]  # once, before the command printed anything
    assert capsys.readouterr().out  # and the command ran
