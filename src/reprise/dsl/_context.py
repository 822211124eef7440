"""``NodeContext``: what a running node may ask of its run (its ``ctx`` parameter).

The DSL defines the interface and the runners implement it, so node kinds (``reprise.nodes``)
and user functions type ``ctx`` without importing how a run is executed::

    async def fetch(url: str, ctx: NodeContext) -> str:
        ctx.logger.info("fetching", url=url)
        ctx.metric("bytes", 1234)
        with ctx.span("parse"):
            ...
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from reprise.dsl._paths import HierarchyPath
    from reprise.dsl._scope import Scope

__all__ = ["NodeContext"]


class NodeContext(Protocol):
    """The node's view of the run it executes in."""

    #: The node's hierarchy path in this run (``agent.flow.loop.3.node``).
    path: HierarchyPath
    #: The values visible to the node (earlier outcomes, loop variables, initial inputs).
    scope: Scope | None
    #: 1 on the first try, then 2, 3, ... on retries.
    attempt: int
    #: Extra fields for the node's ``result.json``; see :meth:`annotate_result`.
    result_fields: dict[str, Any]

    @property
    def run_id(self) -> str:
        """The id of the run."""
        ...

    @property
    def project_root(self) -> Path:
        """The run's project root: relative paths of built-in nodes are resolved against it."""
        ...

    @property
    def node_dir(self) -> Path:
        """The node's directory in the run (made on first use); files here travel with re-runs."""
        ...

    @property
    def initial_inputs(self) -> Mapping[str, Any]:
        """The run's initial inputs."""
        ...

    @property
    def logger(self) -> Any:
        """A structlog logger bound to the node (run id, path, trace and span ids)."""
        ...

    @property
    def current_span(self) -> Span | None:
        """The node's OpenTelemetry span (``None`` with tracing off)."""
        ...

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Span | None]:
        """Open a child span of the node's span."""
        ...

    def annotate_result(self, **fields: Any) -> None:
        """Add fields to the node's ``result.json`` (token usage, cost, return code, ...); a NaN or
        infinite float in them fails the node (``result.json`` is plain JSON)."""
        ...

    def declare_outcome_file(self, path: Path | str, *, name: str | None = None) -> str:
        """Commit ``path`` with the run's outcomes; returns its path in the outcome repository."""
        ...

    def metric(self, name: str, value: float, **attributes: Any) -> None:
        """Record a value of the user metric ``name``."""
        ...

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> int:
        """Record user metrics at ``step`` (see :func:`reprise.log`); returns the step."""
        ...

    def alert(self, title: str, text: str = "", level: Any = "info") -> dict[str, Any]:
        """Raise an alert from the node (see :func:`reprise.alert`)."""
        ...
