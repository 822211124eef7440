"""FlowRunner and AgentRunner: run a definition under a RunContext.

::

    result = await FlowRunner(flow, RunContext(root_component_id="flow", project_root=".")).run()
    result.status, result.run_dir, result.outcomes["flow.summarize"]

``run()`` sets the run up if the caller has not, executes, completes the run (``completed``,
``failed`` or ``cancelled``) and returns a :class:`RunResult`. A failing node fails the run and
raises :class:`~reprise.errors.RunFailedError` carrying the node's path; a cancelled run
(Ctrl-C, an enclosing cancel scope) is recorded as ``cancelled`` and the cancellation goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from reprise.dsl._container import AgentDefinition, Container, FlowDefinition
from reprise.dsl._definition import DefinitionIndex, validate_definition
from reprise.errors import DefinitionError, RepriseError, RunFailedError
from reprise.run._context import RunContext
from reprise.run._current import enter_scope, exit_scope
from reprise.run._files import write_bytes_atomic
from reprise.run._status import RunStatus
from reprise.runners._executor import Executor
from reprise.runners._result import RunResult

if TYPE_CHECKING:
    from reprise.runners._reuse import ReusePlan

DEFINITION_FILE = "definition.json"

__all__ = ["AgentRunner", "ComponentRunner", "FlowRunner"]

C = TypeVar("C", bound=Container)


class ComponentRunner(Generic[C]):
    """Runs a flow or agent definition. The definition is checked when the runner is made."""

    component_class: type[Container] = Container

    def __init__(self, component: C, run_context: RunContext) -> None:
        if not isinstance(component, self.component_class):
            raise DefinitionError(
                f"{type(self).__name__} runs a {self.component_class.__name__}, got {type(component).__name__}"
            )
        self.component = component
        self.run_context = run_context
        self.index: DefinitionIndex = validate_definition(component, run_context.root_component_id)
        self.result: RunResult | None = None
        self._reuse: ReusePlan | None = None

    def setup_run(self, run_id_prefix: str | None = None) -> None:
        """Set up the run now (optional: :meth:`run` does it when needed). Re-run requests are
        checked here, before the run directory is made."""
        self._reuse = self._prepare()
        self.run_context.setup_run(run_id_prefix)
        self._record_setup()

    @property
    def _prepared(self) -> bool:
        return self.run_context.bound_index is self.index

    def _prepare(self) -> ReusePlan | None:
        ctx = self.run_context
        ctx.bind(self.index)
        if ctx.previous_run_id is None:
            return None
        from reprise.runners._reuse import ReusePlan

        return ReusePlan.prepare(ctx, self.index)

    def _record_setup(self) -> None:
        ctx = self.run_context
        run_dir = ctx.require_run_dir()
        ctx.save_static_inputs()
        write_bytes_atomic(run_dir.trace_dir / DEFINITION_FILE, self.index.outline_json())
        if self._reuse is not None:
            self._reuse.attach(ctx)

    async def run(self) -> RunResult:
        """Execute the definition; see the module docstring."""
        ctx = self.run_context
        if ctx.status is not None and ctx.status.finished:
            raise RepriseError(
                f"run {ctx.run_id} is already {ctx.status.value}; make a new RunContext", run_id=ctx.run_id
            )
        if not ctx.is_setup:
            self._reuse = self._prepare()
            ctx.setup_run()
            self._record_setup()
        elif not self._prepared:
            # The caller set the run up through the context itself.
            try:
                self._reuse = self._prepare()
                self._record_setup()
            except Exception as exc:
                # The run directory exists already: record that the run failed before raising.
                ctx.complete_run(RunStatus.FAILED, str(exc) or type(exc).__name__)
                raise
        executor = Executor(ctx, self.index, self._reuse)
        # reprise.log()/alert() called while the run executes write to this run.
        scope = enter_scope(ctx)
        try:
            outcome = await executor.run_root()
        except BaseException as exc:
            self._finish_after_error(executor, exc)
            raise self._error_to_raise(executor, exc) from exc
        finally:
            exit_scope(scope)
        ctx.complete_run(RunStatus.COMPLETED)
        self.result = self._result(executor, RunStatus.COMPLETED, outcome)
        return self.result

    def _finish_after_error(self, executor: Executor, exc: BaseException) -> None:
        ctx = self.run_context
        cancelled = isinstance(exc, (KeyboardInterrupt, anyio.get_cancelled_exc_class()))
        status = RunStatus.CANCELLED if cancelled else RunStatus.FAILED
        message = f"cancelled ({type(exc).__name__})" if cancelled else str(exc) or type(exc).__name__
        # Shielded: the run must be recorded even while an enclosing scope is cancelling us.
        with anyio.CancelScope(shield=True):
            try:
                ctx.complete_run(status, message)
            except Exception:
                # A completion hook failed (complete_run logged it and recorded the run): the
                # run's own failure or cancellation is what the caller must see.
                pass
        self.result = self._result(executor, status, None, error=message)

    def _error_to_raise(self, executor: Executor, exc: BaseException) -> BaseException:
        if isinstance(exc, (KeyboardInterrupt, anyio.get_cancelled_exc_class())):
            return exc
        run_id = self.run_context.run_id
        path = getattr(exc, "path", None) or executor.failed_path
        error = RunFailedError(
            f"run {run_id} failed: {exc.message if isinstance(exc, RepriseError) else exc}", path=path, run_id=run_id
        )
        error.result = self.result  # type: ignore[attr-defined]
        return error

    def _result(self, executor: Executor, status: RunStatus, outcome: Any, error: str | None = None) -> RunResult:
        ctx = self.run_context
        return RunResult(
            run_id=ctx.run_id,
            status=status,
            run_dir=ctx.require_run_dir().path,
            outcome=outcome,
            outcomes=executor.outcomes,
            executed=executor.counts["executed"],
            reused=executor.counts["reused"],
            failed_path=executor.failed_path,
            error=error,
            previous_run_id=ctx.previous_run_id,
            start_hierarchy_path=str(ctx.start_hierarchy_path) if ctx.start_hierarchy_path else None,
        )

    def run_sync(self, *, backend: str = "asyncio") -> RunResult:
        """Run from synchronous code (a script): ``FlowRunner(flow, ctx).run_sync()``."""
        return anyio.run(self.run, backend=backend)


class FlowRunner(ComponentRunner[FlowDefinition]):
    """Runs a :class:`FlowDefinition`."""

    component_class = FlowDefinition


class AgentRunner(ComponentRunner[AgentDefinition]):
    """Runs an :class:`AgentDefinition`."""

    component_class = AgentDefinition
