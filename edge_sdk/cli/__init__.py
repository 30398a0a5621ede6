"""The ``edge-sdk`` command line: parses, calls the library, prints.

Each subcommand lives in its own module exposing ``register(subparsers)``; the parser it
adds sets ``handler``, a function ``(args) -> int``. Library errors (``EdgeSDKError``) become
one line on stderr and exit code 2; usage errors also exit 2 (argparse's own convention).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from edge_sdk import __version__
from edge_sdk.errors import EdgeSDKError

# Subcommand modules, in the order `edge-sdk --help` lists them.
_COMMAND_MODULES = (
    "edge_sdk.cli.profile_cmd",
    "edge_sdk.cli.hw_cmd",
    "edge_sdk.cli.cluster_cmd",
    "edge_sdk.cli.extract_cmd",
    "edge_sdk.cli.export_cmd",
    "edge_sdk.cli.simulate_cmd",
)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edge-sdk",
        description="Profile edge devices, plan submodels, train and export integer-only models.",
    )
    parser.add_argument("--version", action="version", version=f"edge-sdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except EdgeSDKError as exc:
        print(f"edge-sdk {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-sdk {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
