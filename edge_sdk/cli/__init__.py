"""The ``edge-sdk`` command line: parses, calls the library, prints.

Each subcommand lives in its own module exposing ``register(subparsers)``; the parser it
adds sets ``handler``, a function ``(args) -> int``. Library errors (``EdgeSDKError``) become
one line on stderr and exit code 2; usage errors also exit 2 (argparse's own convention).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any, Sequence

from edge_sdk import __version__
from edge_sdk.allocator import configure_allocator
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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``edge-sdk`` parser. Given the command line ``argv``, only the named command's
    module is imported (each imports its own dependencies: torch, onnx...), so a command
    does not pay for the start-up of the others; without one, every command is listed."""
    parser = _Parser(
        prog="edge-sdk",
        description=(
            "Let weak edge devices take part in model-heterogeneous federated learning: profile a "
            "device, cluster devices into tiers, plan each tier's submodel, simulate a federation, "
            "export a submodel as an integer-only model."
        ),
        epilog=(
            "The flow: profile -> cluster -> extract -> (train, merge: simulate, or on Flower) -> export. "
            "Run `edge-sdk COMMAND --help` for a command's options; `python -m edge_sdk` is the same "
            "command; its distribution (pip) name is edge-fl-sdk."
        ),
    )
    parser.add_argument("--version", action="version", version=f"edge-sdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _command_modules(argv):
        importlib.import_module(name).register(sub)
    return parser


def _command_modules(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The module of the command ``argv`` names (its first word that is not an option), or all."""
    word = next((arg for arg in argv or () if not arg.startswith("-")), None)
    named = f"edge_sdk.cli.{word}_cmd"
    return (named,) if word is not None and named in _COMMAND_MODULES else _COMMAND_MODULES


class _Terminated(Exception):
    """SIGTERM, raised in the main thread so that every ``finally`` (temporary export folders,
    atomic writes) runs before the process exits."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def _skip_final_collection() -> None:
    """Registered at exit: the interpreter's last garbage collection sweeps every object torch
    and its friends created (1.2 s of a 3.4 s ``import torch`` process on the shared 2-core
    VM, 0.3 s without it); the OS takes the memory back anyway."""
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    command = "edge-sdk"
    atexit.unregister(_skip_final_collection)  # once, however often main runs in a process
    atexit.register(_skip_final_collection)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        # Ctrl-C during start-up (the command modules import torch) is one line too
        argv = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        command = f"edge-sdk {args.command}"
        # Logging is configured here, once per process, on the root logger: the library only
        # creates loggers (logging.getLogger(__name__)) and never adds handlers, so every line is
        # printed once, prefixed with its logger's name.
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        # profiles and training rounds in one allocator state, whatever ran before (see the module)
        configure_allocator()
        return int(args.handler(args) or 0)
    except EdgeSDKError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"{command}: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """The ``edge-sdk`` program (console script and ``python -m edge_sdk``): :func:`main`,
    then exit with its status.

    An interrupt (status 130) ends the process with ``os._exit``: a SIGINT that arrives while
    a C extension is being imported (torch, at start-up) can leave CPython's "unhandled
    KeyboardInterrupt" flag set although :func:`main` handled it, and the interpreter then
    ends by re-raising SIGINT (status -2, not 130; measured: 5 of 16 start-up interrupts on a
    loaded 2-core machine, 0 of 16 this way). By then every ``finally`` of the command has run
    and its one line is printed."""
    code = main()
    if code == 130:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
