"""One item of an experiment: one (input, iteration) run, wherever it executes.

:func:`run_item` is the same code in every executor: in the experiment's own event loop
(``isolation="inline"``), inside a worker process's own ``anyio.run`` (``isolation="process"``)
and inside a Dask worker's ``anyio.run`` (:func:`run_job_sync`). It never raises for a failing
item: the item's :class:`ItemResult` carries a :class:`RunRecord` (its ``runs.jsonl`` line) and
the error with its original type. Only a cancellation of the experiment itself propagates.

The client side finishes what a worker could not: :func:`finalize_lost_run` records a run whose
process was killed or died (and commits what it had to git), :func:`unpack_run_dir` and
:func:`commit_run_outcomes` take in a run directory shipped back from a Dask worker.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import pickle
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, TypeAdapter

from reprise.dsl._container import AgentDefinition
from reprise.errors import RepriseError, RunFailedError, RunFileError
from reprise.experiments._errors import ItemTimeoutError, WorkerCrashedError
from reprise.experiments._inputs import ExperimentInput
from reprise.experiments._target import TargetSpec
from reprise.observability._settings import ObservabilitySettings
from reprise.run._directory import RESULT_FILE, RunDirectory, RunMetadata, pid_info
from reprise.run._files import write_json_atomic
from reprise.run._index import record_run
from reprise.run._outcome_repo import OutcomeFile, OutcomeRepository, OutcomeSettings, collect_outcome_files
from reprise.run._reading import read_run_object
from reprise.run._status import HOST, RunStatus

__all__ = [
    "ItemJob",
    "ItemResult",
    "ItemStatus",
    "RunRecord",
    "commit_run_outcomes",
    "finalize_lost_run",
    "run_item",
    "run_job_sync",
    "unpack_run_dir",
]

ItemStatus = Literal["completed", "failed", "timeout", "crashed", "cancelled"]

#: Statuses that count as a failure (``cancelled`` is neither: the experiment was stopped).
FAILURE_STATUSES: frozenset[str] = frozenset({"failed", "timeout", "crashed"})

_ANY: TypeAdapter[Any] = TypeAdapter(Any)  # built once: a TypeAdapter costs ~0.3 ms to make

#: An outcome whose JSON is larger than this is not copied into ``runs.jsonl`` (it stays in the
#: run directory): one huge outcome must not make every reader of the file slow.
OUTCOME_LIMIT = 64 * 1024


#: Set while an item runs (in its own task's context): an
#: :class:`~reprise.experiments.ArgumentRecorder` on the target does not record the experiment's
#: own calls, which would grow the very recording being replayed.
IN_ITEM: ContextVar[bool] = ContextVar("reprise_experiment_item", default=False)


def now_iso() -> str:
    """The current UTC time, as reprise writes times."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class RunRecord(BaseModel):
    """One line of ``runs.jsonl``: one finished (input, iteration)."""

    model_config = ConfigDict(extra="allow")

    input_id: str
    iteration: int
    run_id: str | None = None
    status: ItemStatus
    duration_s: float | None = None
    started_at: str | None = None
    ended_at: str | None = None
    #: The root's outcome as JSON (``{"truncated": true, "bytes": n}`` past 64 KiB).
    outcome: Any = None
    error_type: str | None = None
    error_message: str | None = None
    #: The hierarchy path the error came from, when known.
    error_path: str | None = None
    #: Model tokens (input + output) and cost in US dollars over the run's nodes, when reported.
    tokens: int | None = None
    cost_usd: float | None = None
    persona: str | None = None
    #: Where it ran: ``host:pid`` of the process, or the Dask worker's address.
    worker: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        """``(input_id, iteration)``."""
        return (self.input_id, self.iteration)


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemJob:
    """Everything a worker needs to run one item (picklable)."""

    index: int
    input: ExperimentInput
    iteration: int
    target: TargetSpec
    root_id: str
    project_root: str
    run_root: str
    run_id_prefix: str | None
    tags: dict[str, str]
    timeout: float | None = None
    outcome_repo: OutcomeSettings = field(default_factory=OutcomeSettings)
    observability: ObservabilitySettings | None = None
    backend: str = "asyncio"
    #: Dask: run in a private staging run root and send the run directory back as a tar.
    ship: bool = False

    @property
    def key(self) -> tuple[str, int]:
        """``(input_id, iteration)``."""
        return (self.input.id, self.iteration)


@dataclass(slots=True, kw_only=True)
class ItemResult:
    """What comes back from one item."""

    record: RunRecord
    #: The error with its original type (``__cause__`` chain kept), or ``None``.
    error: BaseException | None = None
    #: A shipped run directory (a tar of ``<run_id>/...``), for the client to unpack.
    payload: bytes | None = None
    #: Shipped runs: files nodes declared as outcomes, ``(path in the run dir, repo path, node path)``.
    declared: tuple[tuple[str, str, str], ...] = ()
    #: The run could not finish by itself (killed, died, lost): the client records it.
    lost: bool = False

    def __reduce__(self) -> tuple[object, ...]:
        # Sent from a worker process or a Dask worker: keep the error's type and cause chain.
        chain = error_chain(self.error) if self.error is not None else []
        return (_rebuild_result, (self.record, chain, self.payload, self.declared, self.lost))


# -- running one item --------------------------------------------------------------------
async def run_item(
    job: ItemJob,
    *,
    on_started: Callable[[str], None] | None = None,
    on_cancelled: Callable[[ItemResult], None] | None = None,
) -> ItemResult:
    """Run one item as a normal reprise run and describe how it went.

    ``on_started(run_id)`` is called once the run directory exists. If the experiment is
    cancelled (or the process gets Ctrl-C), ``on_cancelled`` receives the item's ``cancelled``
    result and the cancellation propagates."""
    from reprise.run._context import RunContext
    from reprise.runners._runner import AgentRunner, FlowRunner

    IN_ITEM.set(True)  # this task's context only: the item runs in a task (or anyio.run) of its own
    started_at = now_iso()
    t0 = time.perf_counter()
    ctx: RunContext | None = None
    worker = f"{HOST}:{os.getpid()}"
    try:
        target = job.target.resolve()
        # Never a re-run (no previous_run_id): run directories are shipped between processes as
        # tars whose unpacking refuses links out of the tree, so a re-run here would have to use
        # reused_nodes="copy" (self-contained directories), not the default links.
        ctx = RunContext(
            job.root_id,
            job.project_root,
            job.run_root,
            observability_settings=job.observability,
            initial_inputs=job.input.initial_inputs,
            tags=job.tags,
            outcome_repo=job.outcome_repo,
        )
        for key, value in job.input.static_inputs.items():
            ctx.register_node_static_input(key, value)
        runner = AgentRunner(target, ctx) if isinstance(target, AgentDefinition) else FlowRunner(target, ctx)  # type: ignore[arg-type]
        runner.setup_run(job.run_id_prefix)
        if on_started is not None:
            on_started(ctx.run_id)
        with anyio.fail_after(job.timeout) if job.timeout else nullcontext():
            result = await runner.run()
    except BaseException as exc:
        run_id = ctx.run_id if ctx is not None and ctx.is_setup else None
        if _is_cancellation(exc):
            cancelled = _result(job, "cancelled", run_id, started_at, t0, worker, error=exc)
            if on_cancelled is not None:
                on_cancelled(cancelled)
            raise
        if isinstance(exc, TimeoutError) and job.timeout:
            # fail_after fired: the runner has recorded the run as cancelled.
            error: BaseException = ItemTimeoutError(f"timed out after {job.timeout:g}s", run_id=run_id)
            return _result(job, "timeout", run_id, started_at, t0, worker, error=error)
        return _result(job, "failed", run_id, started_at, t0, worker, error=exc)
    return _result(job, "completed", result.run_id, started_at, t0, worker, outcome=result.outcome)


def run_job_sync(job: ItemJob) -> ItemResult:
    """Run one item in its own ``anyio.run`` (Dask workers call this in a worker thread, so
    the item's code never blocks the worker's event loop) and make the result travel: errors
    picklable, and with ``job.ship`` the run directory packed into the result."""
    staging: str | None = None
    if job.ship:
        staging = _staging_root()
        job = _replace(job, run_root=staging)
    holder: list[ItemResult] = []
    try:
        result = anyio.run(_run_collecting, job, holder, backend=job.backend)
    except BaseException:
        if not holder:
            raise
        result = holder[0]
    if result.record.worker is not None:
        result.record.worker = _dask_worker_address() or result.record.worker
    if result.record.run_id is not None:
        run_dir = Path(job.run_root) / result.record.run_id
        if not job.outcome_repo.enabled:
            # The client commits: tell it which declared files to take along.
            result.declared = _declared_in(run_dir)
        if staging is not None:
            try:
                result.payload = pack_run_dir(run_dir)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
    return result


_STAGING: list[str] = []


def _staging_root() -> str:
    """This worker process's staging run root, made once: one per item would leave a cached
    run-index connection (and its memory) behind for every item."""
    if not _STAGING:
        import atexit

        path = tempfile.mkdtemp(prefix="reprise-staging-")
        atexit.register(shutil.rmtree, path, True)
        _STAGING.append(path)
    return _STAGING[0]


async def _run_collecting(job: ItemJob, holder: list[ItemResult]) -> ItemResult:
    result = await run_item(job, on_cancelled=holder.append)
    holder.append(result)
    return result


def _replace(job: ItemJob, **changes: Any) -> ItemJob:
    from dataclasses import replace

    return replace(job, **changes)


def _dask_worker_address() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    try:
        return isinstance(exc, anyio.get_cancelled_exc_class())
    except RuntimeError:  # no event loop
        return False


def _result(
    job: ItemJob,
    status: ItemStatus,
    run_id: str | None,
    started_at: str,
    t0: float,
    worker: str,
    *,
    outcome: Any = None,
    error: BaseException | None = None,
) -> ItemResult:
    record = RunRecord(
        input_id=job.input.id,
        iteration=job.iteration,
        run_id=run_id,
        status=status,
        duration_s=round(time.perf_counter() - t0, 6),
        started_at=started_at,
        ended_at=now_iso(),
        outcome=json_outcome(outcome) if status == "completed" else None,
        persona=job.input.persona,
        worker=worker,
    )
    if error is not None:
        describe_error(record, error)
    if run_id is not None:
        record.tokens, record.cost_usd = run_usage(Path(job.run_root) / run_id)
    return ItemResult(record=record, error=error)


def lost_result(
    job: ItemJob,
    status: ItemStatus,
    error: BaseException,
    *,
    run_id: str | None = None,
    started_at: str | None = None,
    duration_s: float | None = None,
    worker: str | None = None,
) -> ItemResult:
    """The result of an item whose process could not report one (killed, died, lost)."""
    record = RunRecord(
        input_id=job.input.id,
        iteration=job.iteration,
        run_id=run_id,
        status=status,
        duration_s=round(duration_s, 6) if duration_s is not None else None,
        started_at=started_at,
        ended_at=now_iso(),
        persona=job.input.persona,
        worker=worker,
    )
    describe_error(record, error)
    return ItemResult(record=record, error=error, lost=True)


# -- errors ------------------------------------------------------------------------------
def root_cause(exc: BaseException) -> BaseException:
    """The innermost ``__cause__``: the user's exception behind a ``RunFailedError``."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def describe_error(record: RunRecord, error: BaseException) -> None:
    """Fill a record's error fields: the original exception's type and message, and the
    hierarchy path reprise attached to it."""
    cause = root_cause(error)
    record.error_type = type(cause).__name__
    record.error_message = (cause.message if isinstance(cause, RepriseError) else str(cause)) or type(cause).__name__
    path = getattr(error, "path", None) or getattr(cause, "path", None)
    record.error_path = str(path) if path else None


def error_chain(error: BaseException) -> list[BaseException]:
    """``error`` and its ``__cause__`` chain, each link made to survive pickling (pickle keeps an
    exception's type and arguments but drops its cause). A link that does not pickle is
    replaced by a :class:`RepriseError` naming its type and message."""
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and len(chain) < 8:
        if isinstance(link, RunFailedError):
            # Its RunResult holds every outcome of the run: the client has them on disk.
            link.__dict__.pop("result", None)
        try:
            pickle.loads(pickle.dumps(link))
            chain.append(link)
        except Exception:
            chain.append(RepriseError(f"{type(link).__module__}.{type(link).__qualname__}: {link}"))
        link = link.__cause__
    return chain


def _relink(chain: list[BaseException]) -> BaseException | None:
    for exc, cause in itertools.pairwise(chain):
        exc.__cause__ = cause
    return chain[0] if chain else None


def _rebuild_result(
    record: RunRecord,
    chain: list[BaseException],
    payload: bytes | None,
    declared: tuple[tuple[str, str, str], ...],
    lost: bool,
) -> ItemResult:
    return ItemResult(record=record, error=_relink(chain), payload=payload, declared=declared, lost=lost)


# -- outcomes, usage ---------------------------------------------------------------------
def json_outcome(outcome: Any) -> Any:
    """The outcome as JSON data (pydantic models and dataclasses included)."""
    try:
        data = _ANY.dump_python(outcome, mode="json")
        size = len(json.dumps(data, ensure_ascii=False))
    except Exception:
        data = repr(outcome)
        size = len(data)
    if size > OUTCOME_LIMIT:
        return {"truncated": True, "bytes": size}
    return data


def run_usage(run_dir: Path) -> tuple[int | None, float | None]:
    """Tokens and cost summed over the ``result.json`` of a run's nodes (``None`` when no node
    reported any)."""
    tokens: int | None = None
    cost: float | None = None
    base = str(run_dir)
    for dirpath, dirnames, filenames in os.walk(base):
        # Hidden directories are .trace and the temporary directory a crash may leave before a
        # node's directory is renamed into place: neither is a node.
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (dirpath == base and d == "static_inputs")]
        if RESULT_FILE not in filenames:
            continue
        try:
            with open(os.path.join(dirpath, RESULT_FILE), "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if b'"usage"' not in raw and b'"cost_usd"' not in raw:
            continue  # most results: skip the JSON parse
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        usage = data.get("usage")
        if isinstance(usage, dict):
            count = sum(v for k, v in usage.items() if k in ("input_tokens", "output_tokens") and isinstance(v, int))
            tokens = (tokens or 0) + count
        if isinstance(data.get("cost_usd"), (int, float)):
            cost = round((cost or 0.0) + float(data["cost_usd"]), 10)
    return tokens, cost


# -- shipping run directories (Dask) -----------------------------------------------------
def pack_run_dir(run_dir: Path) -> bytes:
    """A run directory as an uncompressed tar of ``<run_id>/...``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(run_dir), arcname=run_dir.name)
    return buffer.getvalue()


def unpack_run_dir(payload: bytes, run_root: Path, run_id: str) -> Path:
    """Extract a shipped run directory under ``run_root``; every member must stay inside
    ``<run_root>/<run_id>`` (no absolute paths, ``..``, links or devices)."""
    from reprise.run._directory import RUN_ID_PATTERN

    if not RUN_ID_PATTERN.match(run_id):
        raise RepriseError(f"refusing a shipped run directory with an invalid run id {run_id!r}")
    run_root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tar:
        members = tar.getmembers()
        for member in members:
            if member.name != run_id and not member.name.startswith(run_id + "/"):
                raise RepriseError(f"shipped run {run_id}: member {member.name!r} is outside the run directory")
        # The "data" filter also rejects absolute paths, '..', links leaving the tree and devices.
        tar.extractall(run_root, members=members, filter="data")
    return run_root / run_id


def _declared_in(run_dir: Path) -> tuple[tuple[str, str, str], ...]:
    """Declared outcome files inside the run directory, from the nodes' ``result.json``."""
    out: list[tuple[str, str, str]] = []
    base = run_dir.resolve()
    for result_file in run_dir.rglob(RESULT_FILE):
        if any(part.startswith(".") for part in result_file.relative_to(run_dir).parts):
            continue  # .trace, or a node directory a crash left before its rename
        try:
            data = read_run_object(result_file)
        except (OSError, RunFileError):
            continue
        for entry in data.get("outcome_files") or ():
            source = Path(str(entry.get("source", ""))).resolve()
            if source.is_relative_to(base):
                node_path = str(data.get("path", ""))
                out.append((source.relative_to(base).as_posix(), str(entry.get("repo_path", "")), node_path))
    return tuple(out)


def commit_run_outcomes(
    run_dir: Path,
    settings: OutcomeSettings,
    project_root: Path,
    *,
    declared: tuple[tuple[str, str, str], ...] = (),
) -> str | None:
    """Commit a run's outcomes to ``run/<run_id>`` from the client, as the run's own process
    would have, and note the commit in its metadata. Returns the commit (``None`` when
    outcomes are off or the branch exists already)."""
    run = RunDirectory(run_dir)
    meta = run.read_metadata()
    if not settings.enabled:
        record_run(run, meta)  # the client's run index learns of a run made elsewhere
        return None
    path = settings.path or run_dir.parent / "outcome" / project_root.name
    repo = OutcomeRepository(path, settings)
    if repo.head_of(run.run_id) is not None:
        record_run(run, meta)
        return None  # the run's process committed before it was killed
    files = collect_outcome_files(
        run_dir,
        [OutcomeFile(run_dir / rel, repo_path, node_path) for rel, repo_path, node_path in declared],
        with_order=settings.commit_per_node,
    )
    lines = [
        f"run {run.run_id}: {meta.status.value} in {meta.duration_s or 0.0:.3f}s",
        "",
        f"root: {meta.root_component_id}",
    ]
    if meta.error_msg:
        lines.append(f"error: {meta.error_msg}")
    try:
        commit = repo.commit_run(run.run_id, files, message="\n".join(lines), parent_run_id=meta.previous_run_id).commit
    except RepriseError as exc:
        setattr(meta, "outcome_commit_error", exc.message)  # noqa: B010 - an extra metadata field
        _save(run, meta)
        return None
    for name, value in (
        ("outcome_commit", commit),
        ("outcome_branch", repo.branch(run.run_id)),
        ("outcome_repo", str(repo.path)),
    ):
        setattr(meta, name, value)
    _save(run, meta)
    return commit


def _save(run: RunDirectory, meta: RunMetadata) -> None:
    run.write_metadata(meta)
    record_run(run, meta)


def finalize_lost_run(
    job: ItemJob,
    result: ItemResult,
    run_root: Path,
    settings: OutcomeSettings,
    project_root: Path,
) -> None:
    """Record, from the client, a run whose process could not: killed on timeout, died, or lost
    with its Dask worker. The run's own directory gets its final status; when there is none
    (the worker's disk is out of reach, or it died before setting the run up) a run directory
    is made for it, so every item has one. Then its outcomes so far are committed."""
    record = result.record
    status = {"timeout": RunStatus.CANCELLED, "cancelled": RunStatus.CANCELLED, "failed": RunStatus.FAILED}.get(
        record.status, RunStatus.CRASHED
    )
    message = f"{record.error_type}: {record.error_message}" if record.error_type else record.status
    run: RunDirectory | None = None
    if record.run_id is not None:
        candidate = RunDirectory(run_root / record.run_id)
        if candidate.metadata_path.is_file():
            run = candidate
    if run is None:
        if record.status == "cancelled":
            return  # stopped before its run began: resume runs it, nothing to record
        run = RunDirectory.create(run_root, job.run_id_prefix)
        pid, pid_start = pid_info()
        from reprise._version import __version__
        from reprise.run._directory import INITIAL_INPUTS_FILE

        meta = RunMetadata(
            run_id=run.run_id,
            root_component_id=job.root_id,
            status=status,
            started_at=record.started_at or now_iso(),
            pid=pid,
            pid_start=pid_start,
            host=HOST,
            reprise_version=__version__,
            tags=job.tags,
        )
        write_json_atomic(run.static_inputs_dir / INITIAL_INPUTS_FILE, json_outcome(job.input.initial_inputs))
        record.run_id = run.run_id
    else:
        meta = run.read_metadata()
        if meta.status.finished and meta.status is not RunStatus.CRASHED:
            return  # the run recorded its own end before the process went away
    meta.status = status
    meta.error_msg = message
    meta.ended_at = record.ended_at or now_iso()
    meta.duration_s = record.duration_s
    _save(run, meta)
    if record.tokens is None and record.cost_usd is None:
        record.tokens, record.cost_usd = run_usage(run.path)
    commit_run_outcomes(run.path, settings, project_root)


def crashed_error(returncode: int | None, run_id: str | None) -> WorkerCrashedError:
    """The error of an item whose worker process exited with ``returncode``."""
    import signal

    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return WorkerCrashedError(f"worker process killed by signal {name}", run_id=run_id)
    return WorkerCrashedError(f"worker process exited with code {returncode}", run_id=run_id)
