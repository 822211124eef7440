"""``reprise alerts`` and ``reprise metrics``: what runs recorded with ``reprise.alert``/``log``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from reprise.cli._common import (
    EXIT_OK,
    RUN_HELP,
    Output,
    UsageError,
    add_common,
    format_table,
    note_skipped,
    resolve_run,
    run_root_of,
)
from reprise.errors import RunFileError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``alerts`` and ``metrics``."""
    p = subparsers.add_parser(
        "alerts",
        help="alerts raised by runs, newest first",
        description="List alerts (reprise.alert) of every run or of one, newest first. --since keeps "
        "those strictly after an instant: 2025-06-15T14:30:00Z, 2025-06-15T16:30:00+02:00 and "
        "2025-06-15T14:30:00 (taken as UTC) name the same instant. To poll, pass the timestamp of "
        "the newest alert seen.",
    )
    p.add_argument("--run", metavar="RUN", help=f"only this run's alerts: {RUN_HELP}")
    p.add_argument("--project", metavar="NAME", help="only alerts of this project's runs (and --run within it)")
    p.add_argument("--level", choices=("info", "warn", "error"), help="only alerts at or above this level")
    p.add_argument("--since", metavar="TIMESTAMP", help="only alerts after this instant (ISO 8601)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N alerts (the newest)")
    add_common(p)
    p.set_defaults(handler=_alerts)

    p = subparsers.add_parser(
        "metrics",
        help="metrics a run logged with reprise.log",
        description="List the metrics a run logged (reprise.log), in order.",
    )
    p.add_argument("run_id", metavar="RUN", help=RUN_HELP)
    p.add_argument("--name", metavar="METRIC", help="only lines holding this metric")
    add_common(p)
    p.set_defaults(handler=_metrics)


def _alerts(args: argparse.Namespace, out: Output) -> int:
    from reprise._api import Api

    problems: list[RunFileError] = []
    api = Api(run_root_of(args))
    run = api.resolve(args.run, project=args.project) if args.run is not None else None
    try:
        alerts = api.alerts(
            args.project, since=args.since, level=args.level, run=run, limit=args.limit, problems=problems
        )
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    note_skipped(out, problems)

    def text() -> str:
        if not alerts:
            return "no alerts"
        rows = [
            [
                a["timestamp"],
                str(a.get("level", "")).upper(),
                a.get("run_id", ""),
                a.get("hierarchy_path") or "-",
                str(a.get("title", "")) + (f": {a['text']}" if a.get("text") else ""),
            ]
            for a in alerts
        ]
        return format_table(["TIMESTAMP (UTC)", "LEVEL", "RUN", "NODE", "ALERT"], rows)

    out.emit(alerts, text)
    return EXIT_OK


def _metrics(args: argparse.Namespace, out: Output) -> int:
    from reprise._api import Api

    problems: list[RunFileError] = []
    lines = Api(run_root_of(args)).metrics(resolve_run(args, args.run_id), name=args.name, problems=problems)
    note_skipped(out, problems)

    def text() -> str:
        if not lines:
            return "no metrics"
        rows = []
        for line in lines:
            metrics = line.get("metrics") or {}
            shown = {args.name: metrics.get(args.name)} if args.name else metrics
            values = "  ".join(f"{k}={json.dumps(v, default=str)}" for k, v in shown.items())
            rows.append([str(line.get("step", "")), line.get("hierarchy_path") or "-", values])
        return format_table(["STEP", "NODE", "METRICS"], rows)

    out.emit(lines, text)
    return EXIT_OK
