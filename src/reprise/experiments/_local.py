"""LocalExecutor: items on this machine, in worker processes (default) or in the experiment's loop.

``isolation="process"``: a pool of up to ``max_concurrency`` worker processes
(``python -m reprise.experiments._worker``), each running one item at a time inside its own
``anyio.run``. An item that raises, times out or kills its process (``os._exit``, a segfault)
fails alone: a dead or killed worker is replaced for the next item. The timeout is enforced
twice: inside the worker (the run is cancelled and recorded ``cancelled``), and, for code that
blocks its event loop and never notices, by killing the worker process a grace period later.

``isolation="inline"``: items run as tasks of the experiment's own event loop. Fastest, but a
crash takes the experiment down and a timeout only interrupts code that awaits.

Why an own pool and not ``anyio.to_process.run_sync``: tried (issue 18) as
``run_sync(run_job_sync, job, cancellable=True, limiter=CapacityLimiter(workers))`` under
``fail_after``, the in-worker timeout kept by :func:`run_item`. Four of the executor tests
failed, each for a reason in ``to_process``'s design, not in the prototype:

* Graceful, then kill: a cancelled ``run_sync`` SIGKILLs its worker at once. On Ctrl-C (or a
  timeout) the run in flight never records itself ``cancelled``, flushes its trace or commits
  its outcomes; there is no way to signal the worker first, as it is not ours to reach.
* Crash isolation: a dead worker raises ``BrokenWorkerProcess`` with no exit code or signal
  (anyio reaps the process), and the parent never learns the item's run id, so the lost run
  cannot be finalised: no "exited with code 3" / "killed by signal SIGSEGV", a run left
  ``running``. ``faulthandler``'s dump is lost too: the worker's stderr is an unread pipe.
* The item's clock: the parent cannot tell start-up (interpreter, the target's imports) from
  the run, so the kill deadline must count start-up against the item or be loosened: an item
  blocking its event loop past its timeout then completed instead of timing out.
* Recycling: there is no max-items or memory limit, and the only way to end a worker that
  still returns its item's result is to raise ``SystemExit`` carrying it; the next item is
  then handed the exited worker before anyio has reaped it and fails with
  ``BrokenWorkerProcess`` although it never ran.
* Each worker re-runs the parent's ``__main__`` file (as ``__mp_main__``): a script without an
  ``if __name__ == "__main__"`` guard starts the experiment again inside every worker.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, Literal, cast

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from reprise.errors import RunCancelledError
from reprise.experiments._errors import ExperimentError, ItemTimeoutError
from reprise.experiments._executor import ExecutorSession, ItemExecutor, Report, SessionOptions
from reprise.experiments._item import (
    ItemJob,
    ItemResult,
    ItemStatus,
    crashed_error,
    lost_result,
    now_iso,
    run_item,
)
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
#: What reading from or writing to a worker raises once its process is gone.
_WORKER_GONE = (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


class _Worker:
    """One worker process and its protocol streams."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None and process.stdin is not None
        self._out = BufferedByteReceiveStream(process.stdout)
        self.label = f"{HOST}:{process.pid}"
        self.items = 0
        #: The run id of the item in hand, once its run exists.
        self.run_id: str | None = None

    async def send(self, message: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(encode_message(message))

    async def result(self, on_started: Callable[[], None] | None = None) -> ItemResult:
        """The item's result. Its run id is noted, and ``on_started()`` called, once the run
        exists. Raises one of ``_WORKER_GONE`` if the process died."""
        while True:
            size = decode_header(await self._out.receive_exactly(HEADER.size))
            kind, body = pickle.loads(await self._out.receive_exactly(size))
            if kind != "started":
                return cast(ItemResult, body)
            self.run_id = body
            if on_started is not None:
                on_started()

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
        worker.run_id = None
        t0 = time.perf_counter()
        started_at = now_iso()

        def lost(status: ItemStatus, error: BaseException) -> ItemResult:
            duration = time.perf_counter() - t0
            return lost_result(
                job,
                status,
                error,
                run_id=worker.run_id,
                started_at=started_at,
                duration_s=duration,
                worker=worker.label,
            )

        result: ItemResult | None = None
        hard_limit = job.timeout + kill_grace(job.timeout) if job.timeout else math.inf
        try:
            await worker.send(("job", job))
            # Until the run exists the worker may still be starting (interpreter, imports of the
            # target's module): that time is not the item's. The item's clock starts with its run.
            with anyio.move_on_after(max(STARTUP_LIMIT, hard_limit) if job.timeout else STARTUP_LIMIT) as clock:

                def start_clock() -> None:
                    clock.deadline = anyio.current_time() + hard_limit

                result = await worker.result(start_clock)
            if result is None:
                # The item ignored its in-worker timeout (it blocks its event loop): kill it.
                await worker.kill()
                assert job.timeout is not None
                message = f"timed out after {job.timeout:g}s; worker process killed"
                result = lost("timeout", ItemTimeoutError(message, run_id=worker.run_id))
            else:
                worker.items += 1
                if self.max_items is not None and worker.items >= self.max_items:
                    await worker.close()  # a fresh process takes the next item
                else:
                    self.idle.append(worker)
        except _WORKER_GONE:
            code = await worker.kill()
            result = lost("crashed", crashed_error(code, worker.run_id))
        except Exception as exc:
            await worker.kill()
            result = lost("failed", exc)
        except BaseException:
            # The experiment is being cancelled: let the worker record its run as cancelled.
            with anyio.CancelScope(shield=True):
                result = await self._interrupt(worker)
                if result is None:
                    error = RunCancelledError("experiment stopped; worker process killed", run_id=worker.run_id)
                    result = lost("cancelled", error)
                self.busy.discard(worker)
                await report(result)
            raise
        self.busy.discard(worker)
        await report(result)

    async def _interrupt(self, worker: _Worker) -> ItemResult | None:
        """Ctrl-C the worker, give it ``interrupt_grace`` seconds to report its run cancelled,
        then kill it; what it reported, if anything."""
        worker.signal_group(signal.SIGINT)
        result: ItemResult | None = None
        with anyio.move_on_after(self.interrupt_grace), suppress(*_WORKER_GONE):
            result = await worker.result()
        await worker.kill()
        return result

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
