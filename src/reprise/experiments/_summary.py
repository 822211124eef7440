"""``summary.json`` and ``errors.json``, computed by streaming ``runs.jsonl``.

Nothing per run is held while an experiment runs: at the end of a session the file is read
once, keeping only counts, sums, one float per run for the duration percentiles and the set
of (input, iteration) keys seen (so a run cancelled in one session and finished by ``resume``
counts once). Errors are streamed to ``errors.json`` as they are read.
"""

from __future__ import annotations

import json
import math
import os
from array import array

from pydantic import BaseModel

from reprise.experiments._folder import ExperimentFolder
from reprise.experiments._item import FAILURE_STATUSES

__all__ = ["ExperimentSummary", "percentile", "summarize"]


class ExperimentSummary(BaseModel):
    """What ``await experiment.run()`` returns and ``summary.json`` holds."""

    name: str
    folder: str
    path: str
    target: str | None = None
    started_at: str
    ended_at: str
    #: Planned runs: inputs x iterations.
    total: int
    #: Runs with a final status (completed, failed, timeout, crashed).
    finished: int
    successes: int
    #: Failed, timed out or crashed.
    failures: int
    #: ``successes / finished`` (``None`` before anything finished).
    success_rate: float | None
    #: Finished runs by status.
    by_status: dict[str, int]
    #: Runs stopped by Ctrl-C or :meth:`Experiment.stop` (``resume`` runs them again).
    cancelled: int
    #: Runs never started (an interrupted experiment).
    not_run: int
    duration_p50_s: float | None
    duration_p95_s: float | None
    duration_mean_s: float | None
    #: Model tokens and cost in US dollars over all runs (``None`` when no run reported any).
    tokens: int | None
    cost_usd: float | None
    #: This session was interrupted before it ran everything.
    interrupted: bool
    #: Every planned run has a final status.
    complete: bool


def percentile(sorted_values: array[float] | list[float], q: float) -> float | None:
    """Nearest-rank percentile: a value some run actually took (``None`` for no values)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarize(
    folder: ExperimentFolder,
    *,
    total: int,
    target: str | None,
    started_at: str,
    ended_at: str,
    interrupted: bool,
) -> ExperimentSummary:
    """Read ``runs.jsonl`` once; write ``errors.json`` and ``summary.json``; return the summary."""
    finished: set[tuple[str, int]] = set()
    cancelled: set[tuple[str, int]] = set()
    durations: array[float] = array("d")
    by_status: dict[str, int] = {}
    errors_by_type: dict[str, int] = {}
    tokens: int | None = None
    cost: float | None = None
    error_count = 0
    tmp = folder.errors_path.with_name(f".{folder.errors_path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as errors:
        errors.write('{\n  "errors": [')
        for line in folder.iter_lines():
            key = (str(line["input_id"]), int(line["iteration"]))
            status = str(line.get("status"))
            if status == "cancelled":
                cancelled.add(key)
                continue
            if key in finished:
                continue  # a duplicate line (two sessions raced): the first one counts
            finished.add(key)
            by_status[status] = by_status.get(status, 0) + 1
            duration = line.get("duration_s")
            if isinstance(duration, (int, float)):
                durations.append(float(duration))
            if isinstance(line.get("tokens"), int):
                tokens = (tokens or 0) + line["tokens"]
            if isinstance(line.get("cost_usd"), (int, float)):
                cost = (cost or 0.0) + float(line["cost_usd"])
            if status in FAILURE_STATUSES:
                error_type = str(line.get("error_type") or status)
                errors_by_type[error_type] = errors_by_type.get(error_type, 0) + 1
                entry = {
                    k: line.get(k)
                    for k in ("input_id", "iteration", "run_id", "status", "error_type", "error_message", "error_path")
                }
                errors.write(("\n    " if error_count == 0 else ",\n    ") + json.dumps(entry, ensure_ascii=False))
                error_count += 1
        errors.write("\n  ],\n" if error_count else "],\n")
        errors.write(f'  "count": {error_count},\n')
        errors.write('  "by_type": ' + json.dumps(dict(sorted(errors_by_type.items())), ensure_ascii=False) + "\n}\n")
    os.replace(tmp, folder.errors_path)

    successes = by_status.get("completed", 0)
    n_finished = len(finished)
    n_cancelled = len(cancelled - finished)
    sorted_durations = array("d", sorted(durations))
    summary = ExperimentSummary(
        name=folder.name,
        folder=folder.path.name,
        path=str(folder.path),
        target=target,
        started_at=started_at,
        ended_at=ended_at,
        total=total,
        finished=n_finished,
        successes=successes,
        failures=n_finished - successes,
        success_rate=round(successes / n_finished, 6) if n_finished else None,
        by_status=dict(sorted(by_status.items())),
        cancelled=n_cancelled,
        not_run=max(0, total - n_finished - n_cancelled),
        duration_p50_s=percentile(sorted_durations, 0.5),
        duration_p95_s=percentile(sorted_durations, 0.95),
        duration_mean_s=round(sum(durations) / len(durations), 6) if durations else None,
        tokens=tokens,
        cost_usd=round(cost, 10) if cost is not None else None,
        interrupted=interrupted,
        complete=n_finished >= total,
    )
    from reprise.run._files import write_json_atomic

    write_json_atomic(folder.summary_path, summary.model_dump(mode="json"))
    return summary
