"""OTLP/JSON encoding of SDK spans and metrics: the format of the OpenTelemetry Collector's file
exporter, which its ``otlpjsonfile`` receiver reads back.

This is the protobuf JSON mapping with OTLP's deviations ("JSON Protobuf Encoding" in the OTLP
specification): trace and span ids are lowercase hex (not base64), enums are integers (never
names), keys are lowerCamelCase. As in the protobuf mapping, 64-bit integers (times in
nanoseconds, counts, ``intValue``) are decimal strings, doubles are JSON numbers or ``"NaN"``,
``"Infinity"``, ``"-Infinity"``, and empty fields are left out. Output is ASCII (non-ASCII text
is ``\\u`` escaped), so a line is valid UTF-8 whatever a user puts in an attribute.

Written by hand because the Python SDK ships no OTLP/JSON encoder (only protobuf over HTTP and
gRPC); the exporters in :mod:`reprise.observability._telemetry` use it.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram,
    Gauge,
    Histogram,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Status

__all__ = [
    "SpanLineEncoder",
    "any_value",
    "encode_attributes",
    "encode_metrics",
    "encode_span",
    "metrics_request_line",
]

_COMPACT = (",", ":")

# OTLP SpanFlags: bit 8 says "bit 9 is known", bit 9 says "the parent is remote".
_FLAG_HAS_IS_REMOTE = 0x100
_FLAG_IS_REMOTE = 0x200


def _double(value: float) -> float | str:
    """A double as the protobuf JSON mapping wants it: non-finite values are strings."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def any_value(value: Any) -> dict[str, Any]:
    """An OTLP ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": _double(value)}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": encode_attributes(value)}}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """An OTLP ``KeyValue`` list."""
    if not attributes:
        return []
    return [{"key": str(k), "value": any_value(v)} for k, v in attributes.items()]


def _dumps(data: Any) -> str:
    """Compact, ASCII, strict JSON (non-finite doubles are already strings, see ``_double``);
    ``str()`` of anything the encoders above did not foresee."""
    return json.dumps(data, separators=_COMPACT, ensure_ascii=True, allow_nan=False, default=str)


def _resource(resource: Resource) -> dict[str, Any]:
    return {"attributes": encode_attributes(resource.attributes)}


def _scope(scope: InstrumentationScope | None) -> dict[str, Any]:
    if scope is None:
        return {}
    out: dict[str, Any] = {"name": scope.name}
    if scope.version:
        out["version"] = scope.version
    return out


def _events(events: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        {
            "timeUnixNano": str(e.timestamp),
            "name": e.name,
            **({"attributes": encode_attributes(e.attributes)} if e.attributes else {}),
        }
        for e in events
    ]


def _links(links: Iterable[Link]) -> list[dict[str, Any]]:
    return [
        {
            "traceId": f"{link.context.trace_id:032x}",
            "spanId": f"{link.context.span_id:016x}",
            **({"attributes": encode_attributes(link.attributes)} if link.attributes else {}),
        }
        for link in links
    ]


def _status(status: Status) -> dict[str, Any]:
    out: dict[str, Any] = {}
    code = status.status_code.value
    if code:
        out["code"] = code
    if status.description:
        out["message"] = status.description
    return out


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    """One ended SDK span as an OTLP ``Span`` dict."""
    ctx = span.context
    assert ctx is not None
    out: dict[str, Any] = {"traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}"}
    if ctx.trace_state:
        out["traceState"] = ctx.trace_state.to_header()
    parent = span.parent
    if parent is not None:
        out["parentSpanId"] = f"{parent.span_id:016x}"
    flags = int(ctx.trace_flags) | _FLAG_HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= _FLAG_IS_REMOTE
    out["flags"] = flags
    out["name"] = span.name
    # Python's SpanKind starts at INTERNAL=0; OTLP's at UNSPECIFIED=0, INTERNAL=1.
    out["kind"] = span.kind.value + 1
    out["startTimeUnixNano"] = str(span.start_time or 0)
    out["endTimeUnixNano"] = str(span.end_time or 0)
    if span.attributes:
        out["attributes"] = encode_attributes(span.attributes)
    if span.dropped_attributes:
        out["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        out["events"] = _events(span.events)
    if span.dropped_events:
        out["droppedEventsCount"] = span.dropped_events
    if span.links:
        out["links"] = _links(span.links)
    if span.dropped_links:
        out["droppedLinksCount"] = span.dropped_links
    out["status"] = _status(span.status)
    return out


class SpanLineEncoder:
    """Encodes ended spans as ``ExportTraceServiceRequest`` lines, for spans of one resource and
    one instrumentation scope (a run's provider hands out one tracer): their JSON is built once."""

    __slots__ = ("_prefix", "_suffix")

    def __init__(self, resource: Resource, scope: InstrumentationScope | None) -> None:
        resource_json = _dumps(_resource(resource))
        scope_json = _dumps(_scope(scope))
        self._prefix = f'{{"resourceSpans":[{{"resource":{resource_json},"scopeSpans":[{{"scope":{scope_json},"spans":['
        self._suffix = "]}]}]}\n"

    def line(self, spans: Iterable[ReadableSpan]) -> bytes:
        """One line holding ``spans``."""
        body = ",".join([_dumps(encode_span(s)) for s in spans])
        return f"{self._prefix}{body}{self._suffix}".encode("ascii")


# -- metrics -------------------------------------------------------------------------------


def _point_base(point: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if point.attributes:
        out["attributes"] = encode_attributes(point.attributes)
    out["startTimeUnixNano"] = str(point.start_time_unix_nano or 0)
    out["timeUnixNano"] = str(point.time_unix_nano)
    return out


def _exemplars(point: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ex in getattr(point, "exemplars", None) or ():
        item: dict[str, Any] = {}
        if ex.filtered_attributes:
            item["filteredAttributes"] = encode_attributes(ex.filtered_attributes)
        item["timeUnixNano"] = str(ex.time_unix_nano)
        if isinstance(ex.value, int) and not isinstance(ex.value, bool):
            item["asInt"] = str(ex.value)
        else:
            item["asDouble"] = _double(float(ex.value))
        if ex.span_id:
            item["spanId"] = f"{ex.span_id:016x}"
        if ex.trace_id:
            item["traceId"] = f"{ex.trace_id:032x}"
        out.append(item)
    return out


def _number_point(point: Any) -> dict[str, Any]:
    out = _point_base(point)
    if isinstance(point.value, int) and not isinstance(point.value, bool):
        out["asInt"] = str(point.value)
    else:
        out["asDouble"] = _double(float(point.value))
    exemplars = _exemplars(point)
    if exemplars:
        out["exemplars"] = exemplars
    return out


def _histogram_point(point: Any) -> dict[str, Any]:
    out = _point_base(point)
    out["count"] = str(point.count)
    out["sum"] = _double(float(point.sum))
    out["bucketCounts"] = [str(c) for c in point.bucket_counts]
    out["explicitBounds"] = [_double(float(b)) for b in point.explicit_bounds]
    exemplars = _exemplars(point)
    if exemplars:
        out["exemplars"] = exemplars
    if point.count:
        out["min"] = _double(float(point.min))
        out["max"] = _double(float(point.max))
    return out


def _exp_histogram_point(point: Any) -> dict[str, Any]:
    out = _point_base(point)
    out["count"] = str(point.count)
    out["sum"] = _double(float(point.sum))
    out["scale"] = point.scale
    out["zeroCount"] = str(point.zero_count)
    out["positive"] = {"offset": point.positive.offset, "bucketCounts": [str(c) for c in point.positive.bucket_counts]}
    out["negative"] = {"offset": point.negative.offset, "bucketCounts": [str(c) for c in point.negative.bucket_counts]}
    exemplars = _exemplars(point)
    if exemplars:
        out["exemplars"] = exemplars
    if point.count:
        out["min"] = _double(float(point.min))
        out["max"] = _double(float(point.max))
    return out


def _metric(metric: Any) -> dict[str, Any] | None:
    out: dict[str, Any] = {"name": metric.name}
    if metric.description:
        out["description"] = metric.description
    if metric.unit:
        out["unit"] = metric.unit
    data = metric.data
    if not data.data_points:
        return None
    if isinstance(data, Sum):
        out["sum"] = {
            "dataPoints": [_number_point(p) for p in data.data_points],
            "aggregationTemporality": int(data.aggregation_temporality.value),
            "isMonotonic": bool(data.is_monotonic),
        }
    elif isinstance(data, Gauge):
        out["gauge"] = {"dataPoints": [_number_point(p) for p in data.data_points]}
    elif isinstance(data, Histogram):
        out["histogram"] = {
            "dataPoints": [_histogram_point(p) for p in data.data_points],
            "aggregationTemporality": int(data.aggregation_temporality.value),
        }
    elif isinstance(data, ExponentialHistogram):
        out["exponentialHistogram"] = {
            "dataPoints": [_exp_histogram_point(p) for p in data.data_points],
            "aggregationTemporality": int(data.aggregation_temporality.value),
        }
    else:  # pragma: no cover - a data type newer than this encoder
        return None
    return out


def encode_metrics(data: MetricsData) -> dict[str, Any]:
    """An ``ExportMetricsServiceRequest``, without empty envelopes (the OTLP specification asks
    senders not to create them)."""
    resource_metrics = []
    for rm in data.resource_metrics:
        scope_metrics = []
        for sm in rm.scope_metrics:
            metrics = [m for m in (_metric(x) for x in sm.metrics) if m is not None]
            if metrics:
                scope_metrics.append({"scope": _scope(sm.scope), "metrics": metrics})
        if scope_metrics:
            resource_metrics.append({"resource": _resource(rm.resource), "scopeMetrics": scope_metrics})
    return {"resourceMetrics": resource_metrics}


def metrics_request_line(data: MetricsData) -> bytes | None:
    """``data`` as one ``metrics.jsonl`` line, or ``None`` when it holds no data point."""
    request = encode_metrics(data)
    if not request["resourceMetrics"]:
        return None
    return (_dumps(request) + "\n").encode("ascii")
