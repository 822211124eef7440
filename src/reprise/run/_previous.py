"""Lookups into an earlier run: its results, outcomes, files and lineage."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from reprise.dsl._paths import HierarchyPath
from reprise.errors import RunSetupError
from reprise.run._directory import RunDirectory, RunMetadata
from reprise.run._reading import read_run_object
from reprise.run._reused import ReusedNode, ReusedNodes, RunOutcomes, read_reused

__all__ = ["PreviousRun", "ancestors", "link_tree"]


def link_tree(src: Path | str, dst: Path | str, *, skip: frozenset[str] = frozenset()) -> None:
    """Recreate the entries of directory ``src`` in the existing directory ``dst`` as hard
    links (copies where linking is not possible, e.g. across file systems); subdirectories are
    recreated and filled the same way, symbolic links are linked as they are. Names in ``skip``
    at the top level, and temporary files (``*.tmp``), are left out.

    A re-run does this for every reused node, so it is one ``listdir`` and one ``link`` per
    file: the entry type is only looked at when a link fails (a directory cannot be hard-linked).
    """
    for name in os.listdir(src):
        if name in skip or name.endswith(".tmp"):
            continue
        source = f"{src}/{name}"
        target = f"{dst}/{name}"
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            # Carried over already; a directory may still lack some of its files.
            if stat.S_ISDIR(os.lstat(source).st_mode):
                link_tree(source, target)
        except OSError:
            _link_slowly(source, target)


def _link_slowly(source: str, target: str) -> None:
    """What :func:`link_tree` does for an entry that cannot be hard-linked as it is."""
    mode = os.lstat(source).st_mode
    if stat.S_ISDIR(mode):
        os.makedirs(target, exist_ok=True)
        link_tree(source, target)
    elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        shutil.copy2(source, target, follow_symlinks=False)  # another file system


class PreviousRun:
    """Read access to a finished (or crashed) run that a new run reuses results from."""

    def __init__(self, run_dir: RunDirectory) -> None:
        self.dir = run_dir
        self.run_id = run_dir.run_id
        self.metadata: RunMetadata = run_dir.read_metadata()
        self._overlay: ReusedNodes | None = None

    @classmethod
    def open(cls, run_root: Path, run_id: str) -> PreviousRun:
        """The run ``run_id`` under ``run_root``; :class:`RunSetupError` naming it if absent."""
        return cls(RunDirectory.find(run_root, run_id))

    def result(self, path: HierarchyPath) -> dict[str, Any] | None:
        """The element's ``result.json`` in the earlier run. For a node that run reused as a
        link, the file read through the link is the run's that holds the directory: it comes
        back with that run's reuse fields (``reused``, ``reused_from``, ``origin_run_id``)."""
        if self.metadata.previous_run_id is None:
            return self.dir.read_result(path)
        if self._overlay is None:
            self._overlay = ReusedNodes(self.dir.path, self.metadata.previous_run_id)
        node_dir = self.dir.element_dir(path)
        linked = node_dir.is_symlink()
        if linked and not self._overlay.followable(node_dir):
            return None  # a link out of the run root is not followed
        result = self.dir.read_result(path)
        if result is None:
            return None
        return self._overlay.overlay(str(path), result, node_dir, linked)

    def reused_nodes(self) -> dict[str, ReusedNode] | None:
        """The nodes the earlier run reused (``.trace/reused.json``), ``None`` if it recorded
        none (not a re-run, or it crashed)."""
        if self.metadata.previous_run_id is None:
            return None
        return read_reused(self.dir.path)

    def outcomes(self) -> RunOutcomes | None:
        """The earlier run's ``.trace/outcomes.json`` (``None`` if it crashed)."""
        return RunOutcomes.read(self.dir.path)

    def executed(self, path: HierarchyPath) -> bool:
        """Whether the element at ``path`` ran (or started) in the earlier run."""
        return self.dir.element_dir(path).is_dir()

    def static_inputs(self) -> dict[str, Any]:
        """The static inputs the earlier run used, by node definition path."""
        try:
            return read_run_object(self.dir.static_inputs_dir / "static_inputs.json")
        except FileNotFoundError:
            return {}

    def initial_inputs(self) -> dict[str, Any]:
        """The earlier run's initial inputs."""
        try:
            return read_run_object(self.dir.static_inputs_dir / "initial_inputs.json")
        except FileNotFoundError:
            return {}

    def definition_bytes(self) -> bytes | None:
        """The earlier run's ``.trace/definition.json`` as written, if recorded."""
        try:
            with open(self.dir.trace_dir / "definition.json", "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def definition(self) -> dict[str, Any] | None:
        """The earlier run's definition outline (``.trace/definition.json``), if recorded."""
        try:
            return read_run_object(self.dir.trace_dir / "definition.json")
        except FileNotFoundError:
            return None


def ancestors(run_root: Path, run_id: str, *, limit: int = 1000) -> list[RunMetadata]:
    """The chain of runs ``run_id`` was re-run from, nearest first (not including itself)."""
    chain: list[RunMetadata] = []
    seen = {run_id}
    current = RunDirectory.find(run_root, run_id).read_metadata()
    while current.previous_run_id and len(chain) < limit:
        if current.previous_run_id in seen:
            raise RunSetupError(f"lineage of {run_id} loops at {current.previous_run_id}")
        seen.add(current.previous_run_id)
        try:
            current = RunDirectory.find(run_root, current.previous_run_id).read_metadata()
        except RunSetupError:
            break  # an ancestor was deleted: the chain ends there
        chain.append(current)
    return chain
