"""Replay a finished run's trace, metrics and logs into an OpenTelemetry backend over OTLP.

A run writes its telemetry to files (``.trace/trace.jsonl`` and ``metrics.jsonl`` in OTLP/JSON,
``logs.jsonl`` as structured log lines), so a run made without live export can still be looked
at in Jaeger, Tempo, Honeycomb or any OTLP backend afterwards: ``reprise export RUN
--otlp-endpoint URL``. The files are read back into the OpenTelemetry SDK's own objects and sent
by the same OTLP exporters live export uses (:mod:`reprise.observability._export`), so protocol,
headers and the ``OTEL_EXPORTER_OTLP_*`` variables work the same way. Element spans are sent
under short names (the element's id) with the whole path in ``reprise.hierarchy_path``, so a
backend's tree stays readable. (Loading the files into
protobuf by hand trips on OTLP/JSON's hex ids, which protobuf's JSON parser reads as base64.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from reprise.errors import RepriseError
from reprise.observability._export import LiveLogs, _exporter
from reprise.observability._settings import ObservabilitySettings
from reprise.run._trace import decode_attributes

__all__ = ["ReplayReport", "replay_run"]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What :func:`replay_run` sent: spans, metric data points and log records."""

    spans: int
    metric_points: int
    log_records: int


def replay_run(run_dir: Path, settings: ObservabilitySettings) -> ReplayReport:
    """Send the spans, metrics and logs in ``run_dir/.trace`` to the OTLP endpoint ``settings``
    names; :class:`RepriseError` naming the signal and endpoint if one is refused."""
    trace_dir = Path(run_dir) / ".trace"
    resource: Resource | None = None
    spans = list(_read_spans(trace_dir / "trace.jsonl"))
    if spans:
        resource = spans[0].resource
        _send(settings, "traces", spans)
    metrics = list(_read_metrics(trace_dir / "metrics.jsonl"))
    scopes = [sm for data in metrics for rm in data.resource_metrics for sm in rm.scope_metrics]
    points = sum(len(m.data.data_points) for sm in scopes for m in sm.metrics)
    for data in metrics:
        resource = resource or data.resource_metrics[0].resource
        _send(settings, "metrics", data)
    records = _replay_logs(trace_dir / "logs.jsonl", settings, resource or Resource.create({}))
    return ReplayReport(spans=len(spans), metric_points=points, log_records=records)


def _send(settings: ObservabilitySettings, signal: str, data: Any) -> None:
    endpoint = settings.resolved_endpoint(signal)
    if not endpoint:
        raise RepriseError("no OTLP endpoint to export to")
    exporter = _exporter(settings, signal, endpoint)
    try:
        result = exporter.export(data)
    finally:
        exporter.shutdown()
    if result.name != "SUCCESS":
        raise RepriseError(f"the OTLP endpoint {endpoint} did not take the run's {signal}")


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, a torn last line (a crash mid-write) skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            if number == len(lines):
                return
            raise RepriseError(f"{path}:{number}: not a JSON line") from None
        if isinstance(item, dict):
            yield item


# -- traces ------------------------------------------------------------------------------------
def _resource(data: Mapping[str, Any]) -> Resource:
    return Resource.create(decode_attributes(data.get("attributes")))


def _scope(data: Mapping[str, Any]) -> InstrumentationScope:
    return InstrumentationScope(data.get("name", ""), data.get("version") or None)


def _context(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=TraceFlags(1))


def _read_spans(path: Path) -> Iterator[ReadableSpan]:
    for request in _lines(path):
        for rs in request.get("resourceSpans", ()):
            resource = _resource(rs.get("resource", {}))
            for ss in rs.get("scopeSpans", ()):
                scope = _scope(ss.get("scope", {}))
                for s in ss.get("spans", ()):
                    yield _span(s, resource, scope)


def _span(s: Mapping[str, Any], resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
    trace_id = s["traceId"]
    status = s.get("status") or {}
    parent = s.get("parentSpanId")
    kind = int(s.get("kind", 1))  # OTLP counts from UNSPECIFIED = 0, the SDK from INTERNAL = 0
    attributes = decode_attributes(s.get("attributes"))
    return ReadableSpan(
        name=_short_name(s.get("name", ""), attributes),
        context=_context(trace_id, s["spanId"]),
        parent=_context(trace_id, parent) if parent else None,
        resource=resource,
        attributes=attributes,
        events=[
            Event(e.get("name", ""), decode_attributes(e.get("attributes")), int(e.get("timeUnixNano", 0)))
            for e in s.get("events", ())
        ],
        links=[
            Link(_context(link["traceId"], link["spanId"]), decode_attributes(link.get("attributes")))
            for link in s.get("links", ())
        ],
        kind=SpanKind(max(kind - 1, 0)),
        status=Status(StatusCode(int(status.get("code", 0))), status.get("message") or None),
        start_time=int(s.get("startTimeUnixNano", 0)),
        end_time=int(s.get("endTimeUnixNano", 0)),
        instrumentation_scope=scope,
    )


def _short_name(name: str, attributes: Mapping[str, Any]) -> str:
    """An element span's name as backends show it in a tree: its id (``classify``; an
    iteration ``loop[3]``), the whole path staying in ``reprise.hierarchy_path``. The run's
    span and spans a node opened itself keep their names."""
    path = attributes.get("reprise.hierarchy_path")
    if not isinstance(path, str) or attributes.get("reprise.element_type") in (None, "run", "user_span"):
        return name
    parts = path.split(".")
    if len(parts) > 1 and parts[-1].isdigit():
        return f"{parts[-2]}[{parts[-1]}]"
    return parts[-1]


# -- metrics -----------------------------------------------------------------------------------
def _read_metrics(path: Path) -> Iterator[MetricsData]:
    for request in _lines(path):
        resource_metrics = []
        for rm in request.get("resourceMetrics", ()):
            scope_metrics = [
                ScopeMetrics(
                    scope=_scope(sm.get("scope", {})),
                    metrics=[m for m in (_metric(d) for d in sm.get("metrics", ())) if m is not None],
                    schema_url=sm.get("schemaUrl", ""),
                )
                for sm in rm.get("scopeMetrics", ())
            ]
            resource_metrics.append(
                ResourceMetrics(_resource(rm.get("resource", {})), scope_metrics, rm.get("schemaUrl", ""))
            )
        if resource_metrics:
            yield MetricsData(resource_metrics=resource_metrics)


def _number(point: Mapping[str, Any]) -> NumberDataPoint:
    value: float = int(point["asInt"]) if "asInt" in point else float(point.get("asDouble", 0.0))
    return NumberDataPoint(
        attributes=decode_attributes(point.get("attributes")),
        start_time_unix_nano=int(point.get("startTimeUnixNano", 0)),
        time_unix_nano=int(point.get("timeUnixNano", 0)),
        value=value,
    )


def _histogram_point(point: Mapping[str, Any]) -> HistogramDataPoint:
    return HistogramDataPoint(
        attributes=decode_attributes(point.get("attributes")),
        start_time_unix_nano=int(point.get("startTimeUnixNano", 0)),
        time_unix_nano=int(point.get("timeUnixNano", 0)),
        count=int(point.get("count", 0)),
        sum=float(point.get("sum", 0.0)),
        bucket_counts=[int(c) for c in point.get("bucketCounts", ())],
        explicit_bounds=[float(b) for b in point.get("explicitBounds", ())],
        min=float(point.get("min", 0.0)),
        max=float(point.get("max", 0.0)),
    )


def _metric(d: Mapping[str, Any]) -> Metric | None:
    """One OTLP/JSON metric as the SDK's; ``None`` for a kind reprise does not write."""
    data: Any
    if "histogram" in d:
        h = d["histogram"]
        data = Histogram(
            data_points=[_histogram_point(p) for p in h.get("dataPoints", ())],
            aggregation_temporality=AggregationTemporality(int(h.get("aggregationTemporality", 2))),
        )
    elif "sum" in d:
        s = d["sum"]
        data = Sum(
            data_points=[_number(p) for p in s.get("dataPoints", ())],
            aggregation_temporality=AggregationTemporality(int(s.get("aggregationTemporality", 2))),
            is_monotonic=bool(s.get("isMonotonic", False)),
        )
    elif "gauge" in d:
        data = Gauge(data_points=[_number(p) for p in d["gauge"].get("dataPoints", ())])
    else:
        return None
    return Metric(name=d.get("name", ""), description=d.get("description", ""), unit=d.get("unit", ""), data=data)


# -- logs --------------------------------------------------------------------------------------
class _Checked:
    """A log exporter that remembers whether every batch was taken (the batch processor that
    calls it keeps the result to itself)."""

    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter
        self.failed = False

    def export(self, batch: Sequence[Any]) -> Any:
        result = self._exporter.export(batch)
        self.failed = self.failed or result.name != "SUCCESS"
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self._exporter.force_flush(timeout_millis))


def _replay_logs(path: Path, settings: ObservabilitySettings, resource: Resource) -> int:
    lines = list(_lines(path))
    if not lines:
        return 0
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    endpoint = settings.resolved_endpoint("logs")
    if not endpoint:
        raise RepriseError("no OTLP endpoint to export to")
    exporter = _Checked(_exporter(settings, "logs", endpoint))
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_queue_size=max(len(lines), 2048)))  # type: ignore[arg-type]
    logs = LiveLogs(provider)
    for line in lines:
        logs.processor(None, str(line.get("level", "info")), line)
    logs.shutdown()
    if exporter.failed:
        raise RepriseError(f"the OTLP endpoint {endpoint} did not take the run's logs")
    return len(lines)
