"""The outcome commit of a run: a :class:`RunFinished` listener, and the one function that
commits a finished run's outcomes and notes the commit in its record.

The run's own process commits through :class:`CommitOutcomes` when the run completes; an
experiment commits a run its worker could not finish through :func:`commit_outcomes` too, so a
run's commit reads the same whoever made it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from reprise.errors import RepriseError
from reprise.run._outcome_repo import (
    OutcomeFile,
    OutcomeRepository,
    collect_outcome_files,
    listed_outcome_files,
)
from reprise.run._record import MetadataRecord
from reprise.run._status import RunStatus

if TYPE_CHECKING:
    from reprise.run._context import RunContext

__all__ = ["CommitOutcomes", "commit_outcomes"]


def commit_outcomes(
    record: MetadataRecord,
    repo: OutcomeRepository,
    files: Sequence[OutcomeFile],
    *,
    status: RunStatus,
    error_msg: str | None,
    duration_s: float,
    reused: Collection[str] = (),
    note: str | None = None,
    logger: Any = None,
) -> str | None:
    """Commit ``files`` to ``run/<run_id>`` and set ``outcome_commit``, ``outcome_branch`` and
    ``outcome_repo`` in ``record`` (not written: the caller writes the record once). A failure
    to commit is set as ``outcome_commit_error`` and logged; it does not change the run's
    status. Returns the commit."""
    meta = record.metadata
    run_id = meta.run_id
    lines = [f"run {run_id}: {status.value} in {duration_s:.3f}s", "", f"root: {meta.root_component_id}"]
    if meta.previous_run_id:
        lines.append(f"previous run: {meta.previous_run_id}")
        if meta.start_hierarchy_path:  # a resume of a run killed after its last node has none
            lines.append(f"start path: {meta.start_hierarchy_path}")
    if error_msg:
        lines.append(f"error: {error_msg}")
    if note:
        lines += ["", note]
    try:
        done = repo.commit_run(
            run_id, files, message="\n".join(lines), parent_run_id=meta.previous_run_id, reused=reused
        )
    except (RepriseError, OSError) as exc:
        message = exc.message if isinstance(exc, RepriseError) else str(exc)
        record.set(outcome_commit_error=message)
        if logger is not None:
            logger.error("outcome commit failed", error=message)
        return None
    for f, problem in done.refused:
        # Nodes that declare such a file fail: only a run an older version recorded names one.
        if logger is not None:
            logger.warning("outcome file left out of the commit", path=f.node_path, file=f.repo_path, error=problem)
    record.set(outcome_commit=done.commit, outcome_branch=repo.branch(run_id), outcome_repo=str(repo.path))
    return done.commit


class CommitOutcomes:
    """Commits the run's outcomes to ``run/<run_id>`` when the run finishes, once: the files
    the executor listed as nodes finished (the run directory is walked when no runner ran),
    and the files nodes declared."""

    __slots__ = ("repo",)

    def __init__(self, repo: OutcomeRepository) -> None:
        self.repo = repo

    def run_finished(self, *, run: RunContext, status: RunStatus, error_msg: str | None) -> None:
        record = run.record
        if record is None:
            return
        run_dir = record.run_dir
        logger = run.telemetry.logger if run.telemetry is not None else None
        try:
            if run.outcome_paths is not None:
                files = listed_outcome_files(run_dir.path, run.outcome_paths, run.declared_outcome_files)
            else:
                files = collect_outcome_files(
                    run_dir.path, run.declared_outcome_files, with_order=self.repo.settings.commit_per_node
                )
        except (RepriseError, OSError) as exc:
            message = exc.message if isinstance(exc, RepriseError) else str(exc)
            record.set(outcome_commit_error=message)
            if logger is not None:
                logger.error("outcome commit failed", error=message)
            return
        commit_outcomes(
            record,
            self.repo,
            files,
            status=status,
            error_msg=error_msg,
            duration_s=record.elapsed() or 0.0,
            reused=run.reused_outcome_paths,
            note=run.commit_note,
            logger=logger,
        )
