"""What a run records for the re-runs and readers that come after it.

Two run-level files in ``.trace/``, each written once, when the executor finishes (completed,
failed or cancelled; a crash writes neither):

``outcomes.json``
    The outcome of every node that completed with a directory of its own in this run (executed,
    or reused as a copy), by hierarchy path, in one document::

        {"version": 1, "outcomes": {"root.a": 2, ...}, "on_disk": ["root.big"], "declared": ["root.w"]}

    ``on_disk`` lists completed nodes whose outcome is only in their ``outcome.json`` (large
    ones), ``declared`` those that declared outcome files. A re-run reads this file once instead
    of a ``result.json`` and an ``outcome.json`` per reused node.

``reused.json``
    The nodes this run reused, grouped by where their directory really is and where they
    executed::

        {"version": 1, "previous_run_id": "run_...", "reused_nodes": "link",
         "groups": [{"dir_run_id": "run_a", "origin_run_id": "run_a", "paths": ["root.n0", ...]}]}

    ``dir_run_id`` is the run holding the node's real directory (the target of a link-mode
    re-run's symbolic link; the re-run itself for a copy), ``origin_run_id`` the run where the
    node executed.

A reused node of a link-mode re-run is a relative symbolic link to the node's directory in the run
that holds it (``../../run_a/root/n0``): its ``result.json``, read through the link, is that
run's. Readers overlay the reuse (:class:`ReusedNodes`). After a crash ``reused.json`` is missing,
and the links themselves tell: a linked node directory is a reused node, its target names the run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprise.errors import RunFileError
from reprise.run._directory import RUN_ID_PATTERN
from reprise.run._files import dump_json, write_bytes_atomic
from reprise.run._reading import read_run_object

__all__ = [
    "OUTCOMES_FILE",
    "REUSED_FILE",
    "RunOutcomes",
    "ReusedNode",
    "ReusedNodes",
    "link_text",
    "linked_run_id",
    "outcomes_document",
    "read_reused",
    "reused_document",
    "write_trace_file",
]

OUTCOMES_FILE = "outcomes.json"
REUSED_FILE = "reused.json"
_VERSION = 1
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.]*\Z")


@dataclass(frozen=True, slots=True)
class ReusedNode:
    """Where a reused node's directory is (``dir_run_id``) and where it executed."""

    dir_run_id: str
    origin_run_id: str


def link_text(depth: int, dir_run_id: str, relpath: str) -> str:
    """The relative target of the link for the node at ``relpath`` (``depth`` segments, e.g.
    ``root/sub/n0`` is 3) pointing into the sibling run ``dir_run_id``: up out of the run
    directory, then down into the other one. Relative, so a run root can be moved as a whole."""
    return "../" * depth + f"{dir_run_id}/{relpath}"


def linked_run_id(node_dir: str | Path) -> str | None:
    """The run a linked node directory points into, ``None`` if it is not a link (or not a link
    reprise made: the target must be ``../``... then ``<run id>/...``)."""
    try:
        target = os.readlink(node_dir)
    except OSError:
        return None
    parts = target.split("/")
    k = 0
    while k < len(parts) and parts[k] == "..":
        k += 1
    # A run id, or it names no run (a link made by hand may say anything).
    return parts[k] if 0 < k < len(parts) and RUN_ID_PATTERN.match(parts[k]) else None


# -- outcomes.json ---------------------------------------------------------------------------
def outcomes_document(held: Iterable[str], outcome_bytes: Mapping[str, bytes], declared: Iterable[str] = ()) -> bytes:
    """The bytes of ``outcomes.json`` for the completed nodes ``held`` (in order), from the
    ``outcome.json`` bytes the executor kept: no encoding again, the indented documents are
    embedded as they are (JSON allows the whitespace)."""
    parts: list[bytes] = []
    on_disk: list[str] = []
    get = outcome_bytes.get
    for path in held:
        data = get(path)
        if data is None:
            on_disk.append(path)
        elif _PLAIN_PATH.match(path):
            # Hierarchy paths are ids and indexes: nothing to escape (the usual case, cheaper).
            parts.append(b'"%s": %s' % (path.encode(), data.rstrip(b"\n")))
        else:
            parts.append(json.dumps(path).encode() + b": " + data.rstrip(b"\n"))
    return (
        b'{"version": 1,\n"outcomes": {\n'
        + b",\n".join(parts)
        + b'\n},\n"on_disk": '
        + json.dumps(on_disk).encode()
        + b',\n"declared": '
        + json.dumps(sorted(set(declared))).encode()
        + b"}\n"
    )


class RunOutcomes:
    """A run's ``outcomes.json``, read: which nodes completed with a directory of their own,
    and their outcome data."""

    __slots__ = ("declared", "on_disk", "values")

    def __init__(self, values: dict[str, Any], on_disk: set[str], declared: set[str]) -> None:
        self.values = values
        self.on_disk = on_disk
        self.declared = declared

    @classmethod
    def read(cls, run_path: Path | str) -> RunOutcomes | None:
        """The file of the run at ``run_path``; ``None`` when it has none (it crashed, it ran
        before the file existed) or it cannot be read."""
        try:
            data = read_run_object(f"{run_path}/.trace/{OUTCOMES_FILE}")
            values = data["outcomes"]
            on_disk = set(data.get("on_disk") or ())
            declared = set(data.get("declared") or ())
        except (OSError, RunFileError, KeyError, TypeError):
            return None  # a cache: without it, readers take the outcomes from the node directories
        if not isinstance(values, dict):
            return None
        return cls(values, on_disk, declared)

    def completed(self, path: str) -> bool:
        """Whether the node at ``path`` completed, with its directory, in this run."""
        return path in self.values or path in self.on_disk


# -- reused.json -----------------------------------------------------------------------------
def reused_document(previous_run_id: str, mode: str, groups: Mapping[tuple[str, str], list[str]]) -> bytes:
    """The bytes of ``reused.json``: ``groups`` maps ``(dir_run_id, origin_run_id)`` to paths."""
    return dump_json(
        {
            "version": _VERSION,
            "previous_run_id": previous_run_id,
            "reused_nodes": mode,
            "groups": [{"dir_run_id": d, "origin_run_id": o, "paths": paths} for (d, o), paths in groups.items()],
        }
    )


def read_reused(run_path: Path | str) -> dict[str, ReusedNode] | None:
    """The nodes the run at ``run_path`` reused, by hierarchy path; ``None`` when it recorded
    none (not a re-run, it crashed, or it ran before the file existed)."""
    try:
        data = read_run_object(f"{run_path}/.trace/{REUSED_FILE}")
        nodes: dict[str, ReusedNode] = {}
        for group in data["groups"]:
            node = ReusedNode(str(group["dir_run_id"]), str(group["origin_run_id"]))
            # Run ids become paths (the run holding a directory is read and linked to): a file
            # naming anything else is not one reprise wrote, and the links tell instead.
            if not (RUN_ID_PATTERN.match(node.dir_run_id) and RUN_ID_PATTERN.match(node.origin_run_id)):
                return None
            for path in group["paths"]:
                nodes[path] = node
    except (OSError, RunFileError, KeyError, TypeError):
        return None  # the links say which nodes were reused
    return nodes


def write_trace_file(run_path: Path | str, name: str, data: bytes) -> None:
    """Write ``.trace/<name>`` of the run at ``run_path`` atomically."""
    write_bytes_atomic(f"{run_path}/.trace/{name}", data)


# -- readers ---------------------------------------------------------------------------------
class ReusedNodes:
    """Which nodes of one run were reused, for readers of its directory.

    A link-mode re-run's reused node is a symbolic link: the ``result.json`` read through it is
    the run's that holds the directory (``"reused": false`` if that run executed it).
    :meth:`overlay` turns it into what the re-run means: reused, from the re-run's previous
    run, executed in the origin run. ``reused.json`` says which nodes those are; without it (a
    crashed re-run) the links do, one ``readlink`` each."""

    __slots__ = ("_root", "_run_path", "nodes", "previous_run_id")

    def __init__(self, run_path: Path | str, previous_run_id: str | None) -> None:
        self.previous_run_id = previous_run_id
        self.nodes = read_reused(run_path) if previous_run_id is not None else None
        self._run_path = run_path
        self._root: str | None = None

    def followable(self, node_dir: str | Path) -> bool:
        """Whether the linked node directory ``node_dir`` leads into the run root, where the
        runs it may link to are: a link out of it (made by hand, or in a run directory from
        elsewhere) is not followed, so no reader shows files from outside the run root."""
        if self._root is None:
            self._root = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(self._run_path))), "")
        return os.path.realpath(node_dir).startswith(self._root)

    def overlay(
        self, path: str, result: dict[str, Any] | None, node_dir: str | Path, linked: bool
    ) -> dict[str, Any] | None:
        """``result`` (the node's ``result.json`` as read) with the reuse fields of this run:
        ``reused``, ``reused_from`` and ``origin_run_id`` when the node was reused here, else
        ``result`` as it is. ``linked``: whether the node's directory is a symbolic link."""
        if result is None or self.previous_run_id is None:
            return result
        entry = self.nodes.get(path) if self.nodes is not None else None
        if entry is not None:
            origin = entry.origin_run_id
        elif linked:
            if result.get("reused") and result.get("origin_run_id"):
                origin = str(result["origin_run_id"])
            else:
                origin = linked_run_id(node_dir) or str(result.get("origin_run_id") or "")
        else:
            return result
        return {**result, "reused": True, "reused_from": self.previous_run_id, "origin_run_id": origin}
