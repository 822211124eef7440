"""The node journal: ``.trace/journal.jsonl``, one line per node as it starts.

A node's directory (``input.json``, ``outcome.json``, ``result.json``) is written in one go when
the node finishes, so while a node runs - or after the process died under it - its directory
does not exist yet. The journal says which nodes started, when, and with which input: readers
(``reprise show``, the HTML view) list a started node without a ``result.json`` as ``running``
or ``interrupted``, and the input of a node that took its process down is not lost.

Each line is one ``write`` on an ``O_APPEND`` descriptor (about a microsecond): a line is whole
or absent, and a reader skips a torn last line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pydantic_core

from reprise.dsl._paths import HierarchyPath
from reprise.errors import DefinitionError, RunFileError
from reprise.run._directory import RESULT_FILE
from reprise.run._reading import read_run_jsonl

__all__ = ["JOURNAL_FILE", "InFlight", "NodeJournal", "in_flight", "read_journal"]

JOURNAL_FILE = "journal.jsonl"


class NodeJournal:
    """The append-only journal of one run's node starts."""

    __slots__ = ("_fd", "path")

    def __init__(self, trace_dir: Path | str) -> None:
        self.path = os.path.join(os.fspath(trace_dir), JOURNAL_FILE)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def started(self, path: str, started_at: str, input_data: Any) -> None:
        """Record that the node at ``path`` started with ``input_data`` (JSON-ready)."""
        if self._fd is None:
            return
        line = pydantic_core.to_json({"path": path, "started_at": started_at, "input": input_data}, fallback=str)
        os.write(self._fd, line + b"\n")

    def close(self) -> None:
        """Close the file; later records are ignored."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_journal(run_dir: Path | str, problems: list[RunFileError] | None = None) -> dict[str, dict[str, Any]]:
    """The journal of the run in ``run_dir``: each started node's record by hierarchy path (the
    last one when a node started more than once). Empty if there is none. Bad lines are skipped
    (and added to ``problems``): a resumed run appends after the torn line its crash left."""
    out: dict[str, dict[str, Any]] = {}
    try:
        file = os.path.join(os.fspath(run_dir), ".trace", JOURNAL_FILE)
        for item in read_run_jsonl(file, [] if problems is None else problems):
            if isinstance(item.get("path"), str):
                out[item["path"]] = item
    except FileNotFoundError:
        return {}
    return out


class InFlight:
    """Nodes a run started that have no ``result.json``: still running, or running when the
    process died. ``records`` holds their journal records by node directory; ``names`` the
    child names each directory must list for them (their directories may not exist)."""

    __slots__ = ("names", "records")

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.names: dict[str, set[str]] = {}

    def children(self, directory: Path | str) -> set[str]:
        """Names under ``directory`` that lead to an in-flight node."""
        return self.names.get(os.fspath(directory), set())

    def record(self, directory: Path | str) -> dict[str, Any] | None:
        """The journal record of the in-flight node whose directory is ``directory``."""
        return self.records.get(os.fspath(directory))


def in_flight(run_dir: Path | str, problems: list[RunFileError] | None = None) -> InFlight:
    """The in-flight nodes of the run in ``run_dir`` (see :class:`InFlight`); bad journal lines
    as in :func:`read_journal`."""
    base = os.fspath(run_dir)
    found = InFlight()
    for path, record in read_journal(base, problems).items():
        try:
            parts = HierarchyPath(path).parts
        except DefinitionError:
            continue  # not a hierarchy path: never let a line name a directory outside the run
        directory = os.path.join(base, *parts)
        if os.path.isfile(os.path.join(directory, RESULT_FILE)):
            continue
        found.records[directory] = record
        while directory != base:
            parent, name = os.path.split(directory)
            if parent == directory:
                break
            found.names.setdefault(parent, set()).add(name)
            directory = parent
    return found
