"""Run listeners: a run's side effects plug into its lifecycle, after Burr's lifecycle hooks.

The executor and :class:`~reprise.run.RunContext` say *what happens* (a run started, an element
started or finished, the run finished); listeners decide what to do about it: write the
journal, record outcomes for the commit and for re-runs, trace, commit to git. So neither
names a file format, a span encoding or git. Each side effect is a listener in the layer that
owns it (telemetry in ``observability``, the journal and the outcome commit in ``run``), and
the runner wires them. A listener implements any of the four small Protocols below, each one
method with keyword-only arguments.

Order: listeners are called in the order they were added, in three rings. An *outer* listener
(the run's telemetry) wraps the others: told before them when the run starts and after them
when it ends, so their errors reach the run's log and the trace is complete when the run is
recorded. An *inner* one (the runner's journal and outcome ledger) is told first when the run
ends, so what it writes exists before any completion hook or the commit runs (a process killed
in a hook leaves a run that a resume completes). When a
run finishes every :class:`RunFinished` listener is called even if an earlier one raised; the
first error is raised after the run is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from reprise.run._context import RunContext
    from reprise.run._status import ElementStatus, RunStatus

__all__ = [
    "CompletionHook",
    "ElementFinished",
    "ElementStarted",
    "RunFinished",
    "RunListeners",
    "RunStarted",
]


@runtime_checkable
class RunStarted(Protocol):
    """Told once the run directory and its first record exist."""

    def run_started(self, *, run: RunContext) -> None: ...


@runtime_checkable
class ElementStarted(Protocol):
    """Told when a node starts executing, with its input as JSON data."""

    def element_started(self, *, path: str, started_at: str, input: Any) -> None: ...


@runtime_checkable
class ElementFinished(Protocol):
    """Told when a node ends: executed (``outcome_json`` when it completed) or ``reused`` from
    an earlier run. ``declares_files``: it declared files as outcomes."""

    def element_finished(
        self,
        *,
        path: str,
        status: ElementStatus,
        outcome_json: bytes | None,
        reused: bool = False,
        declares_files: bool = False,
    ) -> None: ...


@runtime_checkable
class RunFinished(Protocol):
    """Told once when the run ends, before its final record is written."""

    def run_finished(self, *, run: RunContext, status: RunStatus, error_msg: str | None) -> None: ...


#: The older form of a :class:`RunFinished` listener: ``hook(context, status)``.
CompletionHook = Callable[["RunContext", "RunStatus"], None]


class _Hook:
    """A completion hook as a :class:`RunFinished` listener (named as the function is)."""

    __slots__ = ("fn",)

    def __init__(self, fn: CompletionHook) -> None:
        self.fn = fn

    def run_finished(self, *, run: RunContext, status: RunStatus, error_msg: str | None) -> None:
        self.fn(run, status)

    def __repr__(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


def listener_name(listener: object) -> str:
    """How a listener is named in logs and in ``completion_hook_error``."""
    if isinstance(listener, _Hook):
        return repr(listener)
    return getattr(listener, "__qualname__", None) or type(listener).__qualname__


class RunListeners:
    """The listeners of one run, sorted by what they listen to, and the calls that tell them."""

    __slots__ = (
        "element_finished_listeners",
        "element_started_listeners",
        "finished",
        "inner_finished",
        "outer_finished",
        "outer_started",
        "started",
    )

    def __init__(self, listeners: Iterable[object] = ()) -> None:
        self.started: list[RunStarted] = []
        self.element_started_listeners: list[ElementStarted] = []
        self.element_finished_listeners: list[ElementFinished] = []
        self.finished: list[RunFinished] = []
        self.inner_finished: list[RunFinished] = []
        self.outer_started: list[RunStarted] = []
        self.outer_finished: list[RunFinished] = []
        for listener in listeners:
            self.add(listener)

    def __bool__(self) -> bool:
        return bool(
            self.started
            or self.element_started_listeners
            or self.element_finished_listeners
            or self.finished
            or self.inner_finished
            or self.outer_started
            or self.outer_finished
        )

    def add(self, listener: object, *, outer: bool = False, inner: bool = False) -> None:
        """Add ``listener`` (any of the four Protocols, or a plain ``hook(context, status)``
        told when the run finishes). ``outer``, ``inner``: its ring (see the module)."""
        if not isinstance(listener, (RunStarted, ElementStarted, ElementFinished, RunFinished)):
            if not callable(listener):
                raise TypeError(f"{listener!r} implements no run listener protocol")
            listener = _Hook(listener)
        if isinstance(listener, RunStarted):
            (self.outer_started if outer else self.started).append(listener)
        if isinstance(listener, ElementStarted):
            self.element_started_listeners.append(listener)
        if isinstance(listener, ElementFinished):
            self.element_finished_listeners.append(listener)
        if isinstance(listener, RunFinished):
            (self.outer_finished if outer else self.inner_finished if inner else self.finished).append(listener)

    def run_started(self, run: RunContext) -> None:
        """Tell every :class:`RunStarted` listener, outer ones first; an error stops the run."""
        for listener in (*self.outer_started, *self.started):
            listener.run_started(run=run)

    def element_started(self, path: str, started_at: str, input: Any) -> None:
        for listener in self.element_started_listeners:
            listener.element_started(path=path, started_at=started_at, input=input)

    def element_finished(
        self,
        path: str,
        status: ElementStatus,
        outcome_json: bytes | None,
        *,
        reused: bool = False,
        declares_files: bool = False,
    ) -> None:
        for listener in self.element_finished_listeners:
            listener.element_finished(
                path=path, status=status, outcome_json=outcome_json, reused=reused, declares_files=declares_files
            )

    def run_finished(
        self,
        run: RunContext,
        status: RunStatus,
        error_msg: str | None,
        on_error: Callable[[str, Exception], None],
    ) -> Exception | None:
        """Tell every :class:`RunFinished` listener, outer ones last, whatever an earlier one did
        (a user's hook that raises must not cost the run its commit); ``on_error(name, exc)`` for
        each failure. Returns the first error. An interruption (``KeyboardInterrupt``, a
        cancellation) stops the listeners after it but the outer ones, which close the trace,
        and is raised then."""
        first: Exception | None = None
        try:
            for listener in (*self.inner_finished, *self.finished):
                try:
                    listener.run_finished(run=run, status=status, error_msg=error_msg)
                except Exception as exc:
                    first = first or exc
                    on_error(listener_name(listener), exc)
        finally:
            for outer in reversed(self.outer_finished):
                try:
                    outer.run_finished(run=run, status=status, error_msg=error_msg)
                except Exception as exc:
                    first = first or exc
                    on_error(listener_name(outer), exc)
        return first
