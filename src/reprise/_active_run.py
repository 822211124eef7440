"""``reprise.init``: the active run of a script that is not a flow.

A training loop, an evaluation script or an agent's experiment gets a run like any flow's (a run
directory with its trace, metrics and logs, an entry in the run index, a git outcome branch)
without being written as nodes::

    import reprise

    run = reprise.init(project="cifar10-hparam-search", config={"lr": 1e-3, "epochs": 50})
    for epoch in range(50):
        reprise.log({"train_loss": train(), "val_loss": evaluate()})
        if diverged:
            reprise.alert("Training diverged", "lr is likely too high", level="error")
    run.finish()

or ``with reprise.init(...) as run:``. The run becomes the current run of the process: every
``reprise.log``/``reprise.alert`` without ``run=`` goes to it, from any thread, except inside a
flow run (whose nodes write to their own run).

How it ends (docs/tracking.md has the table):

* ``finish()``, or the ``with`` block's normal exit: ``completed``.
* an exception out of the ``with`` block, or uncaught in the script: ``failed`` with the error
  (``cancelled`` for Ctrl-C); ``sys.exit(n)`` with ``n`` other than 0 in the block: ``failed``.
* the script ends without ``finish()``: an exit handler records it (``completed``, or ``failed``
  with the uncaught error).
* a new ``init()`` in the same process: the previous run is finished first (``completed``).
* the process is killed (SIGKILL, power loss): nothing can record it; its metadata still says
  ``running`` and every reader shows it ``crashed`` once the process is gone.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from reprise.errors import RepriseError, RunSetupError
from reprise.run._context import RunContext
from reprise.run._current import set_process_scope
from reprise.run._files import dump_json, write_bytes_atomic
from reprise.run._status import RunStatus
from reprise.tracking import AlertLevel, AlertSettings, alert, log, read_metrics, set_alert_settings

if TYPE_CHECKING:
    from reprise.observability import ObservabilitySettings
    from reprise.run import OutcomeSettings

__all__ = ["Run", "active_run", "finish", "init"]

_MISSING: Any = object()
_LOCK = threading.RLock()
_ACTIVE: Run | None = None
_EXIT_HANDLER_PID: int | None = None


class Run:
    """A run started by :func:`init` (see the module docstring). Its ``RunContext`` is
    :attr:`context`."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self._pid = os.getpid()
        self._started = time.time()

    # -- identity --------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        """The run id (``run_YYYYMMDD_HHMMSS_xxxxxx``)."""
        return self.context.run_id

    @property
    def name(self) -> str:
        """The run's name, unique within its project."""
        assert self.context.name is not None  # drawn by setup_run
        return self.context.name

    @property
    def project(self) -> str:
        """The project the run belongs to."""
        return self.context.project or self.context.root_component_id

    @property
    def config(self) -> dict[str, Any]:
        """The run's configuration, as stored (JSON data)."""
        return dict(self.context.config or {})

    @property
    def run_dir(self) -> Path:
        """The run's directory."""
        return self.context.require_run_dir().path

    @property
    def status(self) -> RunStatus:
        """``running`` until the run is finished, then how it ended."""
        return self.context.status or RunStatus.RUNNING

    # -- recording -------------------------------------------------------------------------
    def log(self, metrics: Mapping[str, Any] | str, value: Any = _MISSING, step: int | None = None) -> int:
        """Record metrics at ``step`` (default: one more than the last): ``run.log({"loss":
        0.2, "acc": 0.9})`` or ``run.log("loss", 0.2, step=3)``. Returns the step."""
        if isinstance(metrics, str):
            if value is _MISSING:
                raise RepriseError(f"run.log({metrics!r}) needs a value: run.log(name, value, step=None)")
            return log({metrics: value}, step, run=self.context)
        if value is not _MISSING:
            raise RepriseError("run.log(mapping) takes no value: use run.log({name: value}, step=...)")
        return log(metrics, step, run=self.context)

    def alert(self, title: str, text: str = "", level: AlertLevel | str = AlertLevel.INFO) -> dict[str, Any]:
        """Raise an alert in this run (see :func:`reprise.alert`)."""
        return alert(title, text, level, run=self.context)

    # -- ending ----------------------------------------------------------------------------
    def finish(self, status: RunStatus | str = RunStatus.COMPLETED, error: str | None = None) -> None:
        """Record the run as ``status`` (``completed`` by default; ``failed`` or ``cancelled``
        with ``error``), write its trace, commit its outcome, and stop it being the current
        run. Finishing a finished run changes nothing."""
        global _ACTIVE
        with _LOCK:
            if _ACTIVE is self:
                _ACTIVE = None
                set_process_scope(None)
        ctx = self.context
        if ctx.status is not None and ctx.status.finished:
            return
        final = RunStatus(status)
        self._write_outcome(final, error)
        ctx.complete_run(final, error)

    def _write_outcome(self, status: RunStatus, error: str | None) -> None:
        """The root element of a script run: its ``result.json`` (status, times, error) and its
        ``outcome.json`` (the config and the last value of each metric), which the outcome
        commit holds and ``reprise diff`` compares."""
        ctx = self.context
        last: dict[str, Any] = {}
        for line in read_metrics(self.run_dir):
            metrics = line.get("metrics")
            if isinstance(metrics, dict):
                last.update(metrics)
        root = self.run_dir / ctx.root_component_id
        try:
            root.mkdir(exist_ok=True)
            write_bytes_atomic(root / "outcome.json", dump_json({"config": ctx.config, "metrics": last}))
            result: dict[str, Any] = {
                "path": ctx.root_component_id,
                "element_type": "script",
                "status": status.value,
                "started_at": _iso(self._started),
                "ended_at": _iso(time.time()),
                "duration_s": round(time.time() - self._started, 6),
            }
            if error:
                result["error"] = {"type": "Error", "message": error}
            write_bytes_atomic(root / "result.json", dump_json(result))
        except (OSError, ValueError) as exc:
            # The run's status matters more than this summary: record the run regardless.
            if ctx.telemetry is not None:
                ctx.telemetry.logger.warning("could not write the script run's outcome", error=str(exc))

    def __enter__(self) -> Run:
        return self

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        status, error = _ending(exc)
        self.finish(status, error)

    def __repr__(self) -> str:
        return f"Run({self.name!r}, project={self.project!r}, run_id={self.run_id!r}, status={self.status.value})"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1_000_000):06d}Z"


def _ending(exc: BaseException | None) -> tuple[RunStatus, str | None]:
    """How a run ends when its block or script ends with ``exc`` (``None``: normally)."""
    if exc is None:
        return RunStatus.COMPLETED, None
    if isinstance(exc, SystemExit):
        if exc.code in (0, None):
            return RunStatus.COMPLETED, None
        return RunStatus.FAILED, f"SystemExit: exit code {exc.code}"
    if isinstance(exc, KeyboardInterrupt):
        return RunStatus.CANCELLED, "cancelled (KeyboardInterrupt)"
    message = str(exc)
    return RunStatus.FAILED, f"{type(exc).__name__}: {message}" if message else type(exc).__name__


_ID_CHARS = re.compile(r"[^A-Za-z0-9_]")


def _root_id(project: str) -> str:
    """The root component id of a project's script runs: the project name as an id."""
    text = _ID_CHARS.sub("_", project)
    return text if text[:1].isalpha() or text[:1] == "_" else f"_{text}"


def init(
    project: str,
    name: str | None = None,
    config: Mapping[str, Any] | Any = None,
    *,
    run_root: Path | str | None = None,
    project_root: Path | str | None = None,
    tags: Mapping[str, str] | None = None,
    webhook_url: str | None = None,
    webhook_level: AlertLevel | str = AlertLevel.WARN,
    webhook_format: str | None = None,
    outcome_repo: OutcomeSettings | bool = True,
    observability_settings: ObservabilitySettings | None = None,
) -> Run:
    """Start a run of ``project`` and make it the current run of the process.

    Args:
        project: groups runs (``Api().runs(project)``); any printable name.
        name: the run's name, unique within the project; default: a fresh one such as
            ``hungry-brownie-557``. A name the project already has is refused.
        config: the run's configuration (a mapping, dataclass or pydantic model; JSON data).
        run_root: where the run directory goes: default ``$REPRISE_RUN_ROOT``, else ``./runs``.
        project_root: the project's directory (default: the current directory).
        tags: free-form labels stored in the metadata.
        webhook_url: POST alerts at or above ``webhook_level`` there (Slack, Discord or any
            JSON endpoint); never written to the run. Default: ``$REPRISE_ALERT_WEBHOOK``.
            ``webhook_format`` (``slack``, ``discord``, ``generic``) overrides the format told
            from the URL's host.
        outcome_repo: commit the run's outcome to git (see :class:`RunContext`).
        observability_settings: tracing/metrics/logging settings (see :class:`RunContext`).

    A run still active in this process is finished first (``completed``). See the module
    docstring for how the run ends."""
    global _ACTIVE
    from reprise.run._names import check_project

    project = check_project(project)
    root = project_root if project_root is not None else Path.cwd()
    if run_root is None:
        run_root = os.environ.get("REPRISE_RUN_ROOT") or Path.cwd() / "runs"
    ctx = RunContext(
        root_component_id=_root_id(project),
        project_root=root,
        run_root=run_root,
        observability_settings=observability_settings,
        tags=tags,
        outcome_repo=outcome_repo,
        name=name,
        project=project,
        config=config,
    )
    if webhook_url is not None:
        try:
            settings = AlertSettings(
                webhook_url=webhook_url, min_level=AlertLevel.parse(webhook_level), format=webhook_format
            )
        except ValueError as exc:
            raise RunSetupError(f"reprise.init(): {exc}") from None
        set_alert_settings(ctx, settings)
    with _LOCK:
        previous = _ACTIVE
        if previous is not None:
            previous.finish()
        ctx.setup_run()
        run = Run(ctx)
        _ACTIVE = run
        set_process_scope(ctx)
        _register_exit_handler()
    return run


def active_run() -> Run | None:
    """The run :func:`init` started in this process and not yet finished, if any."""
    return _ACTIVE


def finish(status: RunStatus | str = RunStatus.COMPLETED, error: str | None = None) -> None:
    """Finish the active run (see :meth:`Run.finish`); nothing to do without one."""
    run = _ACTIVE
    if run is not None:
        run.finish(status, error)


def _register_exit_handler() -> None:
    """Once per process (a forked child registers its own): finish the active run at exit.

    Registered after the run's telemetry was set up, so it runs before the exit handlers of
    the libraries it uses (they run last-registered first)."""
    global _EXIT_HANDLER_PID
    if _EXIT_HANDLER_PID != os.getpid():
        _EXIT_HANDLER_PID = os.getpid()
        atexit.register(_finish_at_exit)


def _finish_at_exit() -> None:
    run = _ACTIVE
    if run is None or run._pid != os.getpid():
        return  # nothing active, or the run of the parent of a forked process
    # An exception the script did not catch was printed and kept in sys.last_value.
    status, error = _ending(getattr(sys, "last_value", None))
    try:
        run.finish(status, error)
    except Exception as exc:  # the process is ending: say why the run could not be recorded
        print(f"reprise: could not finish run {run.run_id}: {exc}", file=sys.stderr)
