"""The runners' implementation of :class:`reprise.dsl._context.NodeContext`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprise.dsl._paths import HierarchyPath, git_path_problem
from reprise.errors import NodeExecutionError
from reprise.run._directory import INPUT_FILE
from reprise.run._files import json_problem, write_bytes_atomic

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from reprise.dsl._scope import Scope
    from reprise.run._context import RunContext
    from reprise.tracking import AlertLevel

__all__ = ["ExecutorNodeContext"]


class ExecutorNodeContext:
    """Handed to a node that takes a ``ctx`` parameter; implements the DSL's ``NodeContext``."""

    __slots__ = (
        "_input_json",
        "_logger",
        "_node_dir",
        "_span",
        "attempt",
        "dir_made",
        "path",
        "result_fields",
        "run",
        "scope",
    )

    def __init__(
        self,
        path: HierarchyPath,
        run: RunContext,
        node_dir: Path | str,
        span: Span | None,
        scope: Scope | None = None,
        input_json: bytes | None = None,
    ) -> None:
        self.path = path
        self.run = run
        #: The values visible to this node (earlier outcomes, loop variables, initial inputs);
        #: built-in nodes render their templates against it.
        self.scope = scope
        self.attempt = 1
        self._node_dir = node_dir
        #: True once the node asked for its directory (it exists from then on). Nodes that
        #: never do get theirs written in one go when they finish.
        self.dir_made = False
        self._input_json = input_json
        self._span = span
        self._logger: Any = None
        #: Extra fields for this node's ``result.json`` (see :meth:`annotate_result`).
        self.result_fields: dict[str, Any] = {}

    def annotate_result(self, **fields: Any) -> None:
        """Add fields to this node's ``result.json`` (e.g. token usage, cost, return code).

        A value ``result.json`` cannot hold as it is (a NaN or infinite float) is a
        :class:`~reprise.errors.NodeExecutionError` naming the field: it would be written as a
        bare ``NaN``, which is not JSON."""
        for key, value in fields.items():
            problem = json_problem(value, objects=False)
            if problem is not None:
                where, what = problem
                raise NodeExecutionError(f"annotate_result({key}){where}: {what}", path=str(self.path))
        self.result_fields.update(fields)

    @property
    def run_id(self) -> str:
        """The id of the run this node executes in."""
        return self.run.run_id

    @property
    def node_dir(self) -> Path:
        """This node's directory in the run (created on first use); files written here travel
        with re-runs."""
        if not self.dir_made:
            os.makedirs(self._node_dir, exist_ok=True)
            if self._input_json is not None:
                # A node directory with input.json and no result.json reads as a running node.
                write_bytes_atomic(os.path.join(self._node_dir, INPUT_FILE), self._input_json)
            self.dir_made = True
        return Path(self._node_dir)

    @property
    def project_root(self) -> Path:
        """The run's project root."""
        return self.run.project_root

    @property
    def initial_inputs(self) -> Mapping[str, Any]:
        """The run's initial inputs."""
        return self.run.initial_inputs

    @property
    def logger(self) -> Any:
        """A structlog logger bound to this node (run id, path, trace and span ids); its lines go
        to ``.trace/logs.jsonl`` and, with live export on, to OpenTelemetry logs."""
        if self._logger is None:
            tel = self.run.telemetry
            self._logger = tel.node_logger(self.path, self._span) if tel is not None else _NullLogger()
        return self._logger

    @property
    def current_span(self) -> Span | None:
        """The node's OpenTelemetry span (``None`` with tracing off)."""
        return self._span

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span | None]:
        """Open a child span of this node's span."""
        tel = self.run.telemetry
        parent = self._span
        if tel is None or parent is None:
            yield None
            return
        with tel.child_span(name, parent, attributes) as span:
            yield span

    def declare_outcome_file(self, path: Path | str, *, name: str | None = None) -> str:
        """Commit ``path`` with the run's outcomes to git; returns its path in the repository.

        A file inside this node's directory keeps its relative place (``<node path>/<rel>``).
        One elsewhere is *copied now* to ``files/<name or file name>`` in the node directory, so
        the run keeps what the node produced even if the original changes later, and re-runs
        that reuse this node carry the copy along. A name git refuses (``.git``, ``.gitmodules``,
        a newline: :func:`~reprise.dsl._paths.git_path_problem`) is an error naming this node."""
        from reprise.errors import RepriseError
        from reprise.run._outcome_repo import OutcomeFile

        file = Path(path)
        if not file.is_absolute():
            file = self.node_dir / file
        file = file.resolve()
        node_dir = self.node_dir.resolve()
        if not file.is_relative_to(node_dir):
            target_name = name or file.name
            problem = git_path_problem(target_name)
            if problem is not None:
                raise RepriseError(f"invalid outcome file name {target_name!r}: {problem}", path=str(self.path))
            target = node_dir.joinpath("files", *target_name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
            file = target
        rel = file.relative_to(node_dir).as_posix()
        problem = git_path_problem(rel)
        if problem is not None:
            raise RepriseError(f"invalid outcome file name {rel!r}: {problem}", path=str(self.path))
        repo_path = "/".join(self.path.parts) + "/" + rel
        self.run.declared_outcome_files.append(OutcomeFile(file, repo_path, str(self.path)))
        self.result_fields.setdefault("outcome_files", []).append({"source": str(file), "repo_path": repo_path})
        return repo_path

    def metric(self, name: str, value: float, **attributes: Any) -> None:
        """Record a value of the user metric ``name`` (exported to ``.trace/metrics.jsonl``).

        Values are tagged with the node's *definition* path (loop indexes as ``*``), so a loop of
        10,000 iterations makes one metric series, not 10,000."""
        tel = self.run.telemetry
        if tel is not None:
            from reprise.dsl._definition import definition_path

            attrs = {"reprise.definition_path": definition_path(self.path), **attributes}
            tel.user_metric(name, value, attrs, path=str(self.path))

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> int:
        """Record user metrics at ``step`` (see :func:`reprise.log`); returns the step."""
        from reprise.tracking import log

        return log(metrics, step, run=self)

    def alert(self, title: str, text: str = "", level: AlertLevel | str = "info") -> dict[str, Any]:
        """Raise an alert from this node (see :func:`reprise.alert`); returns the stored record."""
        from reprise.tracking import alert

        return alert(title, text, level, run=self)


class _NullLogger:
    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None
