"""RunResult: what ``await runner.run()`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprise.dsl._paths import HierarchyPath
from reprise.run._directory import OUTCOME_FILE
from reprise.run._reading import read_run_json
from reprise.run._status import RunStatus

__all__ = ["RunResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """The outcome of one run.

    ``outcomes`` holds the outcome of every element outside loop iterations, by hierarchy path
    (a loop's own outcome, the list of iteration outcomes, is there too). Outcomes of nodes
    inside iterations are on disk: :meth:`load_outcome` reads any node's ``outcome.json``.
    """

    run_id: str
    status: RunStatus
    run_dir: Path
    outcome: Any = None
    outcomes: dict[str, Any] = field(default_factory=dict)
    executed: int = 0
    reused: int = 0
    failed_path: str | None = None
    error: str | None = None
    previous_run_id: str | None = None
    start_hierarchy_path: str | None = None

    def __getitem__(self, path: str) -> Any:
        return self.outcomes[path]

    def load_outcome(self, path: str | HierarchyPath) -> Any:
        """The JSON data of the ``outcome.json`` at ``path`` (any node, iterations included)."""
        return read_run_json(self.run_dir.joinpath(*HierarchyPath(path).parts, OUTCOME_FILE))

    @property
    def ok(self) -> bool:
        """True if the run completed."""
        return self.status is RunStatus.COMPLETED
