"""MetadataRecord: the one writer of a run's ``metadata.json`` and its line in the run index.

A run's lifecycle is written here and nowhere else: :class:`~reprise.run.RunContext` starts
and completes its run through it, and an experiment finalises a run whose worker died or was
killed (a *lost* run) through it too, so the two never disagree about what a finished run's
record holds.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from reprise._version import __version__
from reprise.run._directory import RunDirectory, RunMetadata, pid_info
from reprise.run._index import record_run
from reprise.run._status import HOST, RunStatus

__all__ = ["MetadataRecord", "now_iso"]


def now_iso() -> str:
    """The current time as ISO 8601 UTC with microseconds, as a run's record writes it."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class MetadataRecord:
    """The metadata of one run, and where it is written.

    ::

        record = MetadataRecord.start(run_dir, root_component_id="agent")   # status "running"
        record.finish(RunStatus.COMPLETED)                              # final: written once more
    """

    __slots__ = ("_duration", "_started", "metadata", "run_dir")

    def __init__(self, run_dir: RunDirectory, metadata: RunMetadata) -> None:
        self.run_dir = run_dir
        self.metadata = metadata
        self._started: float | None = None
        self._duration: float | None = None

    @classmethod
    def start(
        cls,
        run_dir: RunDirectory,
        root_component_id: str,
        *,
        status: RunStatus = RunStatus.RUNNING,
        started_at: str | None = None,
        previous_run_id: str | None = None,
        start_hierarchy_path: str | None = None,
        tags: dict[str, str] | None = None,
        name: str | None = None,
        project: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> MetadataRecord:
        """Write the first record of a run made now, by this process."""
        pid, pid_start = pid_info()
        metadata = RunMetadata(
            run_id=run_dir.run_id,
            root_component_id=root_component_id,
            status=status,
            started_at=started_at or now_iso(),
            pid=pid,
            pid_start=pid_start,
            host=HOST,
            previous_run_id=previous_run_id,
            start_hierarchy_path=start_hierarchy_path,
            reprise_version=__version__,
            tags=dict(tags or {}),
            name=name,
            project=project,
            config=config,
        )
        record = cls(run_dir, metadata)
        record._started = time.perf_counter()
        record.write()
        return record

    @classmethod
    def load(cls, run_dir: RunDirectory) -> MetadataRecord:
        """The record a run (of this process or another) has written."""
        return cls(run_dir, run_dir.read_metadata())

    def elapsed(self) -> float | None:
        """Seconds since :meth:`start`, or the run's duration once :meth:`stop` fixed it
        (``None`` for a record :meth:`load` read)."""
        if self._duration is not None:
            return self._duration
        return None if self._started is None else time.perf_counter() - self._started

    def stop(self) -> float | None:
        """Fix the run's duration now, when it completes and before its outcomes are committed
        and its trace finished: the one figure the metadata, the commit message, the trace's
        root span and every reader show. Later calls return the same figure."""
        if self._duration is None and self._started is not None:
            self._duration = round(time.perf_counter() - self._started, 6)
        return self._duration

    def set(self, **fields: Any) -> None:
        """Set fields of the record (extra ones are kept), without writing it."""
        for name, value in fields.items():
            setattr(self.metadata, name, value)

    def write(self) -> None:
        """Write ``metadata.json`` (atomically) and index the run (never fails the run)."""
        self.run_dir.write_metadata(self.metadata)
        record_run(self.run_dir, self.metadata)

    def finish(
        self,
        status: RunStatus,
        error_msg: str | None = None,
        *,
        ended_at: str | None = None,
        duration_s: float | None = None,
    ) -> None:
        """Record the run's end: status, error, end time and duration (measured since
        :meth:`start` unless given), and write it."""
        meta = self.metadata
        meta.status = status
        meta.error_msg = error_msg
        elapsed = self.elapsed()
        meta.duration_s = duration_s if duration_s is not None or elapsed is None else round(elapsed, 6)
        if ended_at is None and self._duration is not None:
            # The end the duration says, so ended_at - started_at is the run's duration.
            started = datetime.fromisoformat(meta.started_at.replace("Z", "+00:00"))
            ended_at = (started + timedelta(seconds=self._duration)).isoformat(timespec="microseconds")
            ended_at = ended_at.replace("+00:00", "Z")
        meta.ended_at = ended_at or now_iso()
        self.write()
