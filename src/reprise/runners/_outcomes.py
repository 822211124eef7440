"""OutcomeLedger: the run listener that keeps which nodes hold an outcome, as they finish.

What it keeps serves two readers without a walk over the run directory: the outcome commit
(``RunContext.outcome_paths``, in the order nodes finished) and later re-runs and readers
(``.trace/outcomes.json`` and, for a re-run, ``.trace/reused.json``, written when the run ends).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reprise.run._reused import OUTCOMES_FILE, outcomes_document, write_trace_file

if TYPE_CHECKING:
    from reprise.run._context import RunContext
    from reprise.run._status import ElementStatus
    from reprise.runners._reuse import ReusePlan

__all__ = ["OutcomeLedger"]

# Outcomes kept in memory for ``.trace/outcomes.json``: each at most this big, this much in all.
_KEEP_OUTCOME_BYTES = 4096
_KEEP_OUTCOMES_TOTAL = 16 * 1024 * 1024


class OutcomeLedger:
    """Listens to a run's nodes finishing (``ElementFinished``) and to its end (``RunFinished``)."""

    __slots__ = ("_declared", "_kept_bytes", "ctx", "reuse")

    def __init__(self, ctx: RunContext, reuse: ReusePlan | None) -> None:
        self.ctx = ctx
        self.reuse = reuse
        if ctx.outcome_paths is None:
            ctx.outcome_paths = []
        self._kept_bytes = 0
        #: Nodes that completed with a directory of their own and declared outcome files.
        self._declared: list[str] = []

    def element_finished(
        self,
        *,
        path: str,
        status: ElementStatus,
        outcome_json: bytes | None,
        reused: bool = False,
        declares_files: bool = False,
    ) -> None:
        ctx = self.ctx
        paths = ctx.outcome_paths
        assert paths is not None
        if reused:
            paths.append(path)
            ctx.reused_outcome_paths.add(path)
            return
        if outcome_json is None:
            return
        paths.append(path)
        if declares_files:
            self._declared.append(path)
        # Kept for outcomes.json, so it need not read the file back; only small ones, and a
        # bounded total: a long loop must not hold every outcome twice.
        if len(outcome_json) <= _KEEP_OUTCOME_BYTES and self._kept_bytes < _KEEP_OUTCOMES_TOTAL:
            ctx.outcome_bytes[path] = outcome_json
            self._kept_bytes += len(outcome_json)

    def run_finished(self, **_: Any) -> None:
        """Write ``.trace/reused.json`` (a re-run) and then ``.trace/outcomes.json``. A failure
        to write them costs their readers time (they read the node files), not the run: it is
        logged."""
        ctx = self.ctx
        run_dir = ctx.require_run_dir()
        try:
            if self.reuse is not None:
                self.reuse.write_record()
            # The nodes that completed with a directory of their own: those the run holds an
            # outcome of, but did not reuse.
            reused = ctx.reused_outcome_paths
            paths = ctx.outcome_paths or []
            held = [p for p in paths if p not in reused] if reused else paths
            declared = self._declared
            outcome_bytes: Mapping[str, bytes] = ctx.outcome_bytes
            if self.reuse is not None and self.reuse.copied:
                held = held + self.reuse.copied
                declared = declared + self.reuse.copied_declared
                outcome_bytes = ChainMap(ctx.outcome_bytes, self.reuse.copied_bytes)
            write_trace_file(str(run_dir.path), OUTCOMES_FILE, outcomes_document(held, outcome_bytes, declared))
        except OSError as exc:
            if ctx.telemetry is not None:
                ctx.telemetry.logger.warning("could not record the run's outcomes for re-runs", error=str(exc))
