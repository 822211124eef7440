"""Where a run lives: RunContext, run ids, the run directory and its files, statuses, lineage."""

from reprise.run._context import RunContext
from reprise.run._directory import RUN_ID_PATTERN, RunDirectory, RunMetadata, new_run_id
from reprise.run._outcome_repo import OutcomeSettings
from reprise.run._previous import ancestors
from reprise.run._reading import read_run_json, read_run_jsonl, read_run_object
from reprise.run._status import ElementStatus, RunStatus
from reprise.run._trace import SpanRecord, read_spans, render_trace_tree

__all__ = [
    "RUN_ID_PATTERN",
    "ElementStatus",
    "OutcomeSettings",
    "RunContext",
    "RunDirectory",
    "RunMetadata",
    "RunStatus",
    "SpanRecord",
    "ancestors",
    "new_run_id",
    "read_run_json",
    "read_run_jsonl",
    "read_run_object",
    "read_spans",
    "render_trace_tree",
]
