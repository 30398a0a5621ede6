"""Steady memory-allocator settings for processes that profile and train (glibc only).

glibc's malloc serves a block above ``M_MMAP_THRESHOLD`` (128 KiB at start) with fresh
``mmap`` pages, and gives heap space above ``M_TRIM_THRESHOLD`` back to the OS; both
thresholds only rise when a large block is freed, up to glibc's own bounds (32 MiB and
64 MiB on 64-bit). A training step allocates and frees the same activation buffers every
step, so until the thresholds have risen far enough, and for some sizes for good, every step
pays page faults for its activations. What a step costs then depends on what the process
ran before, which is what a profile must not depend on.

Measured on the 2-core test VM, idle (bench/bench_profile.md against
bench/bench_profile_glibc_default.md, the same bench before these settings): resnet8's
training step (batch 32, 2 threads) took 25.7 ms at size 1 with glibc's defaults and 16.1 ms
with the thresholds set from the start, and the profile's predicted round time at size 1/4
was off by -22.7 % (median of three; the profile measures sizes smallest first, the round ran
after size 1's) against -2.3 % with them.

:func:`configure_allocator` sets both thresholds to glibc's bounds, which is where glibc's
own adaptation ends after the first large free: a process keeps up to 64 MiB of freed heap
instead of returning it at once. The ``edge-sdk`` command and the Flower ClientApp call it;
a program using the Python API calls it once itself, or not, if that memory matters more.
``EDGE_SDK_ALLOCATOR=default`` (or malloc settings in ``GLIBC_TUNABLES``) leaves the
allocator as it is. Other C libraries (musl, macOS, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "configure_allocator", "opt_out_reason"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # glibc's dynamic rule: trim = 2 x mmap threshold
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
_configured: bool | None = None


def configure_allocator() -> bool:
    """Set glibc's mmap and trim thresholds to :data:`MMAP_THRESHOLD` and
    :data:`TRIM_THRESHOLD` once per process; True if they are set (now or before)."""
    global _configured
    if _configured is not None:
        return _configured
    _configured = _apply()
    return _configured


def opt_out_reason() -> str | None:
    """Why the environment asks to leave the allocator as it is (None: it does not)."""
    if os.environ.get("EDGE_SDK_ALLOCATOR", "").strip().lower() == "default":
        return "EDGE_SDK_ALLOCATOR=default"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets malloc options"
    return None


def _apply() -> bool:
    reason = opt_out_reason()
    if reason is not None:
        log.debug("allocator left as it is: %s", reason)
        return False
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (absent outside glibc, e.g. musl)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("glibc malloc thresholds: mmap %d, trim %d (%s)", MMAP_THRESHOLD, TRIM_THRESHOLD,
              "set" if ok else "refused")
    return ok
