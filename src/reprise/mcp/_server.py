"""The reprise MCP server: runs, alerts, metrics, logs and experiments as tools for an LLM agent.

Built on the official ``mcp`` SDK's :class:`~mcp.server.mcpserver.MCPServer` (FastMCP before
mcp 2). Every reading tool returns the ``data`` of the matching ``reprise ... --json`` command,
made by the same :class:`reprise.Api` call, so an agent reads the same JSON whichever way it
asks. The tools that start something (a run, an experiment, a re-run, a resume) run the
``reprise`` command itself in a child process, and exist only in effect with ``--allow-run``:
without it they answer with a tool error saying so.

A bad argument (an unknown or ambiguous run, a malformed instant, a level that does not exist)
is a tool error whose message says what was wrong; the server goes on serving.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from reprise._api import Api
from reprise._version import __version__
from reprise.errors import RepriseError

__all__ = ["MUTATING_TOOLS", "build_server"]

P = ParamSpec("P")
T = TypeVar("T")

#: The tools that start runs: refused unless the server was started with ``--allow-run``.
MUTATING_TOOLS = ("start_run", "start_experiment", "rerun", "resume")

_INSTRUCTIONS = (
    "reprise records runs of agent flows and scripts: metrics (reprise.log), alerts (reprise.alert), "
    "logs and outcomes. A RUN argument is a run id, a run name, 'latest' (or -1, -2...), or a unique "
    "prefix. Poll get_alerts with since = the newest timestamp you have seen: the comparison is strict, "
    "so each alert comes back once."
)


def _tool_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn the errors a caller can cause into tool errors with their message (the SDK shows
    any other exception as a bare 'Error executing tool')."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except ToolError:
            raise
        except (RepriseError, ValueError, OSError) as exc:
            raise ToolError(str(exc) or type(exc).__name__) from None

    return wrapper


def build_server(
    run_root: Path | str,
    *,
    experiments_dir: Path | str | None = None,
    project_root: Path | str | None = None,
    allow_run: bool = False,
) -> MCPServer[Any]:
    """The MCP server over the runs under ``run_root`` (and the experiments under
    ``experiments_dir``, default ``<project root>/experiments``). ``allow_run`` lets clients
    start runs and experiments (see the module docstring)."""
    run_root = Path(run_root).absolute()
    project = Path(project_root).absolute() if project_root is not None else Path.cwd()
    experiments = Path(experiments_dir).absolute() if experiments_dir is not None else project / "experiments"
    api = Api(run_root)
    server: MCPServer[Any] = MCPServer("reprise", version=__version__, instructions=_INSTRUCTIONS)

    # -- reading --------------------------------------------------------------------------
    @server.tool()
    @_tool_errors
    def list_runs(
        project: str | None = None, status: list[str] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The runs, newest first (of one project if given; statuses: running, completed, failed,
        cancelled, crashed): the data of `reprise runs --json`."""
        if limit is not None and limit < 0:
            raise ToolError("limit must be >= 0")
        return [r.to_json() for r in api.runs(project, status=status, limit=limit)]

    @server.tool()
    @_tool_errors
    def get_run(run: str) -> dict[str, Any]:
        """One run: its listing (name, project, config, status, duration, error), metadata,
        totals and element tree: the data of `reprise show RUN --json`."""
        return api.summary(run)

    @server.tool()
    @_tool_errors
    def get_alerts(
        run: str | None = None,
        project: str | None = None,
        since: str | None = None,
        level: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Alerts newest first, of one run, of a project's runs, or of every run; only those
        strictly after `since` (ISO 8601: 2025-06-15T14:30:00Z, ...+02:00, naive is UTC) and at
        or above `level` (info, warn, error): the data of `reprise alerts --json`."""
        try:
            return api.alerts(project, since=since, level=level, run=run, limit=limit)
        except ValueError as exc:
            raise ToolError(f"since/level: {exc}") from None

    @server.tool()
    @_tool_errors
    def get_metric(run: str, metric: str | None = None) -> list[dict[str, Any]]:
        """What a run logged with reprise.log, in order (only the lines holding `metric`, if
        given): each {timestamp, step, metrics: {...}}; the data of `reprise metrics RUN --json`."""
        return api.metrics(api.resolve(run), name=metric)

    @server.tool()
    @_tool_errors
    def get_logs(run: str, node: str | None = None, level: str | None = None) -> list[dict[str, Any]]:
        """A run's structured log lines, in order (of one element and those below it; at or above
        debug, info, warning or error): the data of `reprise logs RUN --json`."""
        return api.logs(api.resolve(run), node=node, level=level)

    @server.tool()
    @_tool_errors
    def list_experiments() -> list[dict[str, Any]]:
        """The experiments (newest first): name, folder, path and summary (the data `reprise
        experiment ... --json` printed when it ended; null while one runs or if it was cut)."""
        return [_experiment_json(folder) for folder in _experiment_folders(experiments)]

    @server.tool()
    @_tool_errors
    def get_experiment(name: str) -> dict[str, Any]:
        """One experiment by name (its latest folder), folder name or path: name, folder, path,
        summary."""
        from reprise.experiments import ExperimentFolder

        return _experiment_json(ExperimentFolder.find(experiments, name))

    # -- starting (with --allow-run) --------------------------------------------------------
    def refuse(tool: str) -> None:
        if not allow_run:
            raise ToolError(
                f"{tool} is refused: this reprise MCP server was started without --allow-run, so it "
                "only reads runs. Restart it with 'reprise mcp --allow-run' to let clients start runs."
            )

    def launch(command: list[str], wait: bool, *, find_run: bool) -> dict[str, Any]:
        return _launch(command, wait, run_root=run_root, project_root=project, find_run=find_run)

    @server.tool()
    @_tool_errors
    def start_run(target: str, inputs: dict[str, Any] | None = None, wait: bool = False) -> dict[str, Any]:
        """Run MODULE:OBJECT (a flow or agent) with initial `inputs`. `wait`: return the data of
        `reprise run --json` when it ends; else return at once with its pid and run id."""
        refuse("start_run")
        return launch(["run", target, *_input_args(inputs)], wait, find_run=True)

    @server.tool()
    @_tool_errors
    def start_experiment(
        target: str, inputs_file: str, iterations: int = 1, parallel: int | None = None, wait: bool = False
    ) -> dict[str, Any]:
        """Run MODULE:OBJECT over every input of `inputs_file` (YAML, JSON or JSONL). `wait`:
        return the experiment's summary when it ends; else return at once with its pid."""
        refuse("start_experiment")
        command = ["experiment", target, "--inputs", inputs_file, "--iterations", str(iterations)]
        if parallel is not None:
            command += ["--parallel", str(parallel)]
        return launch([*command, "--experiments-dir", str(experiments)], wait, find_run=False)

    @server.tool()
    @_tool_errors
    def rerun(run: str, from_path: str, wait: bool = False) -> dict[str, Any]:
        """Re-run `run` from the hierarchy path `from_path`, reusing everything before it."""
        refuse("rerun")
        return launch(["rerun", api.resolve(run), "--from", from_path], wait, find_run=True)

    @server.tool()
    @_tool_errors
    def resume(run: str, wait: bool = False) -> dict[str, Any]:
        """Continue a failed, cancelled or crashed run where it stopped."""
        refuse("resume")
        return launch(["resume", api.resolve(run)], wait, find_run=True)

    return server


def _experiment_folders(base: Path) -> list[Any]:
    from reprise.experiments import ExperimentError, ExperimentFolder
    from reprise.experiments._folder import FOLDER_PATTERN

    folders = []
    for path in base.iterdir() if base.is_dir() else ():
        if FOLDER_PATTERN.match(path.name):
            try:
                folders.append(ExperimentFolder.find(base, path.name))
            except ExperimentError:
                continue  # not an experiment's folder
    # The folder name ends with its UTC start stamp.
    return sorted(folders, key=lambda f: f.path.name[-15:], reverse=True)


def _experiment_json(folder: Any) -> dict[str, Any]:
    return {"name": folder.name, "folder": folder.path.name, "path": str(folder.path), "summary": folder.read_summary()}


def _input_args(inputs: dict[str, Any] | None) -> list[str]:
    args: list[str] = []
    for key, value in (inputs or {}).items():
        args += ["--input", f"{key}={json.dumps(value)}"]
    return args


def _launch(command: list[str], wait: bool, *, run_root: Path, project_root: Path, find_run: bool) -> dict[str, Any]:
    """Run ``reprise <command> --json`` in a child process. Waiting: the envelope's ``data``
    (a failed run is data, not a tool error; a refused command is a tool error). Not waiting:
    the child's pid, where its envelope will be written, and (for a run) its run id and name
    once the run has started."""
    argv = [sys.executable, "-m", "reprise.cli", *command, "--run-root", str(run_root), "--json"]
    argv += ["--progress", "none", "--project-root", str(project_root)]
    if wait:
        proc = subprocess.run(argv, cwd=project_root, capture_output=True, text=True)
        return _envelope_data(proc.stdout, proc.stderr)
    outputs = run_root / ".mcp"
    outputs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
    out_path = outputs / f"{command[0]}_{stamp}_{os.getpid()}_{time.monotonic_ns()}.json"
    with open(out_path, "wb") as out, open(out_path.with_suffix(".err"), "wb") as err:
        child = subprocess.Popen(argv, cwd=project_root, stdout=out, stderr=err, start_new_session=True)
    started: dict[str, Any] = {"pid": child.pid, "output": str(out_path), "command": ["reprise", *command]}
    if find_run:
        started.update(_run_of(child, run_root, out_path))
    return started


def _run_of(child: subprocess.Popen[bytes], run_root: Path, out_path: Path) -> dict[str, Any]:
    """The run the child process started (found by its pid in the run index), once it has."""
    index = Api(run_root).index
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        for info in index.runs(status=("running", "completed", "failed", "cancelled"), limit=20):
            meta_pid = _pid_of(info.run_dir)
            if meta_pid == child.pid:
                return {"run_id": info.run_id, "name": info.name, "status": info.status.value}
        if child.poll() is not None:
            # Ended before a run was found: refused (bad target, bad input), or very quick.
            return _envelope_data(out_path.read_text(), out_path.with_suffix(".err").read_text())
        time.sleep(0.1)
    return {"run_id": None, "note": "the run has not started yet; list_runs will show it"}


def _pid_of(run_dir: Path) -> int | None:
    try:
        data = json.loads((run_dir / ".trace" / "metadata.json").read_bytes())
    except (OSError, ValueError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    return pid if isinstance(pid, int) else None


def _envelope_data(stdout: str, stderr: str) -> dict[str, Any]:
    try:
        envelope = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ToolError(f"the reprise command gave no answer: {stderr.strip()[-2000:] or 'no output'}") from None
    if not envelope.get("ok"):
        raise ToolError(str((envelope.get("error") or {}).get("message") or "the reprise command failed"))
    data = envelope.get("data")
    return data if isinstance(data, dict) else {"data": data}
