"""DaskExecutor: items on a Dask distributed cluster (install ``reprise-agents[dask]``).

::

    summary = await Experiment(flow, "inputs.yaml", executor=DaskExecutor("tcp://10.0.0.5:8786")).run()

Each item is one Dask task that runs the item inside its own ``anyio.run`` in a worker thread,
so the item's code never blocks the worker's event loop; a worker with several threads
(``--nthreads``) runs that many items at once, and they load the target once per process.
The task returns the item's result, with its error (original type and cause chain) and, by
default, the run directory packed as a tar: the client unpacks it under its own run root and
commits the outcomes to git. The client alone writes the experiment's files and commits. With
``shared_filesystem=True`` workers write run directories straight into the client's run root
instead (a path that must be the same, shared directory on every worker); the client still
commits.

A worker process that dies while running an item (``os._exit``, a segfault, out of memory)
reaches the client as Dask's ``KilledWorker`` once the scheduler has given up on the task
(``distributed.scheduler.allowed-failures``, default 3: a task that kills every worker it
lands on is tried 4 times); the item is recorded ``crashed`` with a run directory made by the
client. A task past its timeout is cancelled; Python cannot stop a running thread, so a worker
whose item blocks keeps that thread busy until the item returns.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from reprise.errors import RunCancelledError
from reprise.experiments._errors import ExperimentError, ItemTimeoutError, WorkerCrashedError
from reprise.experiments._executor import ExecutorSession, ItemExecutor, Report, SessionOptions
from reprise.experiments._item import ItemJob, ItemResult, lost_result, now_iso, run_job_sync
from reprise.experiments._local import kill_grace

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["DaskExecutor", "dask_address"]


def dask_address(url: str) -> str:
    """``dask://HOST:PORT`` (the CLI's form) as a scheduler address ``tcp://HOST:PORT``; other
    Dask addresses (``tcp://``, ``tls://``, ``inproc://``) pass through."""
    parts = urlsplit(url)
    if parts.scheme == "dask":
        if not parts.hostname or parts.port is None:
            raise ExperimentError(f"invalid Dask address {url!r}: expected dask://HOST:PORT")
        return f"tcp://{parts.netloc}"
    if parts.scheme in ("tcp", "tls", "inproc", "ucx", "ws", "wss"):
        return url
    raise ExperimentError(f"invalid Dask address {url!r}: expected dask://HOST:PORT or tcp://HOST:PORT")


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ExperimentError(
            "the Dask executor needs the 'distributed' package: pip install 'reprise-agents[dask]'"
        ) from None
    return distributed


class DaskExecutor(ItemExecutor):
    """Run items on a Dask cluster.

    Args:
        address: the scheduler (``dask://HOST:PORT``, ``tcp://HOST:PORT``), or a connected
            synchronous ``distributed.Client`` (which the experiment then does not close).
        shared_filesystem: workers write run directories straight into the client's run root
            (which every worker must see at the same path) instead of shipping them back.
        backend: the anyio backend items run on in the workers.
    """

    workers_commit = False

    def __init__(self, address: str | Client, *, shared_filesystem: bool = False, backend: str = "asyncio") -> None:
        distributed = _import_distributed()
        if isinstance(address, distributed.Client):
            self.client: Client | None = address
            self.address = str(address.scheduler.address) if address.scheduler is not None else None
        elif isinstance(address, str):
            self.client = None
            self.address = dask_address(address)
        else:
            raise ExperimentError(f"DaskExecutor needs a scheduler address or a Client, got {type(address).__name__}")
        self.shared_filesystem = shared_filesystem
        self.ships_run_dirs = not shared_filesystem
        self.backend = backend

    def describe(self) -> dict[str, Any]:
        return {"kind": "dask", "address": self.address, "shared_filesystem": self.shared_filesystem}

    def session(self, options: SessionOptions) -> AbstractAsyncContextManager[ExecutorSession]:
        return self._session(options)

    @asynccontextmanager
    async def _session(self, options: SessionOptions) -> AsyncIterator[ExecutorSession]:
        distributed = _import_distributed()
        client = self.client
        owned = client is None
        if client is None:
            try:
                client = await anyio.to_thread.run_sync(
                    lambda: distributed.Client(self.address, set_as_default=False, timeout="20s")
                )
            except (OSError, TimeoutError) as exc:
                raise ExperimentError(f"cannot connect to the Dask scheduler at {self.address}: {exc}") from exc
        assert client is not None
        limiter = anyio.CapacityLimiter(options.max_concurrency + 2)
        try:
            yield _DaskSession(client, limiter)
        finally:
            if owned:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(client.close)

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address!r})"


def _wait(future: Future[ItemResult], timeout: float | None) -> tuple[str, Any]:
    """Block until the task ends (or ``timeout``): ``("result", ItemResult)``,
    ``("error", exception)`` (the remote exception, with its type), ``("cancelled", None)`` or
    ``("timeout", None)``."""
    try:
        return ("result", future.result(timeout=timeout))
    except BaseException as exc:
        status = future.status
        if status == "error":
            return ("error", exc)
        if status == "cancelled":
            return ("cancelled", None)
        return ("timeout", None)


class _DaskSession(ExecutorSession):
    def __init__(self, client: Client, limiter: anyio.CapacityLimiter) -> None:
        self.client = client
        self.limiter = limiter

    async def run(self, job: ItemJob, report: Report) -> None:
        from distributed import KilledWorker

        started_at = now_iso()
        t0 = anyio.current_time()
        key = f"reprise-item-{job.index}-{secrets.token_hex(4)}"
        future: Future[ItemResult] = self.client.submit(run_job_sync, job, key=key, pure=False, retries=0)
        hard_limit = job.timeout + kill_grace(job.timeout) if job.timeout else None
        result: ItemResult
        try:
            outcome, value = await anyio.to_thread.run_sync(
                _wait, future, hard_limit, abandon_on_cancel=True, limiter=self.limiter
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(future.cancel)
                result = lost_result(
                    job,
                    "cancelled",
                    RunCancelledError("experiment stopped; Dask task cancelled"),
                    started_at=started_at,
                    duration_s=anyio.current_time() - t0,
                )
                await report(result)
            raise
        duration = anyio.current_time() - t0
        if outcome == "result":
            result = value
        elif outcome == "timeout":
            await anyio.to_thread.run_sync(future.cancel)
            assert job.timeout is not None
            error: BaseException = ItemTimeoutError(f"timed out after {job.timeout:g}s; Dask task cancelled")
            result = lost_result(job, "timeout", error, started_at=started_at, duration_s=duration)
        elif outcome == "error" and isinstance(value, KilledWorker):
            error = WorkerCrashedError(f"the Dask worker running this item died ({value})")
            result = lost_result(job, "crashed", error, started_at=started_at, duration_s=duration)
            error.__cause__ = value  # after the record is written: its type stays WorkerCrashedError
        elif outcome == "error":
            result = lost_result(job, "failed", value, started_at=started_at, duration_s=duration)
        else:
            error = RunCancelledError("the Dask task was cancelled outside the experiment")
            result = lost_result(job, "cancelled", error, started_at=started_at, duration_s=duration)
        await report(result)
