"""``reprise runs``, ``show``, ``trace``, ``logs`` and ``diff``: read what runs did."""

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
    format_duration,
    format_table,
    level_name,
    note_skipped,
    resolve_run,
    run_root_of,
)
from reprise.errors import RunFileError

__all__ = ["register"]

_STATUSES = ("running", "completed", "failed", "cancelled", "crashed")


def register(subparsers: Any) -> None:
    """Add ``runs``, ``show``, ``trace``, ``logs`` and ``diff``."""
    p = subparsers.add_parser(
        "runs",
        help="list runs, newest first",
        description="List the runs under the run root, newest first, from the run index "
        "(<run root>/.index.sqlite), which is synced with the run directories first.",
    )
    p.add_argument("--status", action="append", choices=_STATUSES, help="only runs with this status (repeatable)")
    p.add_argument("--root", metavar="ID", help="only runs of this root component")
    p.add_argument("--project", metavar="NAME", help="only runs of this project (reprise.init(project=...))")
    p.add_argument(
        "--tag", dest="tags", action="append", default=[], metavar="KEY=VALUE", help="only runs with this tag"
    )
    count = p.add_mutually_exclusive_group()
    count.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs (default 20)")
    count.add_argument("--all", action="store_true", help="every run (no --limit)")
    p.add_argument(
        "--experiments",
        action="store_true",
        help="also list the runs experiments made (hidden by default; --tag experiment=NAME shows one's)",
    )
    p.add_argument("--rebuild-index", action="store_true", help="rebuild the index from the run directories first")
    add_common(p)
    p.set_defaults(handler=_runs)

    p = subparsers.add_parser(
        "show",
        help="a run's element tree: status, duration, reuse, tokens and cost",
        description="Show a run and its element tree from the result.json files in its directory.",
    )
    p.add_argument("run_id", metavar="RUN", help=RUN_HELP)
    add_common(p)
    p.set_defaults(handler=_show)

    p = subparsers.add_parser(
        "trace",
        help="a run's span tree",
        description="Show the spans of a run as a tree, children in start order. --json lists every span.",
    )
    p.add_argument("run_id", metavar="RUN", help=RUN_HELP)
    p.add_argument(
        "--ascii",
        action="store_true",
        help="draw the tree with ASCII characters only (chosen by itself where the terminal cannot show the box "
        "characters)",
    )
    p.add_argument(
        "--max-children", type=int, default=100, metavar="N", help="show at most N children per span (default 100)"
    )
    p.add_argument("--all", action="store_true", help="show every child (overrides --max-children)")
    add_common(p)
    p.set_defaults(handler=_trace)

    p = subparsers.add_parser("logs", help="a run's structured logs", description="Show a run's log lines.")
    p.add_argument("run_id", metavar="RUN", help=RUN_HELP)
    p.add_argument("--node", metavar="PATH", help="only lines of this element and the elements below it")
    add_level(p, "lines")
    add_common(p)
    p.set_defaults(handler=_logs)

    p = subparsers.add_parser(
        "diff",
        help="which outcomes changed between two runs",
        description="Compare two runs' outcome branches in the git outcome repository.",
    )
    p.add_argument("run_a", metavar="RUN_A", help=RUN_HELP)
    p.add_argument("run_b", metavar="RUN_B", help=RUN_HELP)
    p.add_argument("--values", action="store_true", help="also show each changed outcome before and after")
    add_common(p)
    p.set_defaults(handler=_diff)


def _api(args: argparse.Namespace) -> Any:
    from reprise._api import Api

    return Api(run_root_of(args))


def _tags(items: list[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key] = value
    return tags


def _stamp(iso: str | None) -> str:
    return (iso or "-")[:19].replace("T", " ")


# -- runs ----------------------------------------------------------------------------------------
def _runs(args: argparse.Namespace, out: Output) -> int:
    api = _api(args)
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be >= 0")
    if args.rebuild_index:
        api.index.rebuild()
    from reprise.run._index import EXPERIMENT_TAG

    tags = _tags(args.tags)
    limit = None if args.all else args.limit
    # One more than asked, to tell whether there are more.
    runs = api.runs(
        args.project,
        status=args.status,
        root=args.root,
        tags=tags,
        limit=None if limit is None else limit + 1,
        experiments=args.experiments or EXPERIMENT_TAG in tags,
    )
    more = limit is not None and len(runs) > limit
    runs = runs[:limit]
    note_skipped(out, api.index.unreadable)

    def text() -> str:
        if not runs:
            return f"no runs under {api.run_root}"
        rows = [
            [
                r.run_id,
                r.name or "-",
                r.status.value,
                r.root_component_id,
                r.tags.get(EXPERIMENT_TAG, ""),
                _stamp(r.started_at),
                format_duration(r.duration_s),
                r.previous_run_id or "",
            ]
            for r in runs
        ]
        columns = ["RUN ID", "NAME", "STATUS", "ROOT", "EXPERIMENT", "STARTED (UTC)", "DURATION", "FROM"]
        return format_table(columns, rows)

    out.emit([r.to_json() for r in runs], text)
    if more and not out.json:
        out.note(f"(the newest {limit} shown: --limit N or --all for more)")
    return EXIT_OK


# -- show ----------------------------------------------------------------------------------------
def _show(args: argparse.Namespace, out: Output) -> int:
    api = _api(args)
    problems: list[RunFileError] = []
    data = api.summary(resolve_run(args, args.run_id), problems=problems)
    note_skipped(out, problems)
    info = api.run(data["run"]["run_id"])
    totals = data["totals"]

    def text() -> str:
        head = [
            f"run      {info.run_id}",
            f"status   {info.status.value} in {format_duration(info.duration_s)}"
            + (f"  ({info.error_msg})" if info.error_msg else ""),
            f"root     {info.root_component_id}"
            + (f"  ({info.tags['reprise.target']})" if "reprise.target" in info.tags else ""),
        ]
        if info.previous_run_id:
            at = f" at {info.start_hierarchy_path}" if info.start_hierarchy_path else ""
            head.append(f"from     {info.previous_run_id}{at}")
        usage = f"nodes    {totals['executed']} executed, {totals['reused']} reused, {totals['failed']} failed"
        if totals["input_tokens"] is not None or totals["output_tokens"] is not None:
            usage += f"; tokens in {_n(totals['input_tokens'])} out {_n(totals['output_tokens'])}"
        if totals["cost"] is not None:
            usage += f"; cost ${totals['cost']:.4f}"
        if totals["reused"] and (totals["cost"] is not None or totals["input_tokens"] is not None):
            usage += " (executed nodes only: reused ones cost nothing this time)"
        head.append(usage)
        rows: list[list[str]] = []
        _tree_rows(data["tree"], "", "", rows)
        table = format_table(["ELEMENT", "TYPE", "STATUS", "DURATION", "TOKENS", "COST", "NOTE"], rows)
        return "\n".join(head) + "\n\n" + table

    out.emit(data, text)
    return EXIT_OK


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:,.0f}"


def _tree_rows(element: dict[str, Any], prefix: str, connector: str, rows: list[list[str]]) -> None:
    kind = element["node_kind"] or element["element_type"]
    status = "reused" if element["reused"] else element["status"]
    tokens = ""
    if element["input_tokens"] is not None or element["output_tokens"] is not None:
        tokens = f"{_n(element['input_tokens'])}/{_n(element['output_tokens'])}"
    cost = f"${element['cost']:.4f}" if element["cost"] is not None else ""
    note = ""
    if element["reused"]:
        note = f"from {element['reused_from']}"
        origin = element.get("origin_run_id")
        if origin and origin != element["reused_from"]:
            note += f" (ran in {origin})"
    elif element["error"]:
        note = element["error"].splitlines()[0][:120]
    elif element["attempts"] and element["attempts"] > 1:
        note = f"{element['attempts']} attempts"
    duration = "" if element["reused"] else format_duration(element["duration_s"])
    rows.append([f"{prefix}{connector}{element['name']}", kind, status, duration, tokens, cost, note])
    children = element["children"]
    child_prefix = prefix + ("" if not connector else ("    " if connector == "└── " else "│   "))
    for i, child in enumerate(children):
        _tree_rows(child, child_prefix, "└── " if i == len(children) - 1 else "├── ", rows)


# -- trace ---------------------------------------------------------------------------------------
def _trace(args: argparse.Namespace, out: Output) -> int:
    from reprise.run._trace import read_spans, render_trace_tree

    run = _api(args).run_dir(resolve_run(args, args.run_id))
    if not (run.trace_dir / "trace.jsonl").is_file():
        raise UsageError(f"run {run.run_id} has no trace (tracing was off)")
    problems: list[RunFileError] = []
    spans = read_spans(run.path, problems)
    note_skipped(out, problems)
    data = [
        {
            "trace_id": s.trace_id,
            "span_id": s.span_id,
            "parent_span_id": s.parent_span_id,
            "name": s.name,
            "start_ns": s.start_ns,
            "end_ns": s.end_ns,
            "duration_s": s.duration_s,
            "status": s.status,
            "reused": s.reused,
            "attributes": s.attributes,
        }
        for s in spans
    ]
    if args.max_children < 1:
        raise UsageError("--max-children must be at least 1")
    max_children = None if args.all else args.max_children
    ascii_only = args.ascii or not _can_draw_boxes(out.stdout)
    out.emit(data, lambda: render_trace_tree(spans, ascii=ascii_only, max_children=max_children) or "(no spans)")
    return EXIT_OK


def _can_draw_boxes(stream: Any) -> bool:
    """Whether ``stream``'s encoding has the box-drawing characters of the tree."""
    try:
        "└├│".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


# -- logs ----------------------------------------------------------------------------------------
_LOG_NOISE = {"timestamp", "level", "event", "run_id", "hierarchy_path", "trace_id", "span_id"}


def _logs(args: argparse.Namespace, out: Output) -> int:
    problems: list[RunFileError] = []
    lines = _api(args).logs(resolve_run(args, args.run_id), node=args.node, level=args.level, problems=problems)
    note_skipped(out, problems)

    def text() -> str:
        rendered = []
        for item in lines:
            extra = " ".join(
                f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
                for k, v in item.items()
                if k not in _LOG_NOISE
            )
            rendered.append(
                f"{item.get('timestamp', '-')}  {level_name(item.get('level')):<7}  {item.get('hierarchy_path', '-')}  "
                f"{item.get('event', '')}" + (f"  {extra}" if extra else "")
            )
        return "\n".join(rendered) if rendered else "(no log lines)"

    out.emit(lines, text)
    return EXIT_OK


# -- diff ----------------------------------------------------------------------------------------
def _diff(args: argparse.Namespace, out: Output) -> int:
    run_a, run_b = resolve_run(args, args.run_a), resolve_run(args, args.run_b)
    changes = _api(args).diff(run_a, run_b, values=args.values)

    def text() -> str:
        if not changes:
            return f"no outcome changed between {run_a} and {run_b}"
        lines = []
        for c in changes:
            lines.append(f"{c.status}  {c.hierarchy_path or c.path}" + ("" if c.hierarchy_path else "  (file)"))
            if args.values:
                if c.status != "A":
                    lines.append(f"   - {json.dumps(c.before, default=str)[:400]}")
                if c.status != "D":
                    lines.append(f"   + {json.dumps(c.after, default=str)[:400]}")
        return "\n".join(lines)

    out.emit([c.to_json(values=args.values) for c in changes], text)
    return EXIT_OK
