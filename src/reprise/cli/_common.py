"""What every command shares: ``--run-root``, ``--json``, the JSON envelope, errors, exit codes.

A command module adds its sub-commands in ``register(subparsers)`` and gives each a handler
``handler(args, out) -> int`` (set with ``parser.set_defaults(handler=...)``). The handler does
its work and calls ``out.emit(data, text)``: with ``--json`` the envelope goes to stdout, else
the text. A :class:`~reprise.errors.RepriseError` (or :class:`UsageError`) it raises becomes one
line on stderr (plus an ``ok: false`` envelope with ``--json``) and exit code 2.

The envelope, stable across versions (new keys may be added to ``data``, never removed)::

    {"command": "runs", "query": {...the arguments...}, "ok": true, "data": ..., "error": null}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from reprise.errors import RepriseError

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_RUN_CANCELLED",
    "EXIT_RUN_FAILED",
    "RUN_HELP",
    "Output",
    "UsageError",
    "LEVELS",
    "add_common",
    "add_level",
    "level_name",
    "check_run_root",
    "format_duration",
    "format_table",
    "note_skipped",
    "query_of",
    "resolve_run",
    "run_root_of",
]

#: The command did what was asked (and a run it started completed).
EXIT_OK = 0
#: A run the command started (run, rerun, resume) ended failed.
EXIT_RUN_FAILED = 1
#: The command could not do what was asked: bad arguments, unknown run, bad module path...
EXIT_ERROR = 2
#: A run the command started was cancelled (Ctrl-C).
EXIT_RUN_CANCELLED = 130

Handler = Callable[[argparse.Namespace, "Output"], int]


class UsageError(RepriseError):
    """The command line asks for something that cannot be done as written."""


#: The level names of ``logs`` and ``alerts``, least serious first (``warn`` is read as ``warning``).
LEVELS = ("debug", "info", "warning", "error")


def _level(text: str) -> str:
    name = text.strip().lower()
    return "warning" if name == "warn" else name


def add_level(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--level`` (``debug``, ``info``, ``warning`` or ``warn``, ``error``): one set of names
    for every command that filters by level."""
    parser.add_argument(
        "--level",
        type=_level,
        choices=LEVELS,
        help=f"only {what} at or above this level: {', '.join(LEVELS)} ('warn' works too)",
    )


def level_name(level: object) -> str:
    """A stored level as the commands print it (``warn`` and ``WARNING`` read ``warning``)."""
    return _level(str(level)) if level is not None else "-"


def add_progress(parser: argparse.ArgumentParser) -> None:
    """Add ``--progress`` (how commands that run things show it on stderr)."""
    parser.add_argument(
        "--progress",
        choices=("auto", "rich", "plain", "none"),
        default="auto",
        help="progress on stderr (auto: rich on a terminal, else plain lines)",
    )


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """Add ``--run-root`` (and ``--json``) to a sub-command."""
    parser.add_argument(
        "--run-root",
        metavar="DIR",
        default=None,
        help="where run directories live (default: $REPRISE_RUN_ROOT, else ./runs)",
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print one JSON envelope on stdout instead of text")


def run_root_of(args: argparse.Namespace) -> Path:
    """The run root the command works on, absolute."""
    raw = getattr(args, "run_root", None) or os.environ.get("REPRISE_RUN_ROOT") or "runs"
    return Path(raw).absolute()


#: The help of every RUN argument: what :func:`resolve_run` reads.
RUN_HELP = "a run id, a run name, 'latest' (also -1; -2 the run before), or the start of one run's id or name"


def resolve_run(args: argparse.Namespace, ref: str) -> str:
    """The id of the run that the RUN argument ``ref`` names under the command's run root (see
    :meth:`reprise.run._index.RunIndex.resolve`): every command taking a run reads it this way.
    An unknown or ambiguous reference is a :class:`~reprise.errors.RunSetupError` saying so."""
    from reprise.run._index import RunIndex

    return RunIndex(run_root_of(args)).resolve(ref).run_id


def check_run_root(args: argparse.Namespace) -> None:
    """:class:`UsageError` if the command's run root exists and is not a directory (it may not
    exist yet: ``run`` creates it, the read commands find no runs there)."""
    if "run_root" not in vars(args):
        return
    root = run_root_of(args)
    if root.exists() and not root.is_dir():
        raise UsageError(f"the run root {root} is not a directory (see --run-root and $REPRISE_RUN_ROOT)")


def note_skipped(out: Output, problems: Sequence[RepriseError]) -> None:
    """Tell on stderr what a reader skipped and why (a bad line, a run it could not read)."""
    for problem in problems:
        out.note(f"reprise {out.command}: warning: skipped: {problem}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/Infinity; strict parsers reject them
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def query_of(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of a command as the envelope echoes them (run root resolved)."""
    query = {k: v for k, v in vars(args).items() if k not in ("handler", "json", "command") and not k.startswith("_")}
    if "run_root" in query:
        query["run_root"] = str(run_root_of(args))
    return _jsonable(query)  # type: ignore[no-any-return]


class Output:
    """Where a command's result goes: text for people, or the JSON envelope."""

    def __init__(
        self, command: str, args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.command = command
        self.args = args
        self.json = bool(getattr(args, "json", False))
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.emitted = False

    def emit(self, data: Any, text: str | Callable[[], str] | None = None) -> None:
        """Print the result: the envelope with ``--json``, else ``text`` (a string or a
        function making one, so JSON callers never pay for formatting)."""
        self.emitted = True
        if self.json:
            self._envelope(ok=True, data=data, error=None)
            return
        body = text() if callable(text) else text
        if body:
            self.stdout.write(body if body.endswith("\n") else body + "\n")

    def fail(self, exc: BaseException, data: Any = None) -> None:
        """Report an error: one line on stderr, and an ``ok: false`` envelope with ``--json``."""
        message = str(exc) or type(exc).__name__
        prog = f"reprise {self.command}" if self.command else "reprise"
        self.stderr.write(f"{prog}: error: {_one_line(message)}\n")
        if self.json and not self.emitted:
            error: dict[str, Any] = {"type": type(exc).__name__, "message": _one_line(message)}
            if isinstance(exc, RepriseError):
                error["path"] = exc.path
                error["run_id"] = exc.run_id
            self._envelope(ok=False, data=data, error=error)
            self.emitted = True

    def note(self, line: str) -> None:
        """A line for people on stderr (progress, hints); never part of the JSON."""
        self.stderr.write(line if line.endswith("\n") else line + "\n")

    def _envelope(self, *, ok: bool, data: Any, error: dict[str, Any] | None) -> None:
        envelope = {"command": self.command, "query": query_of(self.args), "ok": ok, "data": data, "error": error}
        try:
            text = json.dumps(envelope, ensure_ascii=False, default=str, allow_nan=False)
        except ValueError:
            # A NaN or infinity somewhere (a logged metric, say): JSON has none, so they become
            # null. Walking the data costs time, so only when needed.
            text = json.dumps(_jsonable(envelope), ensure_ascii=False, default=str, allow_nan=False)
        self.stdout.write(text + "\n")
        self.stdout.flush()


def _one_line(message: str) -> str:
    return " ".join(message.split())


def format_duration(seconds: float | None) -> str:
    """``0.012s``, ``1.50s``, ``2m05s``, ``1h02m``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds:.3f}s"
    if seconds < 60:
        return f"{seconds:.2f}s"
    if seconds < 3600:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes}m{secs:02d}s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"
