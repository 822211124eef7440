"""Where a run lives: RunContext, run ids, the run directory and its files, statuses."""

from reprise.run.context import RunContext
from reprise.run.directory import RunDirectory, RunMetadata, new_run_id
from reprise.run.status import ElementStatus, RunStatus
from reprise.run.trace import SpanRecord, read_spans, render_trace_tree

__all__ = [
    "ElementStatus",
    "RunContext",
    "RunDirectory",
    "RunMetadata",
    "RunStatus",
    "SpanRecord",
    "new_run_id",
    "read_spans",
    "render_trace_tree",
]
