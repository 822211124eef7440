"""The ``reprise`` command: run, re-run, inspect and compare runs; metrics and alerts.

``reprise --help`` lists the commands; ``docs/cli.md`` documents each with an example and its
JSON envelope. Built on :mod:`argparse`; ``import reprise`` never imports this package.

Each group of commands is one module with a ``register(subparsers)`` function, listed once in
:data:`COMMAND_MODULES`. Adding a group is adding its module name there.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import NoReturn

from reprise.cli._common import EXIT_ERROR, EXIT_OK, EXIT_RUN_CANCELLED, Output, UsageError, check_run_root
from reprise.errors import RepriseError

__all__ = ["COMMAND_MODULES", "UsageError", "build_parser", "main"]

#: The modules that add sub-commands, in the order ``reprise --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "reprise.cli._execute",  # run, rerun, resume
    "reprise.cli._runs",  # runs, show, trace, logs, diff
    "reprise.cli._gc",  # gc
    "reprise.cli._alerts",  # alerts, metrics
    "reprise.cli._view",  # view
    "reprise.cli._export",  # export
    "reprise.cli._experiment",  # experiment (run, resume, compare, parse)
    "reprise.cli._mcp",  # mcp
)


class _ParseError(UsageError):
    """A command line argparse refused, with the sub-command whose parser refused it."""

    def __init__(self, message: str, *, command: str) -> None:
        super().__init__(message)
        self.command = command  # "" for the `reprise` command itself


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors become one line (and an envelope with ``--json``)
    instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        # The sub-commands' parsers are named "reprise runs", "reprise experiment run", ...: the
        # envelope names the command as a successful one would ("experiment").
        command = next(iter(self.prog.split()[1:2]), "")
        raise _ParseError(f"{message} (see '{self.prog} --help')", command=command)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``reprise`` command with every registered sub-command."""
    from reprise._version import __version__

    parser = _Parser(
        prog="reprise",
        description="Run, re-run, inspect and compare reprise runs; read their metrics and alerts.",
        epilog="Every command takes --run-root DIR (default: $REPRISE_RUN_ROOT, else ./runs); "
        "read commands take --json. Exit codes: 0 ok, 1 run failed, 2 error, 130 cancelled.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"reprise {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``reprise`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit
    code."""
    from reprise.cli._experiment import default_action

    argv = default_action(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    if not argv:
        # `reprise` alone is someone asking what it can do.
        parser.print_help()
        return EXIT_OK
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            # Said by the sub-command that was given them, not by `reprise` as a whole.
            message = f"unrecognized arguments: {' '.join(extras)} (see 'reprise {args.command} --help')"
            raise _ParseError(message, command=args.command)
    except _ParseError as exc:
        # Reported as the UsageError it is (the envelope's error type is part of the interface).
        Output(exc.command, argparse.Namespace(json="--json" in argv)).fail(UsageError(exc.message))
        return EXIT_ERROR
    out = Output(args.command, args)
    restore = _stop_on_sigterm()
    try:
        check_run_root(args)
        code: int = args.handler(args, out)
        return code
    except RepriseError as exc:
        _debug()
        out.fail(exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        out.fail(RepriseError("interrupted"))
        return EXIT_RUN_CANCELLED
    except BrokenPipeError:
        # `reprise runs | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        _debug()
        out.fail(RepriseError(f"internal error: {type(exc).__name__}: {exc} (set REPRISE_DEBUG=1 for a traceback)"))
        return EXIT_ERROR
    finally:
        restore()


def _stop_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM (``docker stop``, systemd, Kubernetes) do what Ctrl-C does while a command
    runs: it raises SIGINT, so the run in progress is cancelled the way Ctrl-C cancels it
    (recorded ``cancelled``, what finished committed, resumable). Returns what restores the
    previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be set from the main thread

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # SIGINT ignored (a background job of a non-interactive shell): interrupt directly.
            raise KeyboardInterrupt
        # Whatever handles SIGINT now (asyncio's, which cancels the run's task; else Python's
        # default, which raises KeyboardInterrupt) handles this.
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _debug() -> None:
    if os.environ.get("REPRISE_DEBUG"):
        traceback.print_exc()
