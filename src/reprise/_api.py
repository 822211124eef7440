"""Api: read runs, their element trees, metrics, alerts, logs and outcome diffs from Python.

Everything the ``reprise`` command shows comes from here, so a script gets exactly what
``reprise ... --json`` prints in ``data``::

    import reprise

    api = reprise.Api("runs")                      # default: $REPRISE_RUN_ROOT or ./runs
    for run in api.runs(status="failed", limit=10):
        print(run.run_id, run.error_msg)

    last_check = None
    while True:                                    # an agent polling for new alerts
        alerts = api.alerts(since=last_check, level="warn")
        if alerts:
            last_check = alerts[0]["timestamp"]     # newest first
        ...
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from reprise.errors import RepriseError, RunFileError, RunSetupError
from reprise.run._directory import RESULT_FILE, RunDirectory
from reprise.run._index import RunIndex, RunInfo
from reprise.run._journal import InFlight, in_flight
from reprise.run._reading import read_run_jsonl, read_run_object
from reprise.run._reused import ReusedNodes, linked_run_id
from reprise.run._status import RunStatus
from reprise.run._usage import cost_of, input_output_tokens
from reprise.tracking import ALERTS_FILE, AlertLevel, parse_instant, read_alerts, read_metrics

__all__ = ["Api", "ElementInfo", "OutcomeChange", "TrackedRun", "default_run_root"]

_LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
_SKIP_TOP = {".trace", "static_inputs"}


def default_run_root() -> Path:
    """``$REPRISE_RUN_ROOT`` if set, else ``./runs``."""
    return Path(os.environ.get("REPRISE_RUN_ROOT") or "runs")


def _num(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(slots=True, kw_only=True)
class ElementInfo:
    """One element of a run (a node, flow, agent, loop, iteration, branch...) as ``result.json``
    records it, with its children in the order they started.

    ``input_tokens``/``output_tokens``/``cost`` are what the node recorded (``usage`` and
    ``cost_usd``/``cost`` in its ``result.json``); on a composite they are the sums over the
    nodes below it that executed in this run (reused nodes cost nothing this time)."""

    path: str
    name: str
    element_type: str
    status: str
    node_kind: str | None = None
    started_at: str | None = None
    duration_s: float | None = None
    attempts: int | None = None
    reused: bool = False
    reused_from: str | None = None
    #: For a reused node: the run where it executed (however many re-runs ago).
    origin_run_id: str | None = None
    error: str | None = None
    input_tokens: float | None = None
    output_tokens: float | None = None
    cost: float | None = None
    children: list[ElementInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (children nested)."""
        return {
            "path": self.path,
            "name": self.name,
            "element_type": self.element_type,
            "node_kind": self.node_kind,
            "status": self.status,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "attempts": self.attempts,
            "reused": self.reused,
            "reused_from": self.reused_from,
            "origin_run_id": self.origin_run_id,
            "error": self.error,
            "input_tokens": _int_if_whole(self.input_tokens),
            "output_tokens": _int_if_whole(self.output_tokens),
            "cost": self.cost,
            "children": [c.to_json() for c in self.children],
        }

    def walk(self) -> Iterable[ElementInfo]:
        """This element and every element below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


def _int_if_whole(value: float | None) -> float | int | None:
    return int(value) if value is not None and value.is_integer() else value


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeChange:
    """A file that differs between two runs' outcome branches (``A`` added, ``D`` deleted,
    ``M`` modified). ``hierarchy_path`` names the node for its ``outcome.json``."""

    status: str
    path: str
    hierarchy_path: str | None
    before: Any = None
    after: Any = None

    def to_json(self, *, values: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; ``values`` adds the outcome before and after."""
        out: dict[str, Any] = {"status": self.status, "path": self.path, "hierarchy_path": self.hierarchy_path}
        if values:
            out["before"] = self.before
            out["after"] = self.after
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackedRun(RunInfo):
    """A run as :meth:`Api.runs` returns it: its listing (``run_id``, ``name``, ``project``,
    ``config``, ``status``...) and what it recorded, read on demand::

        for run in Api().runs("cifar10-hparam-search"):
            errors = [a for a in run.alerts() if a["level"] == "error"]
            print(run.name, run.config["learning_rate"], len(errors))
    """

    @classmethod
    def of(cls, info: RunInfo) -> TrackedRun:
        """The record of ``info``."""
        return cls(**{name: getattr(info, name) for name in _INFO_FIELDS})

    def alerts(
        self, *, since: str | datetime | float | None = None, level: AlertLevel | str | None = None
    ) -> list[dict[str, Any]]:
        """The run's alerts strictly after ``since``, at or above ``level``, newest first."""
        return Api(self.run_root).alerts(since=since, level=level, run=self.run_id)

    def metrics(self, name: str | None = None) -> list[dict[str, Any]]:
        """What the run logged with ``reprise.log``, in order (only lines holding ``name``)."""
        return Api(self.run_root).metrics(self.run_id, name=name)


_INFO_FIELDS = tuple(f.name for f in fields(RunInfo))


class Api:
    """Read access to the runs under one run root (see the module docstring)."""

    def __init__(self, run_root: Path | str | None = None) -> None:
        self.run_root = Path(run_root) if run_root is not None else default_run_root()
        self.index = RunIndex(self.run_root)

    # -- runs ------------------------------------------------------------------------------
    def runs(
        self,
        project: str | None = None,
        *,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        root: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int | None = None,
        name: str | None = None,
        experiments: bool = True,
    ) -> list[TrackedRun]:
        """The runs (of ``project``, if given), newest first (a dead ``running`` run reads
        ``crashed``); without ``experiments``, those an experiment made are left out."""
        infos = self.index.runs(
            status=status, root=root, tags=tags, limit=limit, project=project, name=name, experiments=experiments
        )
        return [TrackedRun.of(info) for info in infos]

    def resolve(self, run: str, *, project: str | None = None) -> str:
        """The id of the run ``run`` names: a run id, a run name, ``latest`` (also ``-1``;
        ``-2`` the run before...), or a unique prefix of a run id or name; of ``project`` if
        given. :class:`~reprise.errors.RunSetupError` for an unknown or ambiguous reference
        (the candidates listed)."""
        return self.index.resolve(run, project=project).run_id

    def run(self, run: str, *, project: str | None = None) -> TrackedRun:
        """One run (``run`` as :meth:`resolve` takes it); :class:`~reprise.errors.RunSetupError`
        if there is no such run."""
        return TrackedRun.of(self.index.resolve(run, project=project))

    def run_dir(self, run: str) -> RunDirectory:
        """The directory of the run ``run`` names (see :meth:`resolve`)."""
        return RunDirectory.find(self.run_root, self.resolve(run))

    def metadata(self, run_id: str) -> dict[str, Any]:
        """The run's whole ``.trace/metadata.json`` (extra fields included), with ``status``
        reading ``crashed`` for a dead ``running`` run."""
        run = self.run_dir(run_id)
        data = run.read_metadata().model_dump(mode="json")
        data["status"] = run.status().value
        return data

    def summary(self, run: str, *, problems: list[RunFileError] | None = None) -> dict[str, Any]:
        """What ``reprise show RUN --json`` prints in ``data``: the run's listing (``run``),
        its whole metadata, totals over its nodes (executed, reused, failed, tokens, cost) and
        its element tree (unreadable files: as in :meth:`elements`)."""
        run_id = self.resolve(run)
        info = self.run(run_id)
        tree = self.elements(run_id, problems=problems)
        nodes = [e for e in tree.walk() if e.element_type == "node"]
        tree_json = tree.to_json()
        totals = {
            "nodes": len(nodes),
            "executed": sum(1 for e in nodes if not e.reused and e.status == "completed"),
            "reused": sum(1 for e in nodes if e.reused),
            "failed": sum(1 for e in nodes if e.status == "failed"),
            "input_tokens": tree_json["input_tokens"],
            "output_tokens": tree_json["output_tokens"],
            "cost": tree.cost,
        }
        return {"run": info.to_json(), "metadata": self.metadata(run_id), "totals": totals, "tree": tree_json}

    # -- the element tree ------------------------------------------------------------------
    def elements(self, run_id: str, *, problems: list[RunFileError] | None = None) -> ElementInfo:
        """The run's element tree, from the ``result.json`` files in its directory.

        An element whose ``result.json`` cannot be read has status ``unreadable`` and the
        reason as its ``error``; it and any bad journal line are also added to ``problems``."""
        run = self.run_dir(run_id)
        meta = run.read_metadata()
        status = run.status()
        missing = "running" if status is RunStatus.RUNNING else "interrupted"
        root_dir = run.path / meta.root_component_id
        # A node's directory appears when it finishes; the journal names those still running
        # (or running when the process died).
        problems = [] if problems is None else problems
        started = in_flight(run.path, problems) if status in (RunStatus.RUNNING, RunStatus.CRASHED) else None
        # A link-mode re-run's reused nodes are links: what is read through them is the run's
        # that holds them; the overlay says they were reused here.
        reused = ReusedNodes(run.path, meta.previous_run_id)
        root = _element(root_dir, meta.root_component_id, meta.root_component_id, missing, problems, started, reused)
        if root is None:
            root = ElementInfo(
                path=meta.root_component_id,
                name=meta.root_component_id,
                element_type="root",
                status=missing if not status.finished else status.value,
            )
        _sum_usage(root)
        return root

    # -- metrics, alerts, logs -------------------------------------------------------------
    def metrics(
        self, run_id: str, *, name: str | None = None, problems: list[RunFileError] | None = None
    ) -> list[dict[str, Any]]:
        """What ``reprise.log`` recorded in the run, in order (only lines holding ``name``).
        A bad line raises :class:`RunFileError`, or with a ``problems`` list is added to it
        and skipped."""
        return read_metrics(self.run_dir(run_id).path, name=name, problems=problems)

    def alerts(
        self,
        project: str | None = None,
        *,
        since: str | datetime | float | None = None,
        level: AlertLevel | str | None = None,
        run: str | None = None,
        limit: int | None = None,
        problems: list[RunFileError] | None = None,
    ) -> list[dict[str, Any]]:
        """Alerts strictly after ``since``, at or above ``level``, of one run (a reference as
        :meth:`resolve` takes it, within ``project`` if given), of every run of ``project``, or
        of every run; newest first. ``since`` is an instant: ``...Z``, ``...+02:00`` and naive
        (UTC) timestamps all compare correctly::

            api.alerts("cifar10-hparam-search", run="run-lr0.001-bs64", since=last_check)

        Bad lines: as in :meth:`metrics`."""
        after = parse_instant(since) if since is not None else None
        min_level = AlertLevel.parse(level) if level is not None else None
        if run is not None:
            dirs = [self.run_root / self.resolve(run, project=project)]
        else:
            dirs = [info.run_dir for info in self.index.runs(project=project)]
        threshold = after.timestamp() if after is not None else None
        found: list[tuple[datetime, dict[str, Any]]] = []
        for directory in dirs:
            file = directory / ".trace" / ALERTS_FILE
            try:
                st = os.stat(file)
            except FileNotFoundError:
                continue
            # The file is append-only and each line is stamped before it is written, so a file
            # last modified before `since` holds nothing newer: skip reading it.
            if threshold is not None and st.st_mtime < threshold - 1.0:
                continue
            for item in read_alerts(directory, since=after, level=min_level, problems=problems):
                found.append((parse_instant(item["timestamp"]), item))
        found.sort(key=lambda pair: pair[0], reverse=True)
        alerts = [item for _, item in found]
        return alerts[:limit] if limit is not None else alerts

    def logs(
        self,
        run_id: str,
        *,
        node: str | None = None,
        level: str | None = None,
        problems: list[RunFileError] | None = None,
    ) -> list[dict[str, Any]]:
        """The run's structured log lines (``.trace/logs.jsonl``), in order; ``node`` keeps the
        lines of that element and the elements below it, ``level`` those at or above it. Bad
        lines: as in :meth:`metrics`."""
        run = self.run_dir(run_id)
        min_level = 0
        if level is not None:
            if level.lower() not in _LOG_LEVELS:
                raise RepriseError(f"unknown log level {level!r}: use debug, info, warning or error")
            min_level = _LOG_LEVELS[level.lower()]
        out: list[dict[str, Any]] = []
        try:
            items = list(read_run_jsonl(run.trace_dir / "logs.jsonl", problems))
        except FileNotFoundError:
            return out
        for item in items:
            if node is not None:
                path = str(item.get("hierarchy_path", ""))
                if path != node and not path.startswith(node + "."):
                    continue
            if min_level and _LOG_LEVELS.get(str(item.get("level", "info")).lower(), 20) < min_level:
                continue
            out.append(item)
        return out

    # -- outcomes --------------------------------------------------------------------------
    def diff(self, run_a: str, run_b: str, *, values: bool = False) -> list[OutcomeChange]:
        """Which outcomes differ between two runs, from their git outcome branches
        (``values`` also reads each changed ``outcome.json`` before and after)."""
        from reprise.run._outcome_repo import OutcomeRepository

        run_a, run_b = self.resolve(run_a), self.resolve(run_b)
        repos = []
        for run_id in (run_a, run_b):
            meta = self.run_dir(run_id).read_metadata()
            extra = meta.model_extra or {}
            repo = extra.get("outcome_repo")
            if not repo:
                why = extra.get("outcome_commit_error")
                reason = f": {why}" if why else " (outcomes were not committed to git for this run)"
                raise RunSetupError(f"run {run_id} has no outcome branch{reason}", run_id=run_id)
            repos.append(Path(repo))
        if repos[0].resolve() != repos[1].resolve():
            raise RunSetupError(
                f"runs {run_a} and {run_b} committed their outcomes to different repositories "
                f"({repos[0]} and {repos[1]}): they cannot be compared"
            )
        repository = OutcomeRepository(repos[0])
        changes = []
        for status, path in repository.changed_files(run_a, run_b):
            node = path[: -len("/outcome.json")].replace("/", ".") if path.endswith("/outcome.json") else None
            before = after = None
            if values:
                before = _parsed(repository.show(run_a, path)) if status != "A" else None
                after = _parsed(repository.show(run_b, path)) if status != "D" else None
            changes.append(OutcomeChange(status=status, path=path, hierarchy_path=node, before=before, after=after))
        return changes


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# -- reading the element tree ------------------------------------------------------------------
_NUMERIC = re.compile(r"\d+\Z")


def _order_key(child: ElementInfo) -> tuple[int, str, int, str]:
    # Start time first (children ran in that order); loop iterations by number when equal.
    started = child.started_at or "~"  # '~' sorts after digits: unstarted elements go last
    number = int(child.name) if _NUMERIC.match(child.name) else -1
    return (0 if child.started_at else 1, started, number, child.name)


def _element(
    directory: Path,
    path: str,
    name: str,
    missing: str,
    problems: list[RunFileError],
    started: InFlight | None = None,
    reused: ReusedNodes | None = None,
    linked: bool = False,
) -> ElementInfo | None:
    result: dict[str, Any] | None = None
    unreadable: RunFileError | None = None
    # A link out of the run root is not followed: it reads as a reused node that is gone.
    escaped = linked and (reused is None or not reused.followable(directory))
    try:
        result = None if escaped else read_run_object(directory / RESULT_FILE)
    except FileNotFoundError:
        pass
    except RunFileError as exc:
        problems.append(exc)
        unreadable = exc
    if reused is not None and result is not None and result.get("element_type") == "node":
        result = reused.overlay(path, result, directory, linked)
    is_node = result is not None and result.get("element_type") == "node"
    children: list[ElementInfo] = []
    if not is_node and not escaped:
        # Element directories, and links to them (the nodes a link-mode re-run reused).
        names: dict[str, bool] = {}
        try:
            for e in os.scandir(directory):
                if e.name.startswith("."):
                    continue
                if e.is_dir(follow_symlinks=False):
                    names[e.name] = False
                elif e.is_symlink():
                    names[e.name] = True
        except (FileNotFoundError, NotADirectoryError):
            pass
        if started is not None:
            for child_name in started.children(directory):
                names.setdefault(child_name, False)
        for child_name in sorted(names):
            child = _element(
                directory / child_name,
                f"{path}.{child_name}",
                child_name,
                missing,
                problems,
                started,
                reused,
                names[child_name],
            )
            if child is not None:
                children.append(child)
        children.sort(key=_order_key)
    if unreadable is not None:
        return ElementInfo(
            path=path,
            name=name,
            element_type="element" if children else "node",
            status="unreadable",
            error=unreadable.message,
            children=children,
        )
    if result is None:
        if linked and not children:
            # A reused node whose directory, in the run it links to, is gone.
            target = linked_run_id(directory)
            return ElementInfo(
                path=path,
                name=name,
                element_type="node",
                status="unavailable",
                reused=True,
                reused_from=reused.previous_run_id if reused is not None else None,
                origin_run_id=target,
                error=f"reused from run {target}, whose directory for it is gone",
            )
        if not children:
            record = started.record(directory) if started is not None else None
            if record is not None:
                at = record.get("started_at")
                return ElementInfo(
                    path=path,
                    name=name,
                    element_type="node",
                    status=missing,
                    started_at=at if isinstance(at, str) else None,
                )
            if not (directory / "input.json").is_file():
                return None  # not an element: a directory a node wrote, or nothing at all
            return ElementInfo(path=path, name=name, element_type="node", status=missing)
        # Loop iterations and conditional branches keep no result.json of their own: their
        # status is their children's. Any other composite without one never finished.
        kind = "iteration" if _NUMERIC.match(name) else "branch" if name in ("then", "else") else None
        return ElementInfo(
            path=path,
            name=name,
            element_type=kind or "element",
            status=_status_of(children, missing) if kind else missing,
            started_at=children[0].started_at,
            children=children,
        )
    info = ElementInfo(
        path=path,
        name=name,
        element_type=str(result.get("element_type", "element")),
        node_kind=result.get("node_kind"),
        status=str(result.get("status", "unknown")),
        started_at=result.get("started_at"),
        duration_s=_num(result.get("duration_s")),
        attempts=result.get("attempts") if isinstance(result.get("attempts"), int) else None,
        reused=bool(result.get("reused")),
        reused_from=result.get("reused_from"),
        origin_run_id=result.get("origin_run_id") if result.get("reused") else None,
        children=children,
    )
    error = result.get("error")
    if isinstance(error, Mapping):
        info.error = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    elif error:
        info.error = str(error)
    if is_node:
        info.input_tokens, info.output_tokens = input_output_tokens(result)
        info.cost = cost_of(result)
    return info


_PRECEDENCE = ("failed", "unreadable", "cancelled", "running", "interrupted")


def _status_of(children: list[ElementInfo], missing: str) -> str:
    statuses = {c.status for c in children}
    for status in _PRECEDENCE:
        if status in statuses:
            return status
    return "completed" if statuses <= {"completed", "skipped"} else missing


def _sum_usage(element: ElementInfo) -> tuple[float | None, float | None, float | None]:
    """Fill composites with the sums of the executed nodes below them."""
    if element.element_type == "node" or not element.children:
        if element.reused:  # it cost nothing in this run (reprise.run._usage)
            return None, None, None
        return element.input_tokens, element.output_tokens, element.cost
    totals: list[float | None] = [None, None, None]
    for child in element.children:
        for i, value in enumerate(_sum_usage(child)):
            if value is not None:
                totals[i] = (totals[i] or 0.0) + value
    element.input_tokens, element.output_tokens = totals[0], totals[1]
    element.cost = round(totals[2], 10) if totals[2] is not None else None
    return totals[0], totals[1], totals[2]
