"""LocalExecutor: items on this machine, in worker processes (default) or in the experiment's loop.

``isolation="process"``: a pool of up to ``max_concurrency`` worker processes
(``python -m reprise.experiments._worker``), each running one item at a time inside its own
``anyio.run``. An item that raises, times out or kills its process (``os._exit``, a segfault)
fails alone: a dead or killed worker is replaced for the next item. The timeout is enforced
twice: inside the worker (the run is cancelled and recorded ``cancelled``), and, for code that
blocks its event loop and never notices, by killing the worker process a grace period later.

``isolation="inline"``: items run as tasks of the experiment's own event loop. Fastest, but a
crash takes the experiment down and a timeout only interrupts code that awaits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from reprise.errors import RunCancelledError
from reprise.experiments._errors import ExperimentError, ItemTimeoutError
from reprise.experiments._executor import ExecutorSession, ItemExecutor, Report, SessionOptions
from reprise.experiments._item import ItemJob, ItemResult, crashed_error, lost_result, now_iso, run_item
from reprise.experiments._wire import HEADER, decode_header, encode_message
from reprise.run._status import HOST

__all__ = ["LocalExecutor"]

Isolation = Literal["process", "inline"]


#: Seconds a worker may take to start an item (start-up, importing the target) before its run exists.
STARTUP_LIMIT = 60.0


def kill_grace(timeout: float) -> float:
    """How long after an item's timeout its worker is killed if the item has not stopped."""
    return min(max(1.0, timeout * 0.1), 30.0)


class LocalExecutor(ItemExecutor):
    """Run items on this machine.

    Args:
        isolation: ``"process"`` (default; crash isolation, hard timeouts) or ``"inline"``.
        workers: size of the process pool (default: the experiment's ``max_concurrency``).
        interrupt_grace: seconds a worker gets to record its run as cancelled when the
            experiment is stopped, before it is killed.
        max_items_per_worker: replace a worker process after this many items (``None``: never),
            so memory that code leaks per run (OpenTelemetry's providers leave ~1.5 KiB behind
            each) cannot pile up over a long experiment.
    """

    def __init__(
        self,
        isolation: Isolation = "process",
        *,
        workers: int | None = None,
        interrupt_grace: float = 5.0,
        max_items_per_worker: int | None = 1000,
    ) -> None:
        if isolation not in ("process", "inline"):
            raise ExperimentError(f"unknown isolation {isolation!r}: use 'process' or 'inline'")
        if workers is not None and workers < 1:
            raise ExperimentError(f"workers must be >= 1, got {workers}")
        self.isolation: Isolation = isolation
        self.workers = workers
        self.interrupt_grace = interrupt_grace
        if max_items_per_worker is not None and max_items_per_worker < 1:
            raise ExperimentError(f"max_items_per_worker must be >= 1, got {max_items_per_worker}")
        self.max_items_per_worker = max_items_per_worker

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "local",
            "isolation": self.isolation,
            "workers": self.workers,
            "max_items_per_worker": self.max_items_per_worker,
        }

    def session(self, options: SessionOptions) -> AbstractAsyncContextManager[ExecutorSession]:
        if self.isolation == "inline":
            return _inline_session()
        return _process_session(
            self.workers or options.max_concurrency, options, self.interrupt_grace, self.max_items_per_worker
        )

    def __repr__(self) -> str:
        return f"LocalExecutor(isolation={self.isolation!r})"


# -- inline ------------------------------------------------------------------------------
class _InlineSession(ExecutorSession):
    async def run(self, job: ItemJob, report: Report) -> None:
        holder: list[ItemResult] = []
        try:
            result = await run_item(job, on_cancelled=holder.append)
        except BaseException:
            if holder:
                with anyio.CancelScope(shield=True):
                    await report(holder[0])
            raise
        await report(result)


@asynccontextmanager
async def _inline_session() -> AsyncIterator[ExecutorSession]:
    yield _InlineSession()


# -- worker processes --------------------------------------------------------------------
class _Worker:
    """One worker process and its protocol streams."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None and process.stdin is not None
        self._out = BufferedByteReceiveStream(process.stdout)
        self.label = f"{HOST}:{process.pid}"
        self.items = 0

    async def send(self, message: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(encode_message(message))

    async def receive(self) -> Any:
        """The next message (raises ``anyio.IncompleteRead``/``EndOfStream`` if the process died)."""
        import pickle

        size = decode_header(await self._out.receive_exactly(HEADER.size))
        return pickle.loads(await self._out.receive_exactly(size))

    def signal_group(self, sig: int) -> None:
        """Signal the worker and whatever it started (it leads its own process group)."""
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def kill(self) -> int | None:
        """Kill the worker (and its process group) and reap it; its exit code."""
        self.signal_group(signal.SIGKILL)
        with anyio.CancelScope(shield=True):
            code: int | None = await self.process.wait()
        return code

    async def close(self) -> None:
        """Ask an idle worker to exit (end of its input), kill it if it does not."""
        with anyio.CancelScope(shield=True):
            try:
                assert self.process.stdin is not None
                await self.process.stdin.aclose()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            with anyio.move_on_after(5):
                await self.process.wait()
                return
            await self.kill()


class _ProcessSession(ExecutorSession):
    def __init__(
        self, size: int, options: SessionOptions, log_fd: int, interrupt_grace: float, max_items: int | None
    ) -> None:
        self.size = size
        self.max_items = max_items
        self.options = options
        self.log_fd = log_fd
        self.interrupt_grace = interrupt_grace
        self.idle: list[_Worker] = []
        self.busy: set[_Worker] = set()

    async def _take(self) -> _Worker:
        if self.idle:
            return self.idle.pop()
        if len(self.busy) >= self.size:
            raise ExperimentError("more concurrent items than worker processes")  # pragma: no cover
        try:
            process = await anyio.open_process(
                [sys.executable, "-m", "reprise.experiments._worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log_fd,
                # Its own process group: a terminal's Ctrl-C reaches the experiment only, which
                # then stops its workers in order (and a kill on timeout takes their children).
                start_new_session=True,
            )
        except OSError as exc:
            raise ExperimentError(f"cannot start a worker process: {exc}") from exc
        worker = _Worker(process)
        await worker.send(("hello", {"sys_path": [p for p in sys.path if p]}))
        return worker

    async def run(self, job: ItemJob, report: Report) -> None:
        worker = await self._take()
        self.busy.add(worker)
        t0 = time.perf_counter()
        started_at = now_iso()
        run_id: str | None = None
        result: ItemResult | None = None
        hard_limit = job.timeout + kill_grace(job.timeout) if job.timeout else None
        try:
            await worker.send(("job", job))
            # Until the run exists the worker may still be starting (interpreter, imports of the
            # target's module): that time is not the item's. The item's clock starts with its run.
            with anyio.move_on_after(max(STARTUP_LIMIT, hard_limit or 0.0)):
                kind, body = await worker.receive()
                if kind == "started":
                    run_id = body
                else:
                    result = body
            if result is None and run_id is not None:
                with anyio.move_on_after(hard_limit):
                    kind, body = await worker.receive()
                    result = body
            if result is None:
                # The item ignored its in-worker timeout (it blocks its event loop): kill it.
                await worker.kill()
                assert job.timeout is not None
                error = ItemTimeoutError(f"timed out after {job.timeout:g}s; worker process killed", run_id=run_id)
                result = lost_result(
                    job,
                    "timeout",
                    error,
                    run_id=run_id,
                    started_at=started_at,
                    duration_s=time.perf_counter() - t0,
                    worker=worker.label,
                )
            else:
                worker.items += 1
                if self.max_items is not None and worker.items >= self.max_items:
                    await worker.close()  # a fresh process takes the next item
                else:
                    self.idle.append(worker)
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            code = await worker.kill()
            result = lost_result(
                job,
                "crashed",
                crashed_error(code, run_id),
                run_id=run_id,
                started_at=started_at,
                duration_s=time.perf_counter() - t0,
                worker=worker.label,
            )
        except Exception as exc:
            await worker.kill()
            result = lost_result(
                job,
                "failed",
                exc,
                run_id=run_id,
                started_at=started_at,
                duration_s=time.perf_counter() - t0,
                worker=worker.label,
            )
        except BaseException:
            # The experiment is being cancelled: let the worker record its run as cancelled.
            with anyio.CancelScope(shield=True):
                result = await self._interrupt(worker, job, run_id, started_at, t0)
                self.busy.discard(worker)
                await report(result)
            raise
        self.busy.discard(worker)
        await report(result)

    async def _interrupt(
        self, worker: _Worker, job: ItemJob, run_id: str | None, started_at: str, t0: float
    ) -> ItemResult:
        worker.signal_group(signal.SIGINT)
        result: ItemResult | None = None
        with anyio.move_on_after(self.interrupt_grace):
            try:
                while True:
                    kind, body = await worker.receive()
                    if kind == "started":
                        run_id = body
                        continue
                    result = body
                    break
            except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        await worker.kill()
        if result is not None:
            return result
        return lost_result(
            job,
            "cancelled",
            RunCancelledError("experiment stopped; worker process killed", run_id=run_id),
            run_id=run_id,
            started_at=started_at,
            duration_s=time.perf_counter() - t0,
            worker=worker.label,
        )

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            idle, self.idle = self.idle, []
            async with anyio.create_task_group() as tg:
                for worker in idle:
                    tg.start_soon(worker.close)
                for worker in list(self.busy):
                    tg.start_soon(worker.kill)


@asynccontextmanager
async def _process_session(
    size: int, options: SessionOptions, interrupt_grace: float, max_items: int | None
) -> AsyncIterator[ExecutorSession]:
    options.log_path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(options.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    session = _ProcessSession(size, options, log_fd, interrupt_grace, max_items)
    try:
        yield session
    finally:
        await session.aclose()
        os.close(log_fd)
