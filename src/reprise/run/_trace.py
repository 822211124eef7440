"""A terminal view of a run's trace: the span tree with durations, statuses and reuse marks.

::

    >>> print(render_trace_tree("runs/run_20260101_120000_abcdef"))  # doctest: +SKIP
    run rerun_20260101_120000_abcdef  FAILED  41.2 ms  demo.report: ValueError: empty
    └── flow demo  FAILED  40.1 ms
        ├── node demo.fetch  [python]  reused from run_20251231_090000_123456
        ├── node demo.parse  [python]  completed  30.5 ms  attempts=2
        └── node demo.report  [python]  FAILED  2.1 ms  ValueError: empty

``reprise trace RUN`` prints the same. The reading side
(:func:`read_spans`) tolerates a torn last line and spans whose parent never ended, which is
what a crashed run leaves behind, and can skip (and report) lines that are not spans.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprise.errors import RepriseError, RunFileError
from reprise.run._reading import read_run_jsonl, run_file_error

__all__ = ["SpanRecord", "decode_any_value", "decode_attributes", "read_spans", "render_trace_tree", "trace_file"]

_STATUS_ERROR = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanRecord:
    """One span read back from ``trace.jsonl`` (attributes decoded to Python values)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0
    status_message: str | None = None
    #: The span's events as written (OTLP/JSON ``Event`` objects: ``name``, ``timeUnixNano``,
    #: ``attributes``); decode their attributes with :func:`decode_attributes`.
    events: tuple[dict[str, Any], ...] = ()

    @property
    def duration_s(self) -> float:
        """Wall time in seconds."""
        return max(self.end_ns - self.start_ns, 0) / 1e9

    @property
    def status(self) -> str:
        """``reprise.status`` if set, else ``failed`` for an ERROR span and ``ok`` otherwise."""
        status = self.attributes.get("reprise.status")
        if isinstance(status, str):
            return status
        return "failed" if self.status_code == _STATUS_ERROR else "ok"

    @property
    def reused(self) -> bool:
        """Whether the element was reused from an earlier run instead of executed."""
        return self.attributes.get("reprise.reused") is True


def decode_any_value(value: Mapping[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` as a Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [decode_any_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return decode_attributes(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def decode_attributes(items: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """An OTLP/JSON ``KeyValue`` list as a dict."""
    return {kv["key"]: decode_any_value(kv.get("value", {})) for kv in items or ()}


def trace_file(run_dir: Path | str) -> Path:
    """The ``trace.jsonl`` of a run, given its directory, its ``.trace`` directory or the file."""
    path = Path(run_dir)
    for candidate in (path / ".trace" / "trace.jsonl", path / "trace.jsonl", path):
        if candidate.is_file():
            return candidate
    raise RepriseError(f"no trace found at {path} (expected {path / '.trace' / 'trace.jsonl'})")


def _spans_in(request: dict[str, Any]) -> list[SpanRecord]:
    return list(_each_span(request))


def _each_span(request: dict[str, Any]) -> Iterator[SpanRecord]:
    for resource_spans in request.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for s in scope_spans.get("spans", ()):
                status = s.get("status") or {}
                yield SpanRecord(
                    trace_id=s["traceId"],
                    span_id=s["spanId"],
                    parent_span_id=s.get("parentSpanId") or None,
                    name=s.get("name", ""),
                    start_ns=int(s.get("startTimeUnixNano", 0)),
                    end_ns=int(s.get("endTimeUnixNano", 0)),
                    attributes=decode_attributes(s.get("attributes")),
                    status_code=int(status.get("code", 0)),
                    status_message=status.get("message"),
                    events=tuple(s.get("events", ())),
                )


def read_spans(run_dir: Path | str, problems: list[RunFileError] | None = None) -> list[SpanRecord]:
    """Every span in a run's ``trace.jsonl``, in file order (the order they ended).

    A line that is not an OTLP/JSON trace request is added to ``problems`` and skipped; without
    a ``problems`` list it raises :class:`~reprise.errors.RunFileError`, except a torn last line
    (a crash mid-write), which is skipped."""
    path = trace_file(run_dir)
    spans: list[SpanRecord] = []
    for request in read_run_jsonl(path, problems):
        try:
            spans.extend(_spans_in(request))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            error = run_file_error(path, f"holds a line that is not an OTLP/JSON trace request ({exc!r})")
            if problems is None:
                raise error from None
            problems.append(error)
    return spans


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms" if seconds >= 0.0001 else f"{seconds * 1000:.3f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m {rest:04.1f}s"


def _describe(span: SpanRecord) -> str:
    attrs = span.attributes
    parts = [span.name]
    kind = attrs.get("reprise.node_kind")
    if kind:
        parts.append(f"[{kind}]")
    if span.reused:
        origin = attrs.get("reprise.reused_from")
        parts.append(f"reused from {origin}" if origin else "reused")
        return "  ".join(parts)
    status = span.status
    parts.append("FAILED" if status == "failed" else status)
    parts.append(_duration(span.duration_s))
    attempts = attrs.get("reprise.attempts")
    if isinstance(attempts, int) and attempts > 1:
        parts.append(f"attempts={attempts}")
    if status == "failed" and span.status_message and span.status_message != "failed":
        parts.append(span.status_message.splitlines()[0][:200])
    return "  ".join(parts)


def _sort_key(span: SpanRecord) -> tuple[int, str]:
    return (span.start_ns, span.name)


def render_trace_tree(
    run_dir: Path | str | Sequence[SpanRecord], *, ascii: bool = False, max_children: int | None = None
) -> str:
    """The span tree of a run as text, one span a line, children in start order.

    Each line: span name, node kind, status (``FAILED`` stands out), duration, attempts when
    more than one, the error of a failed span, and ``reused from <run>`` for a node a re-run
    took from an earlier run. Spans whose parent is missing (it was still open when the
    process died) are shown under a ``(unfinished span ...)`` line.

    Args:
        run_dir: a run directory (or its ``.trace`` directory or ``trace.jsonl``), or spans
            already read with :func:`read_spans`.
        ascii: draw the tree with ASCII characters only.
        max_children: show at most this many children per span, then a ``... N more`` line.
    """
    spans = list(run_dir) if isinstance(run_dir, Sequence) and not isinstance(run_dir, str) else read_spans(run_dir)
    tee, last, pipe, blank = ("|-- ", "`-- ", "|   ", "    ") if ascii else ("├── ", "└── ", "│   ", "    ")
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[SpanRecord]] = {}
    roots: list[SpanRecord] = []
    missing: dict[str, None] = {}
    for s in spans:
        if s.parent_span_id is None:
            roots.append(s)
        else:
            children.setdefault(s.parent_span_id, []).append(s)
            if s.parent_span_id not in by_id:
                missing[s.parent_span_id] = None
    for group in children.values():
        group.sort(key=_sort_key)
    roots.sort(key=_sort_key)

    out: list[str] = []
    # An explicit stack rather than recursion. Items: (span, or the id of a parent that never
    # ended, or a ready "... N more" line), the prefix of its line, its connector.
    stack: list[tuple[SpanRecord | str | _More, str, str]] = []
    tops: list[SpanRecord | str | _More] = [*roots, *missing]
    stack.extend((top, "", "") for top in reversed(tops))
    while stack:
        item, prefix, connector = stack.pop()
        if isinstance(item, _More):
            out.append(f"{prefix}{connector}... {item.count} more")
            continue
        if isinstance(item, SpanRecord):
            out.append(f"{prefix}{connector}{_describe(item)}")
            kids = children.get(item.span_id, [])
        else:
            out.append(f"{prefix}{connector}(unfinished span {item}: still open, or lost in a crash)")
            kids = children.get(item, [])
        child_prefix = prefix + ("" if not connector else (blank if connector == last else pipe))
        hidden = len(kids) - max_children if max_children is not None and len(kids) > max_children else 0
        entries: list[tuple[SpanRecord | str | _More, str, str]] = [
            (kid, child_prefix, tee) for kid in kids[: len(kids) - hidden]
        ]
        if hidden:
            entries.append((_More(hidden), child_prefix, tee))
        if entries:
            entries[-1] = (entries[-1][0], child_prefix, last)
        stack.extend(reversed(entries))
    return "".join(f"{line}\n" for line in out)


@dataclass(frozen=True, slots=True)
class _More:
    """The ``... N more`` line standing for children left out."""

    count: int
