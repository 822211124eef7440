"""Where an experiment's items execute: the interface every executor implements.

An executor opens a *session* for one experiment (a pool of worker processes, a Dask client,
or nothing at all) and runs items through it. The experiment decides how many items run at
once (``max_concurrency``); a session runs what it is given and reports each item's result
exactly once, even when the experiment is being cancelled::

    async with executor.session(options) as session:
        await session.run(job, report)    # calls `await report(result)` once, then returns
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprise.experiments._item import ItemJob, ItemResult

__all__ = ["ExecutorSession", "ItemExecutor", "Report", "SessionOptions"]

#: Receives one item's result (the experiment appends its line, updates progress, ...).
Report = Callable[[ItemResult], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOptions:
    """What an executor session needs to know about the experiment."""

    max_concurrency: int
    #: Where worker processes write their stderr (tracebacks, faulthandler dumps, prints).
    log_path: Path
    #: The experiment's anyio backend; worker processes use the same one.
    backend: str = "asyncio"


class ExecutorSession(ABC):
    """Runs items for one experiment."""

    @abstractmethod
    async def run(self, job: ItemJob, report: Report) -> None:
        """Run ``job`` and ``await report(result)`` exactly once.

        An item that fails, times out or crashes is reported, never raised. If the experiment
        is cancelled while the item runs, the item is stopped, reported as ``cancelled``
        (inside a shielded scope) and the cancellation propagates."""


class ItemExecutor(ABC):
    """An executor: opens sessions. See :class:`~reprise.experiments._local.LocalExecutor` and
    :class:`~reprise.experiments._dask_executor.DaskExecutor`."""

    #: Whether workers commit each run's outcomes to git themselves. ``False``: the client
    #: commits (runs executed elsewhere reach the client's outcome repository only that way).
    workers_commit: bool = True
    #: Whether workers send run directories back (:attr:`ItemResult.payload`).
    ships_run_dirs: bool = False

    @abstractmethod
    def session(self, options: SessionOptions) -> AbstractAsyncContextManager[ExecutorSession]:
        """Open a session for one experiment."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The executor's settings for ``config.yaml`` (no secrets)."""

    def client_run_root(self, run_root: Path) -> str:
        """The run root workers use (the client's, unless runs are staged elsewhere)."""
        return str(run_root)
