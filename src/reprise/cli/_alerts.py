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
    add_level,
    format_table,
    level_name,
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
    add_level(p, "alerts")
    p.add_argument("--since", metavar="TIMESTAMP", help="only alerts after this instant (ISO 8601)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N alerts (the newest)")
    add_common(p)
    p.set_defaults(handler=_alerts)

    p = subparsers.add_parser(
        "metrics",
        help="metrics a run recorded with reprise.log or ctx.metric",
        description="List the metrics a run recorded, in order: reprise.log lines (with their step) and "
        "ctx.metric values (no step; their attributes in braces). Numbers are rounded to 4 significant "
        "digits; --json gives them exactly.",
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
        # Every alert is at least "debug": no filter.
        level = None if args.level == "debug" else args.level
        alerts = api.alerts(
            args.project, since=args.since, level=level, run=run, limit=args.limit, problems=problems
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
                level_name(a.get("level")),
                a.get("run_id", ""),
                a.get("hierarchy_path") or "-",
                str(a.get("title", "")) + (f": {a['text']}" if a.get("text") else ""),
            ]
            for a in alerts
        ]
        return format_table(["TIMESTAMP (UTC)", "LEVEL", "RUN", "NODE", "ALERT"], rows)

    out.emit(alerts, text)
    return EXIT_OK


def _rounded(value: Any) -> str:
    """A value as people read it: a float to 4 significant digits (``0.3142``, ``1.235e+06``),
    anything else as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value, default=str)


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
            values = "  ".join(f"{k}={_rounded(v)}" for k, v in shown.items())
            attributes = line.get("attributes")
            if isinstance(attributes, dict) and attributes:
                values += "  {" + ", ".join(f"{k}={_rounded(v)}" for k, v in attributes.items()) + "}"
            step = line.get("step")
            rows.append(["-" if step is None else str(step), line.get("hierarchy_path") or "-", values])
        return format_table(["STEP", "NODE", "METRICS"], rows)

    out.emit(lines, text)
    return EXIT_OK
