"""Where a run lives: RunContext, run ids, the run directory and its files, statuses."""

from reprise.run.context import RunContext
from reprise.run.directory import RunDirectory, RunMetadata, new_run_id
from reprise.run.status import ElementStatus, RunStatus

__all__ = [
    "ElementStatus",
    "RunContext",
    "RunDirectory",
    "RunMetadata",
    "RunStatus",
    "new_run_id",
]
