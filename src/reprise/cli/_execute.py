"""``reprise run``, ``reprise rerun`` and ``reprise resume``: start runs from the terminal.

``run`` records what it ran (``MODULE:OBJECT`` and the project root) in the run's tags, so
``rerun`` and ``resume`` need only the run id; ``--target`` overrides it (for a run started
from Python, or after the definition moved).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from reprise._targets import PROJECT_TAG, TARGET_TAG, import_target, split_reference
from reprise.cli._common import (
    EXIT_OK,
    EXIT_RUN_CANCELLED,
    EXIT_RUN_FAILED,
    RUN_HELP,
    Output,
    UsageError,
    add_common,
    add_progress,
    format_duration,
    resolve_run,
    run_root_of,
)
from reprise.cli._progress import RunProgress
from reprise.dsl._container import AgentDefinition, Container
from reprise.errors import TargetError

__all__ = ["PROJECT_TAG", "TARGET_TAG", "load_target", "parse_inputs", "register"]


def register(subparsers: Any) -> None:
    """Add ``run``, ``rerun`` and ``resume``."""
    p = subparsers.add_parser(
        "run",
        help="run an agent or flow definition",
        description="Run MODULE:OBJECT (a flow, an agent, or a function run as a one-node flow). The root id is the "
        "object's id if it has one, else its name. Shows progress on stderr and ends with the run "
        "id, status and run directory. Exit code 0 completed, 1 failed, 130 cancelled, 2 error.",
    )
    p.add_argument("target", metavar="MODULE:OBJECT", help="e.g. myproject.flows:summarize or flows.py:summarize")
    _run_options(p)
    p.set_defaults(handler=_run)

    p = subparsers.add_parser(
        "rerun",
        help="re-run a run from a hierarchy path, reusing everything before it",
        description="Start a new run that reuses the results of RUN before HIERARCHY_PATH and "
        "executes that element and everything after it again.",
    )
    p.add_argument("run_id", metavar="RUN", help=RUN_HELP)
    p.add_argument("--from", dest="start_path", metavar="HIERARCHY_PATH", required=True, help="e.g. agent.flow1.node3")
    p.add_argument("--target", metavar="MODULE:OBJECT", help="what to run (default: what RUN ran)")
    _reused_nodes_option(p)
    _run_options(p)
    p.set_defaults(handler=_rerun)

    p = subparsers.add_parser(
        "resume",
        help="continue a failed, cancelled or crashed run where it stopped",
        description="Start a new run that reuses every element RUN completed and executes the rest.",
    )
    p.add_argument("run_id", metavar="RUN", help=RUN_HELP)
    p.add_argument("--target", metavar="MODULE:OBJECT", help="what to run (default: what RUN ran)")
    _reused_nodes_option(p)
    _run_options(p)
    p.set_defaults(handler=_rerun)

    p = subparsers.add_parser(
        "materialize",
        help="make a re-run stand alone: its linked reused nodes become directories of their own",
        description="Replace each reused node of RUN that is a link into an earlier run by its own "
        "directory (hard links to the same files, result.json marked reused), as --reused-nodes copy "
        "makes them; afterwards the earlier runs can be deleted. Nothing to do is not an error.",
    )
    p.add_argument("run_id", metavar="RUN", help=RUN_HELP)
    add_common(p)
    p.set_defaults(handler=_materialize)


def _materialize(args: argparse.Namespace, out: Output) -> int:
    from reprise.run._directory import RunDirectory
    from reprise.runners._reuse import materialize_reused

    run = RunDirectory.find(run_root_of(args), resolve_run(args, args.run_id))
    done = materialize_reused(run.path)
    out.emit(
        {"run_id": run.run_id, "materialized": done},
        lambda: (
            f"{run.run_id}: {len(done)} reused node(s) made into directories" + "".join(f"\n  {path}" for path in done)
        ),
    )
    return EXIT_OK


def _reused_nodes_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reused-nodes",
        choices=("link", "copy"),
        default="link",
        help="how reused nodes appear in the new run: 'link' (default) a symbolic link to the node's "
        "directory in the run where it executed; 'copy' a self-contained directory (to archive or ship "
        "the run, or delete the earlier ones)",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an initial input (repeatable); VALUE is parsed as JSON when it parses, else kept as a string",
    )
    p.add_argument("--static-inputs", metavar="FILE", help='a JSON file {"node id or path": {...input...}}')
    p.add_argument("--prefix", metavar="P", help="run id prefix (P_run_YYYYMMDD_HHMMSS_xxxxxx)")
    p.add_argument(
        "--project-root", metavar="DIR", help="the project directory, imported from (default: the current directory)"
    )
    add_progress(p)
    add_common(p)


# -- loading the definition --------------------------------------------------------------------
def load_target(spec: str, project_root: Path) -> tuple[Container, str]:
    """Import ``MODULE:OBJECT`` (MODULE dotted, or a ``.py`` file relative to ``project_root``)
    and return the definition and its root id (its ``id``, else the object's name)."""
    root = str(project_root)
    if root not in sys.path:
        # Like `python -m`: the project's own modules import from its root.
        sys.path.insert(0, root)
    try:
        obj = import_target(spec, project_root)
        _, attr = split_reference(spec)
    except TargetError as exc:
        raise UsageError(exc.message) from None
    return obj, obj.id or attr.rsplit(".", 1)[-1]


def parse_inputs(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict; each VALUE parsed as JSON when it parses."""
    inputs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--input {item!r}: expected KEY=VALUE")
        try:
            inputs[key.strip()] = json.loads(raw)
        except ValueError:
            inputs[key.strip()] = raw
    return inputs


# -- the handlers ------------------------------------------------------------------------------
def _run(args: argparse.Namespace, out: Output) -> int:
    project_root = Path(args.project_root or ".").resolve()
    definition, root_id = load_target(args.target, project_root)
    return _execute(args, out, definition, root_id, args.target, project_root, previous=None, start=None)


def _rerun(args: argparse.Namespace, out: Output) -> int:
    from reprise._api import Api

    run_id = resolve_run(args, args.run_id)
    meta = Api(run_root_of(args)).run_dir(run_id).read_metadata()
    target = args.target or meta.tags.get(TARGET_TAG)
    if not target:
        raise UsageError(
            f"run {run_id} does not record what it ran (it was not started with 'reprise run'): "
            "pass --target MODULE:OBJECT"
        )
    project_root = Path(args.project_root or meta.tags.get(PROJECT_TAG) or ".").resolve()
    definition, _ = load_target(target, project_root)
    start = getattr(args, "start_path", None)
    return _execute(args, out, definition, meta.root_component_id, target, project_root, previous=run_id, start=start)


def _execute(
    args: argparse.Namespace,
    out: Output,
    definition: Container,
    root_id: str,
    target: str,
    project_root: Path,
    *,
    previous: str | None,
    start: str | None,
) -> int:
    from reprise.errors import RunFailedError
    from reprise.observability import ObservabilitySettings
    from reprise.run._context import RunContext
    from reprise.runners import AgentRunner, FlowRunner
    from reprise.runners._runner import ComponentRunner

    progress = RunProgress.choose(out.stderr, args.progress)
    # With --progress none, nothing is listening at all.
    listeners = [progress] if progress.mode != "none" else []
    ctx = RunContext(
        root_component_id=root_id,
        project_root=project_root,
        run_root=run_root_of(args),
        observability_settings=ObservabilitySettings(element_listeners=listeners),
        previous_run_id=previous,
        start_hierarchy_path=start,
        initial_inputs=parse_inputs(args.inputs),
        tags={TARGET_TAG: target, PROJECT_TAG: str(project_root)},
        reused_nodes=getattr(args, "reused_nodes", "link"),
    )
    if args.static_inputs:
        ctx.read_static_inputs(Path(args.static_inputs))
    runner: ComponentRunner[Any] = (
        AgentRunner(definition, ctx) if isinstance(definition, AgentDefinition) else FlowRunner(definition, ctx)  # type: ignore[arg-type]
    )
    # Everything that can be refused (static inputs, the re-run start path, the definition
    # against the earlier run) is checked here, before a run directory exists.
    runner.setup_run(args.prefix)
    run_dir = ctx.require_run_dir()
    progress.start(run_dir.run_id, str(run_dir.path))
    # With --json, stdout carries exactly one JSON document: what nodes print (and the
    # programs they start) goes to stderr while the run executes.
    saved_stdout = _stdout_to_stderr() if out.json else None
    try:
        runner.run_sync()
    except RunFailedError:
        pass  # recorded in the run and in runner.result
    except KeyboardInterrupt:
        pass  # recorded as cancelled
    finally:
        if saved_stdout is not None:
            _restore_stdout(saved_stdout)
        progress.stop()
    result = runner.result
    meta = run_dir.read_metadata()
    status = meta.status.value
    data: dict[str, Any] = {
        "run_id": run_dir.run_id,
        "status": status,
        "run_dir": str(run_dir.path),
        "root_component_id": root_id,
        "target": target,
        "duration_s": meta.duration_s,
        "executed": result.executed if result is not None else None,
        "reused": result.reused if result is not None else None,
        "failed_path": result.failed_path if result is not None else None,
        "error": meta.error_msg,
        "previous_run_id": previous,
        "start_hierarchy_path": meta.start_hierarchy_path,
        "outcome": _jsonable_outcome(result.outcome) if result is not None else None,
    }

    def text() -> str:
        counts = f"{data['executed']} executed, {data['reused']} reused"
        lines = [
            f"run id   {data['run_id']}",
            f"status   {status} ({counts}) in {format_duration(meta.duration_s)}",
            f"run dir  {data['run_dir']}",
        ]
        if meta.error_msg:
            lines.append(f"error    {meta.error_msg}")
        return "\n".join(lines)

    out.emit(data, text)
    if status == "completed":
        return EXIT_OK
    if status == "cancelled":
        _leave_abandoned_threads(out)
        return EXIT_RUN_CANCELLED
    return EXIT_RUN_FAILED


def _leave_abandoned_threads(out: Output) -> None:
    """After Ctrl-C, sync nodes still sleeping or blocked in worker threads were abandoned by the
    cancelled run (which is already recorded). Python would wait for them before exiting, for
    as long as they take: exit now instead, saying which nodes they were running."""
    import threading

    from reprise.dsl._node import NODE_THREAD_PREFIX

    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    busy = [t for t in busy if t.name != "reprise-alert-webhook"]
    if not busy:
        return
    from reprise.tracking import wait_for_webhooks

    wait_for_webhooks(timeout=5.0)  # alerts raised before Ctrl-C still go out
    nodes = sorted(t.name.removeprefix(NODE_THREAD_PREFIX) for t in busy if t.name.startswith(NODE_THREAD_PREFIX))
    running = f", still running {', '.join(nodes)}" if nodes else ""
    out.note(f"leaving {len(busy)} abandoned worker thread(s) behind{running}")
    for stream in (out.stdout, out.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_RUN_CANCELLED)


def _stdout_to_stderr() -> int | None:
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError):
        return None  # no real file descriptors (an embedding host): leave stdout alone
    return saved


def _restore_stdout(saved: int) -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os.dup2(saved, 1)
    os.close(saved)


def _jsonable_outcome(outcome: Any) -> Any:
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(Any).dump_python(outcome, mode="json")
    except Exception:
        return repr(outcome)
