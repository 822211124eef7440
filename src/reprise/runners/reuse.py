"""The reuse-or-execute decision of a re-run.

A re-run names an earlier run and a start path. Every node that precedes the start path in
execution order, and completed in the earlier run, is *reused*: its outcome is loaded from the
earlier run, its files are hard-linked into the new run's directory, its ``result.json`` says
``"reused": true`` and names the run it came from, and its code is not called. The start
element and everything after it execute again. Composite elements are always evaluated again,
so conditions and loop items see the reused outcomes.

"Precedes" follows the definition: an earlier sibling in a flow or agent, an earlier loop
iteration (``loop.3`` precedes ``loop.7``), and - for a start path inside a parallel branch -
every *sibling* branch: they run concurrently and do not depend on the re-run branch, so they are
reused where they completed and executed where they did not.

Without a start path (``resume``), the start is the first element that did not complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprise.dsl.container import Container
from reprise.dsl.definition import DefinitionIndex, definition_path
from reprise.dsl.elements import ConditionalElement, ContainerElement, ForEachElement, NodeElement, ParallelElement
from reprise.dsl.node import Node
from reprise.dsl.paths import HierarchyPath
from reprise.errors import RepriseError, RerunError, RunSetupError
from reprise.run.directory import OUTCOME_FILE, RESULT_FILE
from reprise.run.files import dump_json, read_json, write_bytes_atomic
from reprise.run.outcome_repo import OutcomeFile
from reprise.run.previous import PreviousRun, link_tree

_SKIP_RESULT = frozenset({RESULT_FILE})

if TYPE_CHECKING:
    from reprise.run.context import RunContext

__all__ = ["ReusePlan", "find_resume_point"]


class ReusePlan:
    """Decides, node by node, whether a re-run reuses the earlier run's result."""

    def __init__(self, index: DefinitionIndex, previous: PreviousRun, start: HierarchyPath) -> None:
        self.index = index
        self.previous = previous
        self.start = start
        self._start_parts = start.parts
        #: True when the start path was found automatically (resume).
        self.resumed = False
        self._declared: list[OutcomeFile] = []
        self._previous_base = str(previous.dir.path)

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
        plan = cls(index, previous, start)
        plan.resumed = resumed
        plan._check_start(must_have_executed=not resumed)
        plan._check_definition()
        plan._carry_inputs(ctx)
        return plan

    def _check_start(self, *, must_have_executed: bool = True) -> None:
        start = self.start
        element = self.index.element(start)
        if start.root != self.index.root_id or element is None or not _index_segments_ok(start, self.index):
            near = self.index.suggest(str(start))
            hint = f"; nearest valid paths: {', '.join(near)}" if near else ""
            raise RerunError(f"start path {start} does not exist in the definition{hint}", path=str(start))
        # A resume point found automatically may be an element the earlier run never reached
        # (it was killed between two elements); one the user names must have run.
        if must_have_executed and not self.previous.executed(start):
            raise RerunError(
                f"start path {start} did not execute in run {self.previous.run_id} "
                "(a branch not taken, an iteration that did not happen, or the run stopped before it)",
                path=str(start),
            )

    def _check_definition(self) -> None:
        before = self.previous.definition()
        if before is None:
            return  # runs made before outlines were recorded: nothing to compare
        now = self.index.outline()
        start_parts = tuple(definition_path(self.start).split("."))
        problems: list[str] = []
        for path in sorted(set(before) | set(now)):
            parts = tuple(path.split("."))
            relevant = self._precedes(parts, start_parts) or start_parts[: len(parts)] == parts
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
        ctx.save_initial_inputs()
        ctx.annotate(resumed=self.resumed, start_hierarchy_path=str(self.start))

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
        parent = ".".join("*" if p.isdigit() else p for p in parts[:k])
        container = self.index.container_at(parent)
        a, b = parts[k], start[k]
        if container is not None:
            pa, pb = container.position(a), container.position(b)
            return pa is not None and pb is not None and pa < pb
        el = self.index.elements.get(parent)
        if isinstance(el, ForEachElement):
            return a.isdigit() and b.isdigit() and int(a) < int(b)
        if isinstance(el, ParallelElement):
            return True
        return False

    def reuse_node(self, path: HierarchyPath, node: Node, node_dir: str) -> tuple[Any, dict[str, Any]] | None:
        """Reuse the earlier result of the node at ``path`` if it precedes the start and
        completed; returns ``(outcome, result)`` or ``None`` to execute it.

        String paths and one directory scan per node: a re-run from the last node of a long
        chain does this for every node before it."""
        if not self._precedes(path.parts, self._start_parts):
            return None
        previous = self.previous
        old_dir = f"{self._previous_base}/{path.relpath}"
        try:
            old: dict[str, Any] = read_json(f"{old_dir}/{RESULT_FILE}")
        except FileNotFoundError:
            return None
        if old.get("status") != "completed":
            return None
        try:
            outcome = node.load_outcome(read_json(f"{old_dir}/{OUTCOME_FILE}"))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise RepriseError(
                f"cannot reuse the outcome from run {previous.run_id}: it no longer fits {node.name} ({exc})",
                path=str(path),
            ) from exc
        link_tree(old_dir, node_dir, skip=_SKIP_RESULT)
        result = dict(old)
        result["reused"] = True
        result["reused_from"] = previous.run_id
        # The run whose node actually executed, however many re-runs ago.
        result["origin_run_id"] = old.get("origin_run_id", previous.run_id) if old.get("reused") else previous.run_id
        if old.get("outcome_files"):
            self._carry_declared_files(old, Path(old_dir).resolve(), Path(node_dir), str(path))
        write_bytes_atomic(f"{node_dir}/{RESULT_FILE}", dump_json(result))
        return outcome, result

    def _carry_declared_files(self, old: dict[str, Any], old_dir: Path, node_dir: Path, node_path: str) -> None:
        for entry in old.get("outcome_files") or ():
            source = Path(entry["source"])
            if source.is_relative_to(old_dir):
                source = node_dir / source.relative_to(old_dir)
            self._declared.append(OutcomeFile(source, entry["repo_path"], node_path))


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


def find_resume_point(previous: PreviousRun, index: DefinitionIndex) -> HierarchyPath:
    """The first element, in execution order, that did not complete in ``previous``."""
    found = _first_incomplete(previous, index.root, HierarchyPath(index.root_id))
    if found is None:
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
