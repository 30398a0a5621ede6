"""Find and read hardware profiles: the shipped ones by name, a user's own by path."""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

from edge_sdk.errors import HardwareProfileError, UnknownNameError
from edge_sdk.hw_profiles.schema import HardwareProfile, profile_from_mapping

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

log = logging.getLogger(__name__)

_PACKAGE = "edge_sdk.hw_profiles"
_DATA = "data"
_SUFFIX = ".toml"
MAX_PROFILE_BYTES = 256 << 10  # the shipped profiles are 1-3 KiB


def names() -> list[str]:
    """The names of the profiles shipped with the SDK, sorted."""
    folder = resources.files(_PACKAGE).joinpath(_DATA)
    return sorted(
        entry.name[: -len(_SUFFIX)]
        for entry in folder.iterdir()
        if entry.name.endswith(_SUFFIX) and entry.is_file()
    )


def load(name_or_path: str | os.PathLike[str]) -> HardwareProfile:
    """A shipped profile by name (see :func:`names`), or a user's profile from a ``.toml`` path.

    A string is read as a path when it ends in ``.toml`` or contains a path separator.
    Raises :class:`UnknownNameError` for an unknown name (listing the shipped names) and
    :class:`HardwareProfileError` for a file that is missing, unreadable, not TOML, or breaks
    the schema (the message names the file and the field).
    """
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(str(name_or_path)):
        return load_file(name_or_path)
    name = str(name_or_path).strip().lower()
    shipped = names()
    if name not in shipped:
        raise UnknownNameError(
            f"unknown hardware profile {str(name_or_path)!r}; shipped profiles: "
            f"{', '.join(shipped)} (or give the path of your own .toml file)")
    entry = resources.files(_PACKAGE).joinpath(_DATA).joinpath(name + _SUFFIX)
    label = name + _SUFFIX
    profile = _parse(entry.read_bytes(), label=label, path=str(entry))
    if profile.name != name:
        raise HardwareProfileError(f"{label}: name is {profile.name!r}, expected {name!r}")
    return profile


def load_file(path: str | os.PathLike[str]) -> HardwareProfile:
    """Read and check a profile from a TOML file anywhere on disk."""
    file = Path(path)
    label = str(path)
    try:
        with file.open("rb") as fh:  # read one byte past the limit: /dev/zero or a huge file ends here
            data = fh.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise HardwareProfileError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise HardwareProfileError(f"{label}: is a directory, expected a .toml file") from None
    except OSError as exc:
        raise HardwareProfileError(f"{label}: cannot read: {exc.strerror or exc}") from None
    except ValueError:  # a path with a NUL byte
        raise HardwareProfileError(f"{label!r}: not a valid path") from None
    return _parse(data, label=label, path=str(file.resolve()))


def _parse(data: bytes, *, label: str, path: str) -> HardwareProfile:
    if len(data) > MAX_PROFILE_BYTES:
        raise HardwareProfileError(f"{label}: larger than {MAX_PROFILE_BYTES} bytes; a profile is a short TOML file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HardwareProfileError(f"{label}: not UTF-8 text (byte {exc.start})") from None
    try:
        doc = _toml.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise HardwareProfileError(f"{label}: not valid TOML: {str(exc)[:200]}") from None
    except RecursionError:  # tomllib recurses once per nested array / inline table
        raise HardwareProfileError(f"{label}: not valid TOML: arrays or tables nested too deep") from None
    profile = profile_from_mapping(doc, label=label, path=path)
    log.debug("loaded hardware profile %s from %s", profile.name, path)
    return profile


def _looks_like_path(text: str) -> bool:
    return text.endswith(_SUFFIX) or "/" in text or os.sep in text or (
        os.altsep is not None and os.altsep in text)
