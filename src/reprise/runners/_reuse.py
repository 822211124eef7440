"""The reuse-or-execute decision of a re-run and of a resume.

A re-run names an earlier run and a start path. Every node that precedes the start path in
execution order, and completed in the earlier run, is *reused*: its outcome is taken from the
earlier run and its code is not called. The start element and everything after it execute
again. Composite elements are always evaluated again, so conditions and loop items see the
reused outcomes.

A resume names only the earlier run: every node that completed in it is reused, wherever it
is, and every other node executes. One start path cannot say this: iterations of a concurrent
loop, and the branches of a parallel block, complete in any order, so nodes after the first
unfinished one may have completed. Reusing all of them is consistent: a node completes only
after the nodes it reads from completed, so everything a reused node depends on is reused too
(the definition must match the earlier run's everywhere, see :meth:`ReusePlan._check_definition`).

How a reused node appears in the new run's directory (``RunContext(reused_nodes=...)``):

``"link"`` (the default)
    one relative symbolic link to the node's directory in the run that holds it (where it
    executed, however many re-runs ago: never a link to a link); the run records what it
    reused in ``.trace/reused.json`` (:mod:`reprise.run._reused`).
``"copy"``
    a directory of its own: hard links to the earlier files and a ``result.json`` that says
    ``"reused": true`` and names the run it came from. Self-contained: the earlier runs may be
    deleted or the run shipped elsewhere.

"Precedes" follows the definition: an earlier sibling in a flow or agent, an earlier loop
iteration (``loop.3`` precedes ``loop.7``), and - for a start path inside a parallel branch -
every *sibling* branch: they run concurrently and do not depend on the re-run branch, so they are
reused where they completed and executed where they did not.

A resume records the first element that did not complete as its start path (``None`` when
every element completed: a run killed after its last node, which the resume then completes).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprise.dsl._container import Container
from reprise.dsl._definition import DefinitionIndex, definition_path
from reprise.dsl._elements import ConditionalElement, ContainerElement, ForEachElement, NodeElement, ParallelElement
from reprise.dsl._node import Node
from reprise.dsl._paths import HierarchyPath
from reprise.errors import RepriseError, RerunError, RunSetupError
from reprise.run._directory import OUTCOME_FILE, RESULT_FILE
from reprise.run._files import dump_json, exchange_paths, write_new_dir
from reprise.run._outcome_repo import OutcomeFile
from reprise.run._previous import PreviousRun, link_tree
from reprise.run._reused import (
    REUSED_FILE,
    ReusedNode,
    ReusedNodes,
    RunOutcomes,
    link_text,
    linked_run_id,
    read_reused,
    reused_document,
    write_trace_file,
)
from reprise.run._status import RunStatus

_SKIP_RESULT = frozenset({RESULT_FILE})

if TYPE_CHECKING:
    from reprise.run._context import RunContext

__all__ = ["REUSED_NODES_MODES", "ReusePlan", "find_resume_point", "materialize_reused"]

#: The values of ``RunContext(reused_nodes=...)``.
REUSED_NODES_MODES = ("link", "copy")

#: Which children of one parent precede the start path: see :meth:`ReusePlan._rule`.
_Rule = tuple[Container, int] | int | bool

# Outcomes of copied nodes kept for the run's outcomes.json: each at most this big (as the
# executor keeps those of executed nodes).
_KEEP_OUTCOME_BYTES = 4096


def _applies(rule: _Rule, child: str) -> bool:
    """Whether ``rule`` says the child ``child`` (an id or a loop index) precedes the start."""
    if isinstance(rule, tuple):
        position = rule[0].position(child)
        return position is not None and position < rule[1]
    if isinstance(rule, bool):  # before int: a bool is an int
        return rule
    return child.isdigit() and int(child) < rule


class ReusePlan:
    """Decides, node by node, whether a re-run reuses the earlier run's result, and makes the
    reused node's place in the new run (a link or a copy)."""

    def __init__(
        self,
        index: DefinitionIndex,
        previous: PreviousRun,
        start: HierarchyPath | None,
        mode: str = "link",
        *,
        resume: bool = False,
    ) -> None:
        if mode not in REUSED_NODES_MODES:
            raise RunSetupError(f"reused_nodes must be 'link' or 'copy', not {mode!r}")
        if start is None and not resume:
            raise RunSetupError("a re-run needs a start path")
        self.index = index
        self.previous = previous
        #: The first element to execute again; for a resume, the first that did not complete
        #: (``None`` if every element did).
        self.start = start
        #: ``"link"`` or ``"copy"``.
        self.mode = mode
        self.links = mode == "link"
        self._start_parts = start.parts if start is not None else ()
        #: A resume: every node that completed in the earlier run is reused, wherever it is.
        self.resumed = resume
        self._declared: list[OutcomeFile] = []
        self._previous_id = previous.run_id
        self._previous_base = str(previous.dir.path)
        self._root = str(previous.dir.path.parent)
        #: :meth:`_rule` by parent path and the child on the start path's side.
        self._rules: dict[tuple[tuple[str, ...], str], _Rule] = {}
        # What the earlier run recorded when it finished: the nodes it reused (and where their
        # directories are) and those it completed with a directory of its own. Both, or the
        # node files are read instead (a crash wrote neither).
        self._previous_reused = previous.reused_nodes()
        previous_outcomes = previous.outcomes()
        self._previous_rerun = previous.metadata.previous_run_id is not None
        self._recorded = previous_outcomes is not None and (
            self._previous_reused is not None or not self._previous_rerun
        )
        self._previous_outcomes = previous_outcomes if previous_outcomes is not None else RunOutcomes({}, set(), set())
        #: Where a node the earlier run executed is: there.
        self._here = ReusedNode(previous.run_id, previous.run_id)
        #: ``outcomes.json`` of the runs holding reused directories, read once each.
        self._held: dict[str, RunOutcomes | None] = {previous.run_id: previous_outcomes}
        #: The new run (set by :meth:`attach`).
        self._base: str | None = None
        self._run_id = ""
        #: What this run reused: paths by (run holding the directory, origin run).
        self.groups: dict[tuple[str, str], list[str]] = {}
        self._group_of: dict[int, list[str]] = {}
        self._group_keep: list[ReusedNode] = []  # keeps the ids of _group_of valid
        #: Nodes reused as copies (their directory is this run's), and their small outcomes.
        self.copied: list[str] = []
        self.copied_bytes: dict[str, bytes] = {}
        self.copied_declared: list[str] = []

    # -- preparation (before anything runs) ------------------------------------------------
    @classmethod
    def prepare(cls, ctx: RunContext, index: DefinitionIndex) -> ReusePlan:
        """Check the re-run request against the earlier run and the definition; raise
        :class:`RerunError` (never a silent no-op) if it cannot be honoured."""
        assert ctx.previous_run_id is not None
        try:
            previous = PreviousRun.open(ctx.run_root, ctx.previous_run_id)
        except RunSetupError as exc:
            raise RerunError(f"cannot re-run: {exc.message}", run_id=ctx.previous_run_id) from None
        if previous.metadata.root_component_id != index.root_id:
            raise RerunError(
                f"run {previous.run_id} ran root component {previous.metadata.root_component_id!r}, "
                f"not {index.root_id!r}"
            )
        start = ctx.start_hierarchy_path
        resumed = start is None
        if start is None:
            start = find_resume_point(previous, index)
            ctx.start_hierarchy_path = start
        plan = cls(index, previous, start, ctx.reused_nodes, resume=resumed)
        if not resumed:
            plan._check_start()
        plan._check_definition()
        plan._carry_inputs(ctx)
        return plan

    def _check_start(self) -> None:
        """Check the start path the user named (a resume's is found in the earlier run)."""
        start = self.start
        assert start is not None
        element = self.index.element(start)
        if start.root != self.index.root_id or element is None or not _index_segments_ok(start, self.index):
            near = self.index.suggest(str(start))
            hint = f"; nearest valid paths: {', '.join(near)}" if near else ""
            raise RerunError(f"start path {start} does not exist in the definition{hint}", path=str(start))
        if not self.previous.executed(start):
            raise RerunError(
                f"start path {start} did not execute in run {self.previous.run_id} "
                "(a branch not taken, an iteration that did not happen, or the run stopped before it)",
                path=str(start),
            )

    def _check_definition(self) -> None:
        """Refuse a definition that no longer matches the earlier run's where nodes may be
        reused: before the start path for a re-run; everywhere for a resume, which reuses
        completed nodes wherever they are (an element added before one of them could change
        its input)."""
        if self.previous.definition_bytes() == self.index.outline_json():
            return  # the usual case: the same outline, written the same way (nothing to parse)
        before = self.previous.definition()
        if before is None:
            return  # runs made before outlines were recorded: nothing to compare
        now = self.index.outline()
        if before == now:
            return  # the usual case, and one comparison instead of one per element
        start_parts = tuple(definition_path(self.start).split(".")) if self.start is not None else ()
        problems: list[str] = []
        for path in sorted(set(before) | set(now)):
            parts = tuple(path.split("."))
            relevant = self.resumed or self._precedes(parts, start_parts) or start_parts[: len(parts)] == parts
            if not relevant:
                continue
            old, new = before.get(path), now.get(path)
            if old == new:
                continue
            if old is None:
                problems.append(f"{path} is new")
            elif new is None:
                problems.append(f"{path} was removed")
            else:
                problems.append(f"{path} changed from {old} to {new}")
        if problems:
            shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
            if self.resumed:
                raise RerunError(
                    f"the definition no longer matches run {self.previous.run_id}, and a resume reuses "
                    f"what it completed anywhere: {shown} (re-run from a start path instead)",
                    run_id=self.previous.run_id,
                )
            raise RerunError(
                f"the definition before {self.start} no longer matches run {self.previous.run_id}: {shown}",
                path=str(self.start),
            )

    def _carry_inputs(self, ctx: RunContext) -> None:
        # The new run's own static inputs win; the earlier run's fill in the rest.
        for path, data in self.previous.static_inputs().items():
            if path in self.index.nodes and ctx.static_input(path) is None:
                ctx.register_node_static_input(path, data)
        if not ctx.initial_inputs:
            ctx.initial_inputs.update(self.previous.initial_inputs())

    def attach(self, ctx: RunContext) -> None:
        """Record the plan in the new run's metadata, once the run is set up (which may have
        happened before the plan carried the earlier run's inputs over)."""
        self._declared = ctx.declared_outcome_files
        run_dir = ctx.require_run_dir()
        self._base = str(run_dir.path)
        self._run_id = run_dir.run_id
        ctx.save_initial_inputs()
        start = str(self.start) if self.start is not None else None
        ctx.annotate(resumed=self.resumed, start_hierarchy_path=start, reused_nodes=self.mode)

    def write_record(self) -> None:
        """Write ``.trace/reused.json``: which nodes this run reused, where their directories
        are and where they executed (the executor calls it when the run ends)."""
        if self._base is not None:
            write_trace_file(self._base, REUSED_FILE, reused_document(self._previous_id, self.mode, self.groups))

    # -- the decision ----------------------------------------------------------------------
    def _precedes(self, parts: tuple[str, ...], start: tuple[str, ...]) -> bool:
        """Whether the element at ``parts`` runs before the start element (definition paths
        or concrete paths)."""
        k = 0
        n = min(len(parts), len(start))
        while k < n and parts[k] == start[k]:
            k += 1
        if k == len(parts) or k == len(start):
            return False  # an ancestor of the start, the start itself, or inside it
        return _applies(self._rule(parts[:k], start[k]), parts[k])

    def _rule(self, parent_parts: tuple[str, ...], b: str) -> _Rule:
        """Which children of the element at ``parent_parts`` precede its child ``b``: those at
        an earlier position in a flow or agent (the container and ``b``'s position), the
        iterations before ``b`` in a loop (an int), every sibling branch of a parallel block
        (``True``), none (``False``). Worked out once per parent: the siblings of a long chain
        or the iterations of a loop share it."""
        key = (parent_parts, b)
        rule = self._rules.get(key)
        if rule is not None:
            return rule
        parent = ".".join("*" if p.isdigit() else p for p in parent_parts)
        container = self.index.container_at(parent)
        if container is not None:
            pb = container.position(b)
            rule = (container, pb) if pb is not None else False
        else:
            el = self.index.elements.get(parent)
            if isinstance(el, ForEachElement):
                rule = int(b) if b.isdigit() else False
            else:
                rule = isinstance(el, ParallelElement)
        self._rules[key] = rule
        return rule

    def _reused_here(self, parts: tuple[str, ...]) -> bool:
        """Whether the node at ``parts`` is reused if it completed in the earlier run: always
        in a resume, else if it precedes the start path (:meth:`_precedes`, on the hot path of a
        re-run)."""
        if self.resumed:
            return True
        start = self._start_parts
        n = min(len(parts), len(start))
        k = 0
        while k < n and parts[k] == start[k]:
            k += 1
        if k == len(parts) or k == len(start):
            return False
        return _applies(self._rule(parts[:k], start[k]), parts[k])

    def leading(self, parts: tuple[str, ...], body: Container) -> int:
        """How many of the first elements of ``body``, run at the path ``parts``, precede the
        start: all of them in a body wholly before it, those before the start's position in the
        body that holds it, none in one at or after it. The executor reuses those nodes in one
        go (:meth:`reuse_linked`). In a resume, all of them: each is reused if it completed."""
        elements = body.elements
        if self.resumed:
            return len(elements)
        start = self._start_parts
        n = len(parts)
        if n < len(start) and start[:n] == parts:
            rule = self._rule(parts, start[n])
            if isinstance(rule, tuple) and rule[0] is body:
                return min(rule[1], len(elements))  # positions in the body are its indexes
            k = 0
            while k < len(elements) and _applies(rule, elements[k].id):
                k += 1
            return k
        return len(elements) if self._reused_here(parts) else 0

    def reuse_node(self, path: HierarchyPath, node: Node, node_dir: str) -> tuple[Any, dict[str, Any]] | None:
        """Reuse the earlier result of the node at ``path`` if it completed and precedes the
        start (or this is a resume); returns ``(outcome, result)`` or ``None`` to execute it.

        On reuse, ``node_dir`` (which need not exist, nor its parent) becomes a symbolic link to
        the node's directory in the run that holds it (``"link"``), or a directory of hard links
        to its files with the new ``result.json``, made all at once (``"copy"``,
        :func:`_carry_dir`): a crash leaves the node absent or complete, never half there.
        ``result`` holds ``status``, ``reused``, ``reused_from`` and ``origin_run_id``: the
        reuse fields of the node, not its whole ``result.json``."""
        if not self._reused_here(path.parts):
            return None
        if not self.links:
            return self._reuse_copy(path, node, node_dir)
        text, rel = str(path), path.relpath
        standard = self._base is not None and node_dir == f"{self._base}/{rel}"
        got = self.reuse_linked(text, rel, len(path.parts), node, None if standard else node_dir)
        if got is None:
            return None
        return got[0], {
            "status": "completed",
            "reused": True,
            "reused_from": self._previous_id,
            "origin_run_id": got[1].origin_run_id,
        }

    # -- link mode -------------------------------------------------------------------------
    def reuse_linked(
        self, text: str, rel: str, depth: int, node: Node, node_dir: str | None = None
    ) -> tuple[Any, ReusedNode] | None:
        """The link-mode reuse of the node at hierarchy path ``text`` (``rel`` with ``/``,
        ``depth`` segments), which precedes the start: ``(outcome, where it came from)``, or
        ``None`` when it did not complete in the earlier run (execute it).

        This runs for every reused node (999 times for a re-run from the last node of a
        1,000-node chain), so it is dictionary look-ups into what the earlier runs recorded and
        one ``symlink``: no file of the node is read. ``node_dir``: where the link goes, if not
        at its place in the new run (``None``)."""
        where: ReusedNode | None
        if self._recorded:
            # The usual case, inlined: two dictionary look-ups.
            where = self._previous_reused.get(text) if self._previous_reused is not None else None
            if where is None:
                if not self._previous_outcomes.completed(text):
                    return None
                where = self._here
        else:
            where = self._where(text, rel)
            if where is None:
                return None
        dir_run = where.dir_run_id
        held = self._held[dir_run] if dir_run in self._held else self._held_outcomes(dir_run)
        try:
            if held is not None and text in held.values:
                outcome = node.load_outcome(held.values[text])
            else:
                outcome = self._outcome(dir_run, text, rel, node)
        except FileNotFoundError:
            return None  # the run holding it lost the node's directory: execute it
        except RepriseError:
            raise
        except Exception as exc:
            raise self._unfit(text, node, exc) from exc
        if node_dir is None:
            node_dir = f"{self._base}/{rel}"
            target = link_text(depth, dir_run, rel)
        else:
            target = os.path.relpath(f"{self._root}/{dir_run}/{rel}", os.path.dirname(node_dir))
        try:
            try:
                os.symlink(target, node_dir)
            except FileNotFoundError:
                # The executor makes composite directories as they start; a caller may not have.
                os.makedirs(os.path.dirname(node_dir), exist_ok=True)
                os.symlink(target, node_dir)
        except OSError:
            # Something is there already, or the file system has no symbolic links: a copy.
            result = self._copy_from(text, rel, node, node_dir, dir_run)
            if result is None:
                return None
            return result[0], ReusedNode(self._run_id, str(result[1]["origin_run_id"]))
        if held is None or text in held.declared:
            self._carry_declared(text, f"{self._root}/{dir_run}/{rel}", node_dir)
        # The paths of one group share its ReusedNode: found by identity, not by hashing it.
        group = self._group_of.get(id(where))
        if group is None:
            group = self.groups.setdefault((dir_run, where.origin_run_id), [])
            self._group_of[id(where)] = group
            self._group_keep.append(where)
        group.append(text)
        return outcome, where

    def _where(self, text: str, rel: str) -> ReusedNode | None:
        """Where the node's real directory is and where it executed, if it completed in the
        earlier run; ``None`` if it did not."""
        if self._recorded:
            if self._previous_reused is not None:
                where = self._previous_reused.get(text)
                if where is not None:
                    return where
            return self._here if self._previous_outcomes.completed(text) else None
        # The earlier run recorded nothing (it crashed): its node files tell, one by one.
        dir_run = self._dir_run(text, rel)
        try:
            old = json.loads(_read(f"{self._root}/{dir_run}/{rel}/{RESULT_FILE}"))
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        if not isinstance(old, dict) or old.get("status") != "completed":
            return None
        origin = old.get("origin_run_id") if old.get("reused") else None
        return ReusedNode(dir_run, str(origin or dir_run))

    def _dir_run(self, text: str, rel: str) -> str:
        """The run holding the real directory of the earlier run's node ``text``: the earlier
        run, or - for a node it reused as a link - the run the link points into."""
        if self._previous_reused is not None:
            where = self._previous_reused.get(text)
            return where.dir_run_id if where is not None else self._previous_id
        if not self._previous_rerun:
            return self._previous_id  # not a re-run: it made no links
        return linked_run_id(f"{self._previous_base}/{rel}") or self._previous_id

    def _held_outcomes(self, run_id: str) -> RunOutcomes | None:
        if run_id not in self._held:
            self._held[run_id] = RunOutcomes.read(f"{self._root}/{run_id}")
        return self._held[run_id]

    def _outcome(self, dir_run: str, text: str, rel: str, node: Node) -> Any:
        """The node's outcome, rebuilt through its outcome type: from the ``outcomes.json`` of
        the run holding it, else its ``outcome.json`` (``FileNotFoundError`` if there is none)."""
        held = self._held_outcomes(dir_run)
        if held is not None and text in held.values:
            data = held.values[text]
        else:
            try:
                data = json.loads(_read(f"{self._root}/{dir_run}/{rel}/{OUTCOME_FILE}"))
            except NotADirectoryError:
                raise FileNotFoundError(text) from None
        return self._load(text, node, data)

    def _load(self, text: str, node: Node, data: Any) -> Any:
        try:
            return node.load_outcome(data)
        except Exception as exc:
            raise self._unfit(text, node, exc) from exc

    def _unfit(self, text: str, node: Node, exc: Exception) -> RepriseError:
        return RepriseError(
            f"cannot reuse the outcome from run {self._previous_id}: it no longer fits {node.name} ({exc})",
            path=text,
        )

    def _carry_declared(self, text: str, real_dir: str, node_dir: str) -> None:
        """Declared outcome files of a linked node, for the commit (they are in its directory,
        reached through the link)."""
        try:
            old = json.loads(_read(f"{real_dir}/{RESULT_FILE}"))
        except (OSError, ValueError):
            return
        if isinstance(old, dict) and old.get("outcome_files"):
            self._carry_declared_files(old, Path(real_dir).resolve(), Path(node_dir), text)

    # -- copy mode -------------------------------------------------------------------------
    def _reuse_copy(self, path: HierarchyPath, node: Node, node_dir: str) -> tuple[Any, dict[str, Any]] | None:
        """The copy-mode reuse: the earlier ``result.json`` read and updated (reused, from which
        run, the run where the node executed), the node's other files hard-linked, and the new
        directory renamed into place at once."""
        text, rel = str(path), path.relpath
        return self._copy_from(text, rel, node, node_dir, self._dir_run(text, rel))

    def _copy_from(
        self, text: str, rel: str, node: Node, node_dir: str, dir_run: str
    ) -> tuple[Any, dict[str, Any]] | None:
        old_dir = f"{self._root}/{dir_run}/{rel}"
        try:
            old = json.loads(_read(f"{old_dir}/{RESULT_FILE}"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return self._reuse_parsed(text, node, node_dir, old_dir, old, dir_run)

    def _copied(self, text: str, raw: bytes, origin: str, *, declared: bool) -> None:
        self.copied.append(text)
        if len(raw) <= _KEEP_OUTCOME_BYTES:
            self.copied_bytes[text] = raw
        if declared:
            self.copied_declared.append(text)
        self.groups.setdefault((self._run_id, origin), []).append(text)

    def _load_outcome(self, text: str, node: Node, old_dir: str) -> tuple[Any, bytes]:
        """The earlier outcome, rebuilt through the node's outcome type, and its bytes
        (``FileNotFoundError`` when there is none)."""
        raw = _read(f"{old_dir}/{OUTCOME_FILE}")
        return self._load(text, node, json.loads(raw)), raw

    def _reuse_parsed(
        self, text: str, node: Node, node_dir: str, old_dir: str, old: dict[str, Any], dir_run: str
    ) -> tuple[Any, dict[str, Any]] | None:
        """:meth:`_copy_from` once the earlier ``result.json`` is read: ``None`` (execute the
        node) unless it completed there."""
        if old.get("status") != "completed":
            return None
        try:
            outcome, raw = self._load_outcome(text, node, old_dir)
        except FileNotFoundError:
            return None
        result = dict(old)
        result["reused"] = True
        result["reused_from"] = self._previous_id
        # The run whose node actually executed, however many re-runs ago.
        result["origin_run_id"] = old.get("origin_run_id", dir_run) if old.get("reused") else dir_run
        declared = bool(old.get("outcome_files"))
        if declared:
            self._carry_declared_files(old, Path(old_dir).resolve(), Path(node_dir), text)
        _carry_dir(old_dir, node_dir, dump_json(result))
        self._copied(text, raw, str(result["origin_run_id"]), declared=declared)
        return outcome, result

    def _carry_declared_files(self, old: dict[str, Any], old_dir: Path, node_dir: Path, node_path: str) -> None:
        # A declared file is in the node's directory, at its repository path below the node's
        # (declare_outcome_file copies one from elsewhere in): found from that path, so neither
        # a moved run root (``source`` is absolute) nor a ``source`` naming a file outside the
        # node (a run directory from elsewhere) takes the commit elsewhere.
        prefix = node_path.replace(".", "/") + "/"
        for entry in old.get("outcome_files") or ():
            repo_path = entry.get("repo_path") if isinstance(entry, dict) else None
            if not isinstance(repo_path, str) or not repo_path.startswith(prefix):
                continue
            rel = repo_path[len(prefix) :].split("/")
            if any(part in ("", ".", "..") for part in rel):
                continue
            self._declared.append(OutcomeFile(node_dir.joinpath(*rel), repo_path, node_path))


# -- the file work of a reused node, on plain os calls --------------------------------------
_READ_SIZE = 1 << 16

def _read(path: str) -> bytes:
    """A whole small file, without the cost of a buffered file object."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _READ_SIZE)
        if len(data) < _READ_SIZE:
            return data
        chunks = [data]
        while chunk := os.read(fd, _READ_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _carry_dir(old_dir: str, node_dir: str, result: bytes) -> None:
    """Make ``node_dir`` hold hard links to the files of ``old_dir`` (but its ``result.json``)
    and ``result`` as its ``result.json``, all at once, as an executed node's directory is
    written (:func:`reprise.run._files.write_new_dir`): a reader, or a resume after a crash, sees
    no directory or a complete one."""
    def links(directory: str) -> None:
        link_tree(old_dir, directory, skip=_SKIP_RESULT)

    write_new_dir(node_dir, [(RESULT_FILE, result)], fill=links)


def _index_segments_ok(path: HierarchyPath, index: DefinitionIndex) -> bool:
    """Numeric segments only directly below loops, and nowhere else."""
    parts = path.parts
    for i, part in enumerate(parts[1:], start=1):
        parent = definition_path(".".join(parts[:i]))
        el = index.elements.get(parent)
        below_loop = isinstance(el, ForEachElement) and not parent.endswith("*") and parent.rsplit(".", 1)[-1] == el.id
        if part.isdigit() != below_loop:
            return False
    return True


def find_resume_point(previous: PreviousRun, index: DefinitionIndex) -> HierarchyPath | None:
    """The first element, in execution order, that did not complete in ``previous``; ``None``
    when every element completed but the run did not (it was killed after its last node: the
    resume completes it). A run that completed has nothing to resume: :class:`RerunError`."""
    found = _first_incomplete(previous, index.root, HierarchyPath(index.root_id))
    if found is None and previous.metadata.status is RunStatus.COMPLETED:
        raise RerunError(
            f"run {previous.run_id} has nothing to resume: every element completed "
            "(use a re-run with a start path to execute part of it again)",
            run_id=previous.run_id,
        )
    return found


def _completed(result: dict[str, Any] | None) -> bool:
    return result is not None and result.get("status") == "completed"


def _first_incomplete(previous: PreviousRun, body: Container, path: HierarchyPath) -> HierarchyPath | None:
    for el in body.elements:
        p = path.child(el.id)
        result = previous.result(p)
        if isinstance(el, NodeElement):
            if not _completed(result):
                return p
            continue
        if result is None and not previous.executed(p):
            return p
        if isinstance(el, ContainerElement):
            found = _first_incomplete(previous, el.body, p)
        elif isinstance(el, ConditionalElement):
            taken = (result or {}).get("branch") or next(
                (b for b in ("then", "else") if previous.executed(p.child(b))), None
            )
            if taken is None and result is None:
                # Cut off before any node of the branch finished (a node's directory, and so the
                # branch's, appears when it finishes): the conditional itself did not complete.
                return p
            branch = el.then_body if taken == "then" else el.else_body if taken == "else" else None
            found = _first_incomplete(previous, branch, p.child(taken)) if branch is not None and taken else None
        elif isinstance(el, ForEachElement):
            # The loop records its iteration count as soon as its items are known, so a crash
            # inside the loop still tells how many iterations there were to run.
            count = (result or {}).get("iterations")
            if count is None:
                return p
            found = None
            for i in range(int(count)):
                found = _first_incomplete(previous, el.body, p.child(i))
                if found is not None:
                    break
        elif isinstance(el, ParallelElement):
            found = None
            for bid, branch_body in el.branches.items():
                found = _first_incomplete(previous, branch_body, p.child(bid))
                if found is not None:
                    break
        else:  # pragma: no cover
            found = None
        if found is not None:
            return found
        # A composite that failed by itself (e.g. its loop items did not validate) is where to
        # resume. One with no result.json at all was cut off by a crash after its last child
        # completed: nothing in it needs to run again.
        if result is not None and not _completed(result):
            return p
    return None


# -- making a link-mode re-run stand alone -----------------------------------------------------------
_MADE, _ASIDE = ".materialized", ".link"  # ".<node>" + these: a swap's hidden halves


def materialize_reused(run_path: Path | str) -> list[str]:
    """Replace every linked reused node of the run at ``run_path`` by a directory of its own, as
    ``reused_nodes="copy"`` makes them (hard links to the files of the directory the link led
    to, and a ``result.json`` marked reused), and record the run's ``reused.json`` as a copy
    run's. Afterwards the run no longer needs the runs it linked into: they can be deleted.

    Returns the hierarchy paths made into directories (none when there is nothing to do: it can
    be called again). A link that leads nowhere (its run deleted) or out of the run root is an
    error naming the node; the nodes done before it stay done, and ``reused.json`` says so.

    Each node's complete directory is made as ``.<name>.materialized``, then exchanged with the
    link in one atomic step (Linux's ``renameat2(RENAME_EXCHANGE)``), so a reader always finds
    the node, and the link, now under the hidden name, is removed. Where the exchange is not
    available it takes three renames: the link goes aside to ``.<name>.link``, the directory
    takes its name, the link is removed; between the first two a reader finds no node there.
    Readers skip hidden names, and a call after a crash finishes or undoes each swap it finds
    half done before anything else."""
    from reprise.run._directory import RunDirectory

    run_path = Path(run_path)
    run_id = run_path.name
    previous = RunDirectory(run_path).read_metadata().previous_run_id
    if previous is None:
        return []  # not a re-run: nothing was reused
    recorded = read_reused(run_path)
    readers = ReusedNodes(run_path, previous)
    done: list[str] = []
    linked = _linked_node_dirs(run_path, done)
    before = {text: (node.dir_run_id, node.origin_run_id) for text, node in (recorded or {}).items()}
    origins: dict[str, str] = {}  # of the nodes made here
    try:
        for text, node_dir in linked:
            if not readers.followable(node_dir):
                raise RunSetupError(f"cannot make {text} of {run_id} a directory: its link leads out of the run root")
            if not os.path.isdir(node_dir):
                raise RunSetupError(
                    f"cannot make {text} of {run_id} a directory: its link leads nowhere (was its run deleted?)",
                    run_id=run_id,
                )
            real = os.path.realpath(node_dir)
            old = _read(f"{real}/{RESULT_FILE}")
            entry = recorded.get(text) if recorded is not None else None
            origin = entry.origin_run_id if entry is not None else None
            data = json.loads(old)
            origin = origin or str(data.get("origin_run_id") or previous if data.get("reused") else previous)
            data.update(reused=True, reused_from=previous, origin_run_id=origin)
            result = dump_json(data)
            parent, name = os.path.split(node_dir)
            made, aside = f"{parent}/.{name}{_MADE}", f"{parent}/.{name}{_ASIDE}"
            for leftover in (made, aside):  # an attempt stopped before its first rename
                _remove(leftover)

            def links(directory: str, real: str = real) -> None:
                link_tree(real, directory, skip=_SKIP_RESULT)

            write_new_dir(made, [(RESULT_FILE, result)], fill=links)
            if exchange_paths(made, node_dir):
                os.unlink(made)  # the link, now under the hidden name
            else:
                os.rename(node_dir, aside)
                os.rename(made, node_dir)
                os.unlink(aside)
            done.append(text)
            origins[text] = origin
    finally:
        # What the directories say now, also when a node failed or this call was killed: a node
        # that is a directory is this run's (a later re-run links to it here), a link is not.
        where = dict(before)
        for text, (dir_run, origin) in before.items():
            if dir_run != run_id and _own_directory(run_path, text):
                where[text] = (run_id, origin)
        for text in done:
            if text not in where:
                where[text] = (run_id, origins.get(text) or _origin_in(run_path, text, previous))
        if where != before:
            groups: dict[tuple[str, str], list[str]] = {}
            for text, key in where.items():
                groups.setdefault(key, []).append(text)
            mode = "copy" if all(dir_run == run_id for dir_run, _ in where.values()) else "link"
            write_trace_file(run_path, REUSED_FILE, reused_document(previous, mode, groups))
    return done


def _own_directory(run_path: Path, text: str) -> bool:
    node_dir = run_path / HierarchyPath(text).relpath
    return node_dir.is_dir() and not node_dir.is_symlink()


def _origin_in(run_path: Path, text: str, previous: str) -> str:
    """The origin run a made node's ``result.json`` names (the previous run if it names none)."""
    try:
        data = json.loads(_read(f"{run_path}/{HierarchyPath(text).relpath}/{RESULT_FILE}"))
        return str(data.get("origin_run_id") or previous)
    except (OSError, ValueError, AttributeError):
        return previous


def _remove(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def _made_by_reprise(link: str, base: str, place: str | None = None) -> bool:
    """Whether the symbolic link ``link`` is one a re-run made for a reused node: ``../`` up out
    of the run, a run id, then the link's own place in the run (a link a node made among its
    files, even into an earlier run, is not one). ``place``: where the link belongs, if it was
    moved aside."""
    run = linked_run_id(link)
    if run is None:
        return False
    relpath = os.path.relpath(place or link, base).replace(os.sep, "/")
    return os.readlink(link) == link_text(relpath.count("/") + 1, run, relpath)


def _finish_swap(dirpath: str, name: str) -> str | None:
    """Finish or undo the swap of node ``name`` in ``dirpath`` that a killed
    :func:`materialize_reused` left (its hidden ``.<name>.link``, and maybe the complete
    ``.<name>.materialized``). Returns ``"made"`` when the directory took its place, ``"link"``
    when the link is back (to be made again), ``None`` when there was nothing to finish."""
    node, made, aside = f"{dirpath}/{name}", f"{dirpath}/.{name}{_MADE}", f"{dirpath}/.{name}{_ASIDE}"
    if os.path.lexists(node):  # the swap was done; only the link was left to remove
        _remove(aside)
        _remove(made)
        return None
    if os.path.isdir(made) and not os.path.islink(made):  # complete: write_new_dir renames into it
        os.rename(made, node)
        os.unlink(aside)
        return "made"
    os.rename(aside, node)
    return "link"


def _linked_node_dirs(run_path: Path, finished: list[str]) -> list[tuple[str, str]]:
    """``(hierarchy path, directory)`` of every reused node's link among the run's element
    directories (not in ``.trace``, ``static_inputs`` or hidden directories). Swaps a killed
    call left half done are finished first (their paths added to ``finished``) or undone."""
    found: list[tuple[str, str]] = []
    base = str(run_path)
    for dirpath, dirnames, filenames in os.walk(base):
        keep = []
        names = sorted([*dirnames, *filenames])
        for d in names:
            full = os.path.join(dirpath, d)
            if d.startswith(".") and d.endswith(_MADE) and len(d) > len(_MADE) + 1 and os.path.islink(full):
                # Exchanged, then killed before the link (under the hidden name) was removed.
                name = d[1 : -len(_MADE)]
                node = os.path.join(dirpath, name)
                if os.path.isdir(node) and not os.path.islink(node) and _made_by_reprise(full, base, node):
                    os.unlink(full)
                    finished.append(os.path.relpath(node, base).replace(os.sep, "."))
            if d.startswith(".") and d.endswith(_ASIDE) and len(d) > len(_ASIDE) + 1 and os.path.islink(full):
                name = d[1 : -len(_ASIDE)]
                if _made_by_reprise(full, base, os.path.join(dirpath, name)):
                    state = _finish_swap(dirpath, name)
                    text = os.path.relpath(os.path.join(dirpath, name), base).replace(os.sep, ".")
                    if state == "made":
                        finished.append(text)
                    elif state == "link" and name not in names:
                        found.append((text, os.path.join(dirpath, name)))
        for d in names:
            if d.startswith(".") or (dirpath == base and d == "static_inputs"):
                continue
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                # A link whose target is gone is listed with the files: look there too.
                if _made_by_reprise(full, base):
                    found.append((os.path.relpath(full, base).replace(os.sep, "."), full))
            elif os.path.isdir(full):
                keep.append(d)
        dirnames[:] = keep  # os.walk does not descend into links; nor should we
    return found
