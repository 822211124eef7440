"""Which run (or node) is current in this task: where ``reprise.log``/``reprise.alert`` write
when no run is passed.

Set by the runner for a run's duration, by the executor around each node and by
``with RunContext(...)``; task groups and worker threads inherit it, so parallel branches and
sync nodes see the right run, and two runs in one process never see each other's.

Below it lies the run of the process, set by ``reprise.init()`` for a script that is not a flow:
the current run wherever no run or node is current in the task (any thread of the script).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from reprise.run._context import RunContext
    from reprise.runners._node_context import ExecutorNodeContext

    RunScope: TypeAlias = RunContext | ExecutorNodeContext

__all__ = ["current_scope", "enter_scope", "exit_scope", "running_in", "set_process_scope"]

_CURRENT: ContextVar[RunScope | None] = ContextVar("reprise_current_run", default=None)
_PROCESS: list[RunContext | None] = [None]


def current_scope() -> RunScope | None:
    """The current run or node of the task, else the run of the process, else ``None``."""
    return _CURRENT.get() or _PROCESS[0]


def set_process_scope(run: RunContext | None) -> None:
    """Make ``run`` the run of the process (``None``: no longer any)."""
    _PROCESS[0] = run


@contextmanager
def running_in(scope: RunScope) -> Iterator[None]:
    """Make ``scope`` the current run (or node) inside the ``with`` block."""
    token = _CURRENT.set(scope)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def enter_scope(scope: RunScope) -> Token[RunScope | None]:
    """Make ``scope`` current until :func:`exit_scope` with the returned token (for code that
    cannot use a ``with`` block, such as ``RunContext.__enter__``)."""
    return _CURRENT.set(scope)


def exit_scope(token: Token[RunScope | None]) -> None:
    """Undo :func:`enter_scope`. A token from another context (a ``with RunContext`` entered in
    one task and left in another) is ignored rather than raising in the user's exit path."""
    try:
        _CURRENT.reset(token)
    except ValueError:
        pass
