"""Atomic file output: a file is either fully written or not there at all.

A regular file is replaced through a temporary file and a rename. A path that names
something else (a FIFO, a character device such as ``/dev/stdout`` or ``/dev/null``) is
written through, never replaced by a regular file; a symbolic link's target is replaced,
not the link.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from edge_sdk.errors import InvalidInputError, OutputError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Raises :class:`OutputError` naming the path when it cannot be written; the previous
    content of ``path``, if any, is kept in that case.
    """
    target = _resolve(path)
    if _is_special(target):
        return _write_through(target, data)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {target}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _mode_for(target))  # mkstemp makes 0600; give what a plain open() would
        os.replace(tmp, target)
    except OSError as exc:
        _remove_quietly(tmp)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Fail early, before long work, when ``path`` cannot be created or replaced."""
    target = _resolve(path)
    if _is_special(target):
        if not os.access(target, os.W_OK):
            raise OutputError(f"cannot write {path}: not writable")
        return target
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a directory")
    if not folder.is_dir():
        raise OutputError(f"cannot write {target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {target}: folder {folder} is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputError(f"cannot write {target}: file is not writable")
    return target


def check_distinct(outputs: Mapping[str, str | os.PathLike[str] | None],
                   inputs: Mapping[str, str | os.PathLike[str] | None] | None = None) -> None:
    """Refuse two outputs that are the same file, or an output that is one of the inputs
    (``--out`` equal to ``--json`` would replace the artifact with its report; ``--out`` equal
    to an input would destroy it). Keys name the options in the error; ``-`` (stdout) and
    None are skipped."""
    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if path is None or str(path) == "-":
            continue
        key = _identity(path)
        if key in seen:
            raise InvalidInputError(f"{flag} {path} is the same file as {seen[key]}; give each output its own path")
        seen[key] = f"{flag} {path}"
    for flag, path in (inputs or {}).items():
        if path is None or str(path) == "-":
            continue
        key = _identity(path)
        if key in seen and not _is_special(Path(key)):
            raise InvalidInputError(f"{seen[key]} would overwrite the input {flag} {path}; write to another path")


def _identity(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.fspath(path))


def _resolve(path: str | os.PathLike[str]) -> Path:
    """The file ``path`` names: a symbolic link's final target (so the link stays a link)."""
    p = Path(path)
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _is_special(target: Path) -> bool:
    """An existing non-regular, non-directory file (FIFO, device, socket)."""
    try:
        mode = target.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _write_through(target: Path, data: bytes) -> Path:
    try:
        with open(target, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def _mode_for(target: Path) -> int:
    """The mode of the file being replaced, or 0666 less the umask for a new file."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
