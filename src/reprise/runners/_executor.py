"""The executor: walks a validated component tree on anyio and persists every node.

For each element, in order: reuse (a re-run's elements before its start path), input
(static input, else bindings), execute (span, timeout, retries), persist (``input.json``,
``outcome.json``, ``result.json``, each atomic). Containers run their children in order;
parallel blocks and concurrent loops run in task groups, where the first failure cancels the
rest.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import ChainMap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ValidationError

from reprise.dsl._container import Container
from reprise.dsl._definition import DefinitionIndex
from reprise.dsl._elements import (
    ConditionalElement,
    ContainerElement,
    Element,
    ForEachElement,
    NodeElement,
    ParallelElement,
)
from reprise.dsl._node import NodeSettings, validation_summary
from reprise.dsl._paths import HierarchyPath
from reprise.dsl._sources import Source, resolve_value
from reprise.errors import NodeExecutionError, NodeInputError, RepriseError, TemplateError
from reprise.run._current import enter_scope, exit_scope
from reprise.run._directory import INPUT_FILE, OUTCOME_FILE, RESULT_FILE, RunDirectory
from reprise.run._files import dump_json, json_problem, write_bytes_atomic, write_new_dir
from reprise.run._journal import NodeJournal
from reprise.run._reused import OUTCOMES_FILE, outcomes_document, write_trace_file
from reprise.run._status import ElementStatus
from reprise.runners._frame import Frame
from reprise.runners._node_context import ExecutorNodeContext

if TYPE_CHECKING:
    from reprise.run._context import RunContext
    from reprise.runners._reuse import ReusePlan

__all__ = ["Executor"]

_CANCELLED = anyio.get_cancelled_exc_class


# Outcomes kept in memory for ``.trace/outcomes.json``: each at most this big, this much in all.
_KEEP_OUTCOME_BYTES = 4096
_KEEP_OUTCOMES_TOTAL = 16 * 1024 * 1024

_SECOND: tuple[int, str] = (-1, "")


def _iso(ts: float) -> str:
    """``ts`` as ISO 8601 UTC with microseconds (``2026-11-21T21:49:20.979502Z``). The part up to
    the second is formatted once per second: this runs twice per element."""
    global _SECOND
    sec = int(ts)
    last = _SECOND  # one read: another thread may replace it meanwhile
    if last[0] != sec:
        last = _SECOND = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{last[1]}.{int((ts - sec) * 1_000_000):06d}Z"


def _retry_delay(settings: NodeSettings, attempt: int, failure: BaseException) -> float:
    """Seconds to wait before ``attempt``: the node's backoff, or longer when the failure says
    how long to wait (a model server's ``Retry-After``: ``retry_after`` on the error or its
    cause), never more than the node's ``max_backoff``."""
    delay = settings.delay_before(attempt)
    for exc in (failure, failure.__cause__):
        hint = getattr(exc, "retry_after", None)
        if isinstance(hint, (int, float)) and not isinstance(hint, bool) and hint > delay:
            return float(min(hint, settings.max_backoff))
    return delay


def _check_value(value: Any, what: str, path: HierarchyPath, error: type[RepriseError]) -> None:
    """Refuse a node's input or outcome that its JSON file cannot hold as it is (a NaN or
    infinite float, at any depth): written, it would be a bare ``NaN`` (not JSON) or ``null``,
    and a re-run reusing the node would read something else than the node had. Encoding the
    rest is the node's types' job: a value they cannot encode fails there."""
    problem = json_problem(value, objects=False)
    if problem is not None:
        where, why = problem
        raise error(f"{what}{where}: {why} (use None or a string instead)", path=str(path))


def _error_info(exc: BaseException) -> dict[str, Any]:
    cause = exc.__cause__ if isinstance(exc, NodeExecutionError) and exc.__cause__ is not None else exc
    # A bare cause (a TimeoutError says nothing) gets the message of the error that wraps it.
    message = str(cause) or (exc.message if isinstance(exc, RepriseError) else str(exc))
    return {
        "type": type(cause).__name__,
        "message": message,
        "traceback": "".join(traceback.format_exception(cause)),
    }


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a task group: the first that is not a cancellation."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, _CANCELLED()):
            return exc
    return group.exceptions[0]


class Executor:
    """Runs one validated tree inside one set-up :class:`RunContext`."""

    def __init__(self, ctx: RunContext, index: DefinitionIndex, reuse: ReusePlan | None = None) -> None:
        self.ctx = ctx
        self.index = index
        self.run_dir: RunDirectory = ctx.require_run_dir()
        self.tel = ctx.telemetry
        self.reuse = reuse
        #: Outcomes of elements outside loop iterations, by hierarchy path.
        self.outcomes: dict[str, Any] = {}
        self.counts: dict[str, int] = {"executed": 0, "reused": 0, "failed": 0}
        self.failed_path: str | None = None
        self._base = str(self.run_dir.path)
        self._journal: NodeJournal | None = None  # open while run_root runs
        #: Nodes whose ``outcome.json`` this run holds, in the order they finished: what the
        #: outcome repository commits (no walk over the run directory at the end).
        if ctx.outcome_paths is None:
            ctx.outcome_paths = []
        self._outcome_paths: list[str] = ctx.outcome_paths
        self._kept_bytes = 0
        #: Nodes that completed with a directory of their own and declared outcome files (with
        #: the run's executed outcomes, its ``.trace/outcomes.json``).
        self._declared_nodes: list[str] = []

    async def run_root(self) -> Any:
        """Execute the root component; returns its outcome."""
        root = self.index.root
        top = Frame(None, self.ctx.initial_inputs)
        path = HierarchyPath(self.index.root_id)
        frame = top.child(path.name)
        root_span = self.tel.root_span if self.tel is not None else None
        self._journal = journal = NodeJournal(self.run_dir.trace_dir)
        try:
            return await self._container_element(
                root, path, path.name, frame, root.component_type, root_span, in_loop=False
            )
        finally:
            journal.close()
            self._write_records()

    def _write_records(self) -> None:
        """Write what later re-runs and readers use instead of reading every node's files:
        ``.trace/reused.json`` (a re-run) and then ``.trace/outcomes.json``. A failure to write
        them costs those readers time (they read the node files), not the run: it is logged."""
        try:
            if self.reuse is not None:
                self.reuse.write_record()
            # The nodes that completed with a directory of their own: those the run holds an
            # outcome of, but did not reuse.
            reused = self.ctx.reused_outcome_paths
            held = [p for p in self._outcome_paths if p not in reused] if reused else self._outcome_paths
            declared = self._declared_nodes
            outcome_bytes: Mapping[str, bytes] = self.ctx.outcome_bytes
            if self.reuse is not None and self.reuse.copied:
                held = held + self.reuse.copied
                declared = declared + self.reuse.copied_declared
                outcome_bytes = ChainMap(self.ctx.outcome_bytes, self.reuse.copied_bytes)
            write_trace_file(self._base, OUTCOMES_FILE, outcomes_document(held, outcome_bytes, declared))
        except OSError as exc:
            if self.tel is not None:
                self.tel.logger.warning("could not record the run's outcomes for re-runs", error=str(exc))

    # -- containers ------------------------------------------------------------------------
    async def _run_body(
        self, body: Container, path: HierarchyPath, dpath: str, frame: Frame, span: Any, in_loop: bool
    ) -> Any:
        last: Any = None
        elements = body.elements
        reuse = self.reuse
        # A link-mode re-run reuses the leading nodes that precede its start in one go.
        leading = reuse.leading(path.parts, body) if reuse is not None and reuse.links else 0
        i = 0
        while i < len(elements):
            el = elements[i]
            if i < leading and isinstance(el, NodeElement):
                done = self._reuse_nodes(elements, i, leading, path, frame, span, in_loop)
                if done > i:
                    last = frame.outcomes[elements[done - 1].id]
                    i = done
                    continue
            last = await self._element(el, path.child(el.id), f"{dpath}.{el.id}", frame, span, in_loop)
            frame.outcomes[el.id] = last
            if not in_loop:
                self.outcomes[f"{path}.{el.id}"] = last
            i += 1
        return last

    def _reuse_nodes(
        self,
        elements: Sequence[Element],
        i: int,
        end: int,
        path: HierarchyPath,
        frame: Frame,
        span: Any,
        in_loop: bool,
    ) -> int:
        """Reuse, as links, the nodes ``elements[i:end]`` of the body at ``path`` (which all
        precede the start) up to the first composite or the first that did not complete in the
        earlier run; returns the index after the last one reused. Strings and plain lists only:
        no hierarchy path, coroutine or result record per node, and their spans written at
        once."""
        plan = self.reuse
        assert plan is not None
        prefix = str(path)
        rel = path.relpath
        depth = len(path.parts) + 1
        outcomes = frame.outcomes
        run_outcomes = None if in_loop else self.outcomes
        done: list[tuple[str, str, str]] = []
        j = i
        try:
            while j < end:
                el = elements[j]
                if not isinstance(el, NodeElement):
                    break
                text = f"{prefix}.{el.id}"
                got = plan.reuse_linked(text, f"{rel}/{el.id}", depth, el.node)
                if got is None:
                    break
                outcome = got[0]
                outcomes[el.id] = outcome
                if run_outcomes is not None:
                    run_outcomes[text] = outcome
                done.append((text, el.node.kind, got[1].origin_run_id))
                j += 1
        finally:
            if done:
                texts = [d[0] for d in done]
                self.counts["reused"] += len(done)
                self._outcome_paths.extend(texts)
                self.ctx.reused_outcome_paths.update(texts)
                if self.tel is not None:
                    self.tel.reused_nodes(span, plan.previous.run_id, done)
        return j

    async def _element(
        self, el: Element, path: HierarchyPath, dpath: str, frame: Frame, parent_span: Any, in_loop: bool
    ) -> Any:
        if isinstance(el, NodeElement):
            return await self._node(el, path, dpath, frame, parent_span)
        if isinstance(el, ContainerElement):
            return await self._container_element(
                el.body, path, dpath, frame.child(el.id), el.kind, parent_span, in_loop
            )
        if isinstance(el, ConditionalElement):
            return await self._conditional(el, path, dpath, frame, parent_span, in_loop)
        if isinstance(el, ForEachElement):
            return await self._for_each(el, path, dpath, frame, parent_span)
        if isinstance(el, ParallelElement):
            return await self._parallel(el, path, dpath, frame, parent_span, in_loop)
        raise TypeError(f"unknown element {el!r}")  # pragma: no cover

    async def _composite(
        self,
        path: HierarchyPath,
        element_type: str,
        parent_span: Any,
        body: Any,
        extra: dict[str, Any] | None = None,
    ) -> Any:
        """Run ``body(span)`` as a composite element: span, result.json, status on failure."""
        started = time.time()
        t0 = time.perf_counter()
        tel = self.tel
        span = tel.start_span(path, element_type, parent_span) if tel is not None else None
        info: dict[str, Any] = dict(extra or {})
        status = ElementStatus.FAILED
        # Made now, so the directories of its children go straight in (no failed mkdir first).
        directory = self._element_dir(path)
        try:
            outcome = await body(span, info)
            status = ElementStatus.COMPLETED
            return outcome
        except _CANCELLED():
            status = ElementStatus.CANCELLED
            raise
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                status = ElementStatus.CANCELLED
            raise
        finally:
            result = {
                "path": str(path),
                "element_type": element_type,
                "status": status.value,
                "started_at": _iso(started),
                "ended_at": _iso(time.time()),
                "duration_s": round(time.perf_counter() - t0, 6),
                **info,
            }
            write_bytes_atomic(f"{directory}/{RESULT_FILE}", dump_json(result))
            if span is not None and tel is not None:
                tel.end_span(span, status.value, None)

    def _element_dir(self, path: HierarchyPath) -> str:
        """Create (if needed) and return the element's directory, as a string: pathlib costs
        several microseconds per operation on the per-node hot path."""
        directory = f"{self._base}/{path.relpath}"
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
        return directory

    async def _container_element(
        self, body: Container, path: HierarchyPath, dpath: str, frame: Frame, kind: str, parent_span: Any, in_loop: bool
    ) -> Any:
        async def run(span: Any, info: dict[str, Any]) -> Any:
            return await self._run_body(body, path, dpath, frame, span, in_loop)

        return await self._composite(path, kind, parent_span, run)

    async def _conditional(
        self, el: ConditionalElement, path: HierarchyPath, dpath: str, frame: Frame, parent_span: Any, in_loop: bool
    ) -> Any:
        async def run(span: Any, info: dict[str, Any]) -> Any:
            value = self._resolve(el.condition, frame, path, "condition")
            taken = "then" if value else "else"
            info["branch"] = taken
            info["condition"] = bool(value)
            body = el.then_body if value else el.else_body
            if body is None:
                return None
            bpath = path.child(taken)
            return await self._run_body(body, bpath, f"{dpath}.{taken}", frame.child(el.id, keep=False), span, True)

        return await self._composite(path, "conditional", parent_span, run)

    async def _for_each(
        self, el: ForEachElement, path: HierarchyPath, dpath: str, frame: Frame, parent_span: Any
    ) -> Any:
        async def run(span: Any, info: dict[str, Any]) -> Any:
            items = self._resolve(el.items, frame, path, "items")
            if isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__iter__"):
                raise NodeInputError(f"loop items must be a list, got {type(items).__name__}", path=str(path))
            items = list(items)
            limit = el.max_iterations or len(items)
            if len(items) > limit:
                raise NodeInputError(f"loop has {len(items)} items, more than max_iterations={limit}", path=str(path))
            info["iterations"] = len(items)
            # Known before any iteration starts: a resume after a crash inside the loop needs it.
            write_bytes_atomic(
                f"{self._element_dir(path)}/{RESULT_FILE}",
                dump_json({"path": str(path), "element_type": "loop", "status": "running", **info}),
            )
            results: list[Any] = [None] * len(items)
            body_dpath = f"{dpath}.*"
            tel = self.tel

            async def iteration(i: int) -> None:
                ipath = path.child(i)
                self._element_dir(ipath)  # the iteration's level, for its nodes' directories
                iframe = frame.child(el.id, {el.item_var: items[i], el.index_var: i}, keep=False)
                ispan = tel.start_span(ipath, "iteration", span) if tel is not None else None
                status = "failed"
                try:
                    results[i] = await self._run_body(el.body, ipath, body_dpath, iframe, ispan, True)
                    status = "completed"
                except _CANCELLED():
                    status = "cancelled"
                    raise
                finally:
                    if ispan is not None and tel is not None:
                        tel.end_span(ispan, status, None)

            if el.max_concurrency <= 1 or len(items) <= 1:
                for i in range(len(items)):
                    await iteration(i)
            else:
                await self._gather([lambda i=i: iteration(i) for i in range(len(items))], el.max_concurrency)
            return results

        return await self._composite(path, "loop", parent_span, run)

    async def _parallel(
        self, el: ParallelElement, path: HierarchyPath, dpath: str, frame: Frame, parent_span: Any, in_loop: bool
    ) -> Any:
        pframe = frame.child(el.id)

        async def run(span: Any, info: dict[str, Any]) -> Any:
            outcomes: dict[str, Any] = {}

            def branch(bid: str, body: Container) -> Any:
                async def go() -> None:
                    bframe = pframe.child(bid)
                    bpath = path.child(bid)

                    async def inner(bspan: Any, binfo: dict[str, Any]) -> Any:
                        return await self._run_body(body, bpath, f"{dpath}.{bid}", bframe, bspan, in_loop)

                    outcomes[bid] = await self._composite(bpath, "branch", span, inner)
                    pframe.outcomes[bid] = outcomes[bid]

                return go

            try:
                await self._gather([branch(b, body) for b, body in el.branches.items()], len(el.branches))
            finally:
                info["branches"] = {
                    b: (
                        "completed" if b in outcomes else "failed" if self._failed_under(path.child(b)) else "cancelled"
                    )
                    for b in el.branches
                }
            return {b: outcomes[b] for b in el.branches}

        return await self._composite(path, "parallel", parent_span, run)

    def _failed_under(self, path: HierarchyPath) -> bool:
        return self.failed_path is not None and self.failed_path.startswith(f"{path}.")

    async def _gather(self, jobs: list[Any], limit: int) -> None:
        """Run ``jobs`` (async callables) with at most ``limit`` at once; the first failure
        cancels the others and is re-raised as itself (not as an exception group)."""
        limiter = anyio.CapacityLimiter(limit) if limit < len(jobs) else None

        async def guarded(job: Any) -> None:
            if limiter is None:
                await job()
            else:
                async with limiter:
                    await job()

        try:
            async with anyio.create_task_group() as tg:
                for job in jobs:
                    tg.start_soon(guarded, job)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    # -- nodes -----------------------------------------------------------------------------
    def _resolve(self, value: Any, frame: Frame, path: HierarchyPath, what: str) -> Any:
        try:
            return resolve_value(value, frame)
        except TemplateError as exc:
            # Stays a TemplateError (with its expression); it only lacks the element's path.
            raise TemplateError(f"{what}: {exc.message}", path=str(path), expression=exc.expression) from exc.__cause__
        except RepriseError as exc:
            raise NodeInputError(f"{what}: {exc.message}", path=str(path)) from None
        except Exception as exc:
            raise NodeInputError(f"{what}: {type(exc).__name__}: {exc}", path=str(path)) from exc

    async def _build_input(self, el: NodeElement, dpath: str, frame: Frame, path: HierarchyPath) -> BaseModel | None:
        static = self.ctx.static_input(dpath)
        if static is not None:
            return static
        model = el.node.input_model
        if model is None:
            return None
        bindings = el.inputs
        if bindings is None:
            data: Any = {}
        elif isinstance(bindings, Source):
            data = self._resolve(bindings, frame, path, "input")
        else:
            data = {k: self._resolve(v, frame, path, f"input {k!r}") for k, v in bindings.items()}
        if el.node.input_required:
            # The node asks for its input (a person, through the run's input handler).
            from reprise.nodes._human_input import request_input

            tel = self.ctx.telemetry
            data = await request_input(
                self.ctx.input_handler_for(dpath),
                el.node,
                path,
                dpath,
                data,
                frame,
                run_id=self.ctx.run_id,
                logger=tel.logger if tel is not None else None,
            )
        try:
            if isinstance(data, model):
                return data
            if isinstance(data, BaseModel):
                data = data.model_dump()
            return model.model_validate(data)
        except ValidationError as exc:
            raise NodeInputError(
                f"input does not validate against {model.__name__}: {validation_summary(exc)}", path=str(path)
            ) from None

    async def _run_in_span(
        self, node: Any, inp: Any, nctx: ExecutorNodeContext, span: Any, timeout: float | None
    ) -> Any:
        """Run the node with its span as the current OpenTelemetry span, so spans that libraries
        open with a tracer of their own nest under it."""
        from opentelemetry import trace as trace_api

        with trace_api.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            if timeout is None:
                return await node.run(inp, nctx)
            with anyio.fail_after(timeout):
                return await node.run(inp, nctx)

    async def _node(self, el: NodeElement, path: HierarchyPath, dpath: str, frame: Frame, parent_span: Any) -> Any:
        # Not created here: a node that never asks for its directory gets it written in one go
        # when it finishes (see the end of this method).
        node_dir = f"{self._base}/{path.relpath}"
        node = el.node
        tel = self.tel

        if self.reuse is not None:
            reused = self.reuse.reuse_node(path, node, node_dir)
            if reused is not None:
                self.counts["reused"] += 1
                text = str(path)
                self._outcome_paths.append(text)
                self.ctx.reused_outcome_paths.add(text)
                if tel is not None:
                    tel.reused_node(path, node.kind, parent_span, reused[1])
                return reused[0]

        started_at = _iso(time.time())
        t0 = time.perf_counter()
        span = tel.start_span(path, "node", parent_span, node.kind) if tel is not None else None
        settings = node.settings
        attempts = 0
        status = ElementStatus.FAILED
        error: BaseException | None = None
        outcome: Any = None
        nctx: ExecutorNodeContext | None = None
        scope: Any = None
        input_json: bytes | None = None
        outcome_json: bytes | None = None
        try:
            inp = await self._build_input(el, dpath, frame, path)
            _check_value(inp, "input", path, NodeInputError)
            input_data = inp.model_dump(mode="json") if inp is not None else None
            input_json = dump_json(input_data)
            if self._journal is not None:
                self._journal.started(str(path), started_at, input_data)
            nctx = ExecutorNodeContext(path, self.ctx, node_dir, span, frame, input_json)
            scope = enter_scope(nctx)  # reprise.log()/alert() called by the node name this node
            max_attempts = settings.retries + 1
            while True:
                attempts += 1
                nctx.attempt = attempts
                try:
                    if span is not None:
                        raw = await self._run_in_span(node, inp, nctx, span, settings.timeout)
                    elif settings.timeout is not None:
                        with anyio.fail_after(settings.timeout):
                            raw = await node.run(inp, nctx)
                    else:
                        raw = await node.run(inp, nctx)
                    try:
                        outcome = node.validate_outcome(raw)
                    except ValidationError as exc:
                        raise NodeExecutionError(
                            f"outcome does not validate: {validation_summary(exc)}", path=str(path)
                        ) from exc
                    _check_value(outcome, "outcome", path, NodeExecutionError)
                    break
                except TimeoutError as exc:
                    if settings.timeout is None:
                        failure: BaseException = exc  # the node's own code timed out at something
                    else:
                        failure = NodeExecutionError(
                            f"timed out after {settings.timeout}s (attempt {attempts})", path=str(path)
                        )
                        failure.__cause__ = exc
                except NodeExecutionError as exc:
                    failure = exc
                except Exception as exc:
                    failure = exc
                retryable = attempts < max_attempts and isinstance(
                    failure.__cause__ if isinstance(failure, NodeExecutionError) and failure.__cause__ else failure,
                    settings.retry_on,
                )
                if not retryable:
                    raise failure
                if tel is not None:
                    tel.retry(path, node.kind, attempts, failure, span)
                await anyio.sleep(_retry_delay(settings, attempts + 1, failure))
            outcome_json = dump_json(node.dump_outcome(outcome))
            status = ElementStatus.COMPLETED
            self.counts["executed"] += 1
            return outcome
        except _CANCELLED():
            status = ElementStatus.CANCELLED
            raise
        except KeyboardInterrupt:
            status = ElementStatus.CANCELLED
            raise
        except BaseException as exc:
            error = exc
            self.counts["failed"] += 1
            if self.failed_path is None:
                self.failed_path = str(path)
            if isinstance(exc, RepriseError):
                if exc.path is None:
                    exc.path = str(path)
                raise
            raise NodeExecutionError(f"{type(exc).__name__}: {exc}", path=str(path)) from exc
        finally:
            if scope is not None:
                exit_scope(scope)
            duration = time.perf_counter() - t0
            record: dict[str, Any] = {
                "path": str(path),
                "element_type": "node",
                "node_kind": node.kind,
                "node": node.name,
                "status": status.value,
                "started_at": started_at,
                "ended_at": _iso(time.time()),
                "duration_s": round(duration, 6),
                "attempts": attempts,
                "reused": False,
            }
            if error is not None:
                record["error"] = _error_info(error)
            if nctx is not None and nctx.result_fields:
                record.update(nctx.result_fields)
                if outcome_json is not None and "outcome_files" in nctx.result_fields:
                    self._declared_nodes.append(str(path))
            files = [] if input_json is None else [(INPUT_FILE, input_json)]
            if outcome_json is not None:
                files.append((OUTCOME_FILE, outcome_json))
                text = str(path)
                self._outcome_paths.append(text)
                # Kept for outcomes.json, so it need not read the file back; only small ones,
                # and a bounded total: a long loop must not hold every outcome twice.
                if len(outcome_json) <= _KEEP_OUTCOME_BYTES and self._kept_bytes < _KEEP_OUTCOMES_TOTAL:
                    self.ctx.outcome_bytes[text] = outcome_json
                    self._kept_bytes += len(outcome_json)
            files.append((RESULT_FILE, dump_json(record)))
            if nctx is not None and nctx.dir_made:
                for name, data in files[1:]:  # input.json was written with the directory
                    write_bytes_atomic(f"{node_dir}/{name}", data)
            else:
                write_new_dir(node_dir, files)
            if tel is not None:
                tel.node_finished(path, node.kind, status.value, duration, attempts)
                if span is not None:
                    tel.end_span(span, status.value, error, attempts=attempts)
