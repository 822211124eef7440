"""The run listener that gives a run its telemetry: started with the run, finished after every
other listener (so their errors still reach the run's log and the trace is complete)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reprise.observability._settings import ObservabilitySettings
from reprise.observability._telemetry import RunTelemetry

if TYPE_CHECKING:
    from reprise.run._context import RunContext
    from reprise.run._status import RunStatus

__all__ = ["TelemetryListener"]


class TelemetryListener:
    """Starts a run's :class:`RunTelemetry` (and sets ``run.telemetry``, where nodes and
    ``reprise.log`` reach it) when the run starts; ends it when the run finishes."""

    __slots__ = ("settings", "telemetry")

    def __init__(self, settings: ObservabilitySettings | None) -> None:
        self.settings = settings
        self.telemetry: RunTelemetry | None = None

    def run_started(self, *, run: RunContext) -> None:
        self.telemetry = RunTelemetry.start(run, self.settings)
        run.telemetry = self.telemetry

    def run_finished(self, *, run: RunContext, status: RunStatus, error_msg: str | None) -> None:
        if self.telemetry is not None:
            # The root span ends when the run's record says it ended (one duration everywhere).
            duration = run.record.elapsed() if run.record is not None else None
            self.telemetry.finish(status, error_msg, duration_s=duration)
