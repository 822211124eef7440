"""Experiment: one flow or agent over many inputs, several iterations each, in parallel.

::

    from reprise.experiments import Experiment, LocalExecutor

    summary = await Experiment(
        review_flow, "inputs.yaml", iterations=3, max_concurrency=8, timeout=120,
    ).run()
    print(summary.success_rate, summary.duration_p95_s, summary.folder)

Each (input, iteration) is a normal reprise run (its own run directory, trace and git branch)
tagged with the experiment's name, the input id and the iteration. The experiment writes its
folder (see :mod:`reprise.experiments._folder`) as runs finish; one failing, hanging or crashing
item fails alone. Ctrl-C (or :meth:`Experiment.stop`) stops launching, cancels what runs and
still writes the summary; :meth:`Experiment.resume` finishes the rest later.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from reprise._targets import PROJECT_TAG, TARGET_TAG
from reprise._version import __version__
from reprise.dsl._container import Container
from reprise.dsl._paths import validate_id
from reprise.errors import DefinitionError, RepriseError
from reprise.experiments._errors import ExperimentError
from reprise.experiments._executor import ExecutorSession, ItemExecutor, SessionOptions
from reprise.experiments._folder import ExperimentFolder, check_name
from reprise.experiments._inputs import ExperimentInput, InputsSource, load_inputs, write_inputs_jsonl
from reprise.experiments._item import (
    ItemJob,
    ItemResult,
    commit_run_outcomes,
    finalize_lost_run,
    now_iso,
    unpack_run_dir,
)
from reprise.experiments._local import LocalExecutor
from reprise.experiments._progress import Progress, auto_progress
from reprise.experiments._replay import ArgumentReplay
from reprise.experiments._report import TraceSummaryLine
from reprise.experiments._summary import ExperimentSummary, summarize
from reprise.experiments._target import TargetSpec
from reprise.observability._settings import ObservabilitySettings
from reprise.run._outcome_repo import OutcomeSettings

__all__ = ["Experiment"]


def _current_backend() -> str:
    """The anyio backend running us (worker processes use the same one)."""
    trio = sys.modules.get("trio")
    return "trio" if trio is not None and trio.lowlevel.in_trio_run() else "asyncio"


class Experiment:
    """Run ``target`` over ``inputs``, ``iterations`` times each.

    Args:
        target: a :class:`~reprise.dsl._container.FlowDefinition` or
            :class:`~reprise.dsl._container.AgentDefinition`, or ``"module:object"``.
        inputs: items (:class:`ExperimentInput` or mappings) or an inputs file (``.yaml``,
            ``.yml``, ``.json``, ``.jsonl``).
        iterations: runs per input.
        name: the experiment's name (folder ``<name>_<YYYYMMDD_HHMMSS>``, run id prefix);
            default: the target's id or object name.
        max_concurrency: runs at once.
        timeout: seconds per run (``None``: no limit).
        executor: :class:`LocalExecutor` (default: worker processes) or
            :class:`~reprise.experiments._dask_executor.DaskExecutor`.
        project_root: the project (default: the current directory).
        run_root: where run directories go (default ``<project_root>/runs``).
        experiments_dir: where experiment folders go (default ``<project_root>/experiments``).
        root_id: the runs' root component id (default: the target's id or object name).
        outcome_repo: commit each run's outcomes to git (``True``), not (``False``), or settings.
        observability: the runs' observability settings (default: everything on).
        progress: ``True`` for a bar on a terminal or lines otherwise (on stderr), a
            :class:`~reprise.experiments._progress.Progress`, or ``None``/``False`` for none.
        on_result: called with every item's :class:`ItemResult` (error with its original type).
        config_file: the configuration file the settings were read from (recorded in
            ``config.yaml``; see :func:`~reprise.experiments.load_config`).
        replay: call the target with recorded arguments, each input's text at a path
            (:class:`~reprise.experiments.ArgumentReplay`).
    """

    def __init__(
        self,
        target: Container | Callable[..., Any] | str,
        inputs: InputsSource,
        *,
        iterations: int = 1,
        name: str | None = None,
        max_concurrency: int = 4,
        timeout: float | None = None,
        executor: ItemExecutor | None = None,
        project_root: Path | str = ".",
        run_root: Path | str | None = None,
        experiments_dir: Path | str | None = None,
        root_id: str | None = None,
        outcome_repo: OutcomeSettings | bool = True,
        observability: ObservabilitySettings | None = None,
        progress: Progress | bool | None = None,
        on_result: Callable[[ItemResult], None] | None = None,
        config_file: Path | str | None = None,
        replay: ArgumentReplay | None = None,
    ) -> None:
        if iterations < 1:
            raise ExperimentError(f"iterations must be >= 1, got {iterations}")
        if max_concurrency < 1:
            raise ExperimentError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if timeout is not None and timeout <= 0:
            raise ExperimentError(f"timeout must be > 0 seconds, got {timeout}")
        self.executor: ItemExecutor = executor if executor is not None else LocalExecutor()
        inline = isinstance(self.executor, LocalExecutor) and self.executor.isolation == "inline"
        self.project_root = Path(project_root).resolve()
        self.target = TargetSpec.of(target, portable=not inline, base=self.project_root)
        self.target_object = self.target.resolve()
        self._target_tags = _target_tags(self.target, self.project_root)
        self.inputs_source = str(inputs) if isinstance(inputs, (str, Path)) else "list"
        self.inputs: list[ExperimentInput] = load_inputs(inputs)
        self.replay = replay
        if replay is not None:
            self.inputs = replay.apply(self.inputs)
        self.iterations = iterations
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.run_root = Path(run_root).resolve() if run_root is not None else self.project_root / "runs"
        self.experiments_dir = (
            Path(experiments_dir).resolve() if experiments_dir is not None else self.project_root / "experiments"
        )
        fallback = self.target.name if self.target.ref else "root"
        try:
            self.root_id = validate_id(root_id or self.target_object.id or fallback)
        except DefinitionError as exc:
            raise ExperimentError(f"invalid root id: {exc.message}; pass root_id=") from None
        self.name = check_name(name or self.target_object.id or (self.target.name if self.target.ref else "experiment"))
        self.outcome_settings = (
            outcome_repo if isinstance(outcome_repo, OutcomeSettings) else OutcomeSettings(enabled=outcome_repo)
        )
        self.observability = observability
        self.progress: Progress | None = auto_progress() if progress is True else (progress or None)
        self.on_result = on_result
        self.config_file = str(Path(config_file).resolve()) if config_file is not None else None
        self.folder: ExperimentFolder | None = None
        self.started_at: str | None = None
        self._stop_scope: anyio.CancelScope | None = None
        self._stopping = False
        self._running = False

    # -- configuration -----------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Planned runs: inputs x iterations."""
        return len(self.inputs) * self.iterations

    def config(self) -> dict[str, Any]:
        """The resolved configuration, as ``config.yaml`` holds it."""
        s = self.outcome_settings
        return {
            "name": self.name,
            "folder": self.folder.path.name if self.folder else None,
            "started_at": self.started_at,
            "reprise_version": __version__,
            "python": sys.version.split()[0],
            "config_file": self.config_file,
            "target": self.target.ref,
            "root_id": self.root_id,
            "inputs": {"source": self.inputs_source, "count": len(self.inputs), "copy": "inputs.jsonl"},
            "replay_args": self.replay.describe() if self.replay is not None else None,
            "iterations": self.iterations,
            "total_runs": self.total,
            "max_concurrency": self.max_concurrency,
            "timeout_s": self.timeout,
            "executor": self.executor.describe(),
            "project_root": str(self.project_root),
            "run_root": str(self.run_root),
            "outcome_repo": {
                "enabled": s.enabled,
                "path": str(s.path) if s.path else None,
                "author_name": s.author_name,
                "author_email": s.author_email,
                "commit_per_node": s.commit_per_node,
            },
        }

    # -- resume --------------------------------------------------------------------------------
    @classmethod
    def from_folder(
        cls,
        folder: ExperimentFolder | Path | str,
        *,
        target: Container | Callable[..., Any] | str | None = None,
        executor: ItemExecutor | None = None,
        max_concurrency: int | None = None,
        timeout: float | None = None,
        progress: Progress | bool | None = None,
        observability: ObservabilitySettings | None = None,
        on_result: Callable[[ItemResult], None] | None = None,
    ) -> Experiment:
        """The experiment of an existing folder, ready to finish what it has not run
        (``await experiment.run()``). Settings not given are read from ``config.yaml``."""
        folder = folder if isinstance(folder, ExperimentFolder) else ExperimentFolder(Path(folder))
        config = folder.read_config()
        the_target = target if target is not None else config.get("target")
        if the_target is None:
            raise ExperimentError(
                f"{folder.path}: the target was not importable when the experiment started; pass target="
            )
        repo = config.get("outcome_repo") or {}
        outcome = OutcomeSettings(
            enabled=bool(repo.get("enabled", True)),
            path=Path(repo["path"]) if repo.get("path") else None,
            author_name=str(repo.get("author_name", "reprise")),
            author_email=str(repo.get("author_email", "reprise@localhost")),
            commit_per_node=bool(repo.get("commit_per_node", False)),
        )
        experiment = cls(
            the_target,
            folder.inputs_path,
            iterations=int(config["iterations"]),
            name=str(config["name"]),
            max_concurrency=max_concurrency or int(config.get("max_concurrency") or 4),
            timeout=timeout if timeout is not None else config.get("timeout_s"),
            executor=executor if executor is not None else _executor_from_config(config.get("executor") or {}),
            project_root=config["project_root"],
            run_root=config["run_root"],
            root_id=config.get("root_id"),
            outcome_repo=outcome,
            observability=observability,
            progress=progress,
            on_result=on_result,
        )
        experiment.inputs_source = str((config.get("inputs") or {}).get("source", "list"))
        experiment.config_file = config.get("config_file")
        experiment.folder = folder
        experiment.started_at = config.get("started_at")
        return experiment

    @classmethod
    async def resume(cls, folder: ExperimentFolder | Path | str, **options: Any) -> ExperimentSummary:
        """Finish an interrupted experiment without re-running finished items (``runs.jsonl`` is
        the record); ``options`` as for :meth:`from_folder`."""
        return await cls.from_folder(folder, **options).run()

    # -- running -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop launching runs and cancel those running (call from the experiment's event loop);
        :meth:`run` then writes the summary and returns it, ``interrupted`` set."""
        self._stopping = True
        if self._stop_scope is not None:
            self._stop_scope.cancel()

    def _open_folder(self) -> tuple[ExperimentFolder, set[tuple[str, int]]]:
        if self.folder is not None:
            self.folder.prepare_runs_file()
            return self.folder, self.folder.finished_keys()
        self.started_at = now_iso()
        self.folder = ExperimentFolder.create(self.experiments_dir, self.name)
        write_inputs_jsonl(self.folder.inputs_path, self.inputs)
        self.folder.write_config(self.config())
        self.folder.prepare_runs_file()
        return self.folder, set()

    def _jobs(self, done: set[tuple[str, int]], backend: str) -> Iterator[ItemJob]:
        # Iteration-major: every input once before any input twice, so an early look at the
        # folder (or an interrupted experiment) covers all inputs.
        workers_commit = self.executor.workers_commit
        job_outcome = self.outcome_settings if workers_commit else OutcomeSettings(enabled=False)
        item_backend = getattr(self.executor, "backend", None) or backend
        index = 0
        for iteration in range(1, self.iterations + 1):
            for item in self.inputs:
                index += 1
                if (item.id, iteration) in done:
                    continue
                tags = {"experiment": self.name, "input_id": item.id, "iteration": str(iteration)}
                if self.folder is not None:
                    tags["experiment_folder"] = self.folder.path.name
                if item.persona:
                    tags["persona"] = item.persona
                if item.tags:
                    tags["input_tags"] = ",".join(item.tags)
                tags.update(self._target_tags)
                yield ItemJob(
                    index=index,
                    input=item,
                    iteration=iteration,
                    target=self.target,
                    root_id=self.root_id,
                    project_root=str(self.project_root),
                    run_root=str(self.run_root),
                    run_id_prefix=self.name,
                    tags=tags,
                    timeout=self.timeout,
                    outcome_repo=job_outcome,
                    observability=self.observability,
                    backend=item_backend,
                    ship=self.executor.ships_run_dirs,
                )

    async def run(self, *, handle_signals: bool = False) -> ExperimentSummary:
        """Run every (input, iteration) not yet finished and return the summary.

        With ``handle_signals`` (the CLI), the first Ctrl-C or SIGTERM calls :meth:`stop`;
        a second one raises ``KeyboardInterrupt``. Without it, Ctrl-C or a cancellation
        still writes the summary (``interrupted``) before propagating."""
        if self._running:
            raise ExperimentError(f"experiment {self.name} is already running")
        self._stopping = False
        backend = _current_backend()
        folder, done = self._open_folder()
        self._running = True
        done_failures = 0
        if done:
            done_failures = sum(
                1 for line in folder.iter_lines() if line.get("status") in ("failed", "timeout", "crashed")
            )
        from reprise.observability._telemetry import JsonlSink

        sink = JsonlSink(folder.runs_path)
        trace_summary = JsonlSink(folder.trace_summary_path)
        if self.progress is not None:
            self.progress.start(self.name, self.total, len(done), done_failures)
        options = SessionOptions(max_concurrency=self.max_concurrency, log_path=folder.workers_log, backend=backend)
        io_limiter = anyio.CapacityLimiter(4)
        finish = partial(self._finish, sink=sink, trace_summary=trace_summary, io_limiter=io_limiter)
        completed = False
        try:
            async with anyio.create_task_group() as outer:
                if handle_signals:
                    outer.start_soon(self._watch_signals)
                with anyio.CancelScope() as self._stop_scope:
                    if self._stopping:
                        self._stop_scope.cancel()
                    async with self.executor.session(options) as session:
                        await self._launch_all(session, self._jobs(done, backend), finish)
                    completed = not self._stop_scope.cancel_called
                outer.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self._stop_scope = None
                self._running = False
                sink.close()
                trace_summary.close()
                summary = summarize(
                    folder,
                    total=self.total,
                    target=self.target.ref,
                    started_at=self.started_at or now_iso(),
                    ended_at=now_iso(),
                    interrupted=not completed,
                )
                if self.progress is not None:
                    self.progress.finish(not completed)
        return summary

    async def _launch_all(
        self, session: ExecutorSession, jobs: Iterator[ItemJob], finish: Callable[[ItemJob, ItemResult], Any]
    ) -> None:
        slots = anyio.Semaphore(self.max_concurrency)

        async def one(job: ItemJob) -> None:
            try:
                await session.run(job, partial(finish, job))
            finally:
                slots.release()

        async with anyio.create_task_group() as tg:
            for job in jobs:
                # Acquire before starting: at most max_concurrency items (and tasks) exist.
                await slots.acquire()
                tg.start_soon(one, job)

    async def _finish(
        self, job: ItemJob, result: ItemResult, *, sink: Any, trace_summary: Any, io_limiter: anyio.CapacityLimiter
    ) -> None:
        """One item's result: take in a shipped run directory, record a lost run, commit from
        the client where workers do not, append the ``runs.jsonl`` line."""
        with anyio.CancelScope(shield=True):
            record = result.record
            try:
                if result.payload is not None and record.run_id is not None:
                    await anyio.to_thread.run_sync(
                        unpack_run_dir, result.payload, self.run_root, record.run_id, limiter=io_limiter
                    )
                    result.payload = None
                if result.lost:
                    await anyio.to_thread.run_sync(
                        finalize_lost_run,
                        job,
                        result,
                        self.run_root,
                        self.outcome_settings,
                        self.project_root,
                        limiter=io_limiter,
                    )
                elif not self.executor.workers_commit and record.run_id is not None:
                    await anyio.to_thread.run_sync(
                        partial(
                            commit_run_outcomes,
                            self.run_root / record.run_id,
                            self.outcome_settings,
                            self.project_root,
                            declared=result.declared,
                        ),
                        limiter=io_limiter,
                    )
            except (RepriseError, OSError) as exc:
                # The run itself is recorded; what went wrong taking it in is noted on its line.
                setattr(record, "client_error", str(exc))  # noqa: B010 - an extra field of the line
            sink.write(record.model_dump_json().encode() + b"\n")
            trace_summary.write(TraceSummaryLine.of(job.input, record).model_dump_json().encode() + b"\n")
            if self.progress is not None:
                self.progress.advance(record)
            if self.on_result is not None:
                self.on_result(result)

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if self._stopping:
                    raise KeyboardInterrupt
                self.stop()

    def run_sync(self, *, backend: str = "asyncio", handle_signals: bool = False) -> ExperimentSummary:
        """Run from synchronous code: ``Experiment(...).run_sync()``."""
        return anyio.run(partial(self.run, handle_signals=handle_signals), backend=backend)

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, {len(self.inputs)} inputs x {self.iterations}, {self.executor!r})"


def _executor_from_config(config: dict[str, Any]) -> ItemExecutor:
    kind = config.get("kind", "local")
    if kind == "local":
        return LocalExecutor(
            config.get("isolation", "process"),
            workers=config.get("workers"),
            max_items_per_worker=config.get("max_items_per_worker", 1000),
        )
    if kind == "dask":
        from reprise.experiments._dask_executor import DaskExecutor

        address = config.get("address")
        if not address:
            raise ExperimentError("config.yaml names a Dask executor without an address; pass executor=")
        return DaskExecutor(str(address), shared_filesystem=bool(config.get("shared_filesystem", False)))
    raise ExperimentError(f"unknown executor kind {kind!r} in config.yaml")


def _target_tags(spec: TargetSpec, project_root: Path) -> dict[str, str]:
    """Run tags that let ``reprise rerun RUN_ID`` find the definition again, when it has a name
    another process can import (a pickled or script-local target has none)."""
    ref = spec.ref
    if ref is None or (ref.startswith("__main__:") and spec.file is None):
        return {}
    attr = ref.rsplit(":", 1)[1]
    if spec.file is not None:
        ref = f"{spec.file}:{attr}"  # an absolute file path works from any project root
    return {TARGET_TAG: ref, PROJECT_TAG: str(project_root)}
