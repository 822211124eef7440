"""OTLP/JSON encoding of SDK spans and metrics: the format of the OpenTelemetry Collector's file
exporter, which its ``otlpjsonfile`` receiver reads back.

The protobuf JSON mapping with OTLP's exceptions: trace and span ids are lowercase hex (not
base64), field names are lowerCamelCase, 64-bit integers (times in nanoseconds, counts,
``intValue``) are decimal strings, enums are integers, and empty fields are left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
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

__all__ = [
    "any_value",
    "encode_attributes",
    "encode_metrics",
    "encode_span",
    "spans_request_line",
    "SpanLineEncoder",
]


def any_value(value: Any) -> dict[str, Any]:
    """An OTLP ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        import base64

        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": encode_attributes(value)}}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """OTLP ``KeyValue`` list."""
    if not attributes:
        return []
    return [{"key": k, "value": any_value(v)} for k, v in attributes.items()]


def _resource(resource: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": encode_attributes(resource.attributes)}
    return out


def _scope(scope: InstrumentationScope | None) -> dict[str, Any]:
    if scope is None:
        return {}
    out: dict[str, Any] = {"name": scope.name}
    if scope.version:
        out["version"] = scope.version
    return out


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    """One OTLP ``Span``."""
    ctx = span.context
    assert ctx is not None
    out: dict[str, Any] = {
        "traceId": f"{ctx.trace_id:032x}",
        "spanId": f"{ctx.span_id:016x}",
    }
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    out["flags"] = int(ctx.trace_flags) | 0x100 | (0x200 if span.parent is not None and span.parent.is_remote else 0)
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
        out["events"] = [
            {
                "timeUnixNano": str(e.timestamp),
                "name": e.name,
                **({"attributes": encode_attributes(e.attributes)} if e.attributes else {}),
            }
            for e in span.events
        ]
    if span.links:
        out["links"] = [
            {
                "traceId": f"{link.context.trace_id:032x}",
                "spanId": f"{link.context.span_id:016x}",
                **({"attributes": encode_attributes(link.attributes)} if link.attributes else {}),
            }
            for link in span.links
        ]
    status: dict[str, Any] = {}
    code = span.status.status_code.value
    if code:
        status["code"] = code
    if span.status.description:
        status["message"] = span.status.description
    out["status"] = status
    return out


class SpanLineEncoder:
    """Encodes ended spans as ``ExportTraceServiceRequest`` lines. The resource and scope are the
    same for every span of a run, so their JSON is built once."""

    __slots__ = ("_prefix", "_suffix")

    def __init__(self, resource: Resource, scope: InstrumentationScope | None) -> None:
        resource_json = json.dumps(_resource(resource), separators=(",", ":"))
        scope_json = json.dumps(_scope(scope), separators=(",", ":"))
        self._prefix = f'{{"resourceSpans":[{{"resource":{resource_json},"scopeSpans":[{{"scope":{scope_json},"spans":['
        self._suffix = "]}]}]}\n"

    def line(self, spans: Iterable[ReadableSpan]) -> bytes:
        """One line holding ``spans``."""
        body = ",".join(json.dumps(encode_span(s), separators=(",", ":"), ensure_ascii=False) for s in spans)
        return f"{self._prefix}{body}{self._suffix}".encode()


def spans_request_line(spans: Sequence[ReadableSpan]) -> bytes:
    """Spans (possibly from several resources and scopes) as one request line."""
    groups: dict[tuple[int, int], tuple[Resource, InstrumentationScope | None, list[ReadableSpan]]] = {}
    for s in spans:
        key = (id(s.resource), id(s.instrumentation_scope))
        groups.setdefault(key, (s.resource, s.instrumentation_scope, []))[2].append(s)
    by_resource: dict[int, dict[str, Any]] = {}
    for resource, scope, group in groups.values():
        entry = by_resource.setdefault(id(resource), {"resource": _resource(resource), "scopeSpans": []})
        entry["scopeSpans"].append({"scope": _scope(scope), "spans": [encode_span(s) for s in group]})
    return (json.dumps({"resourceSpans": list(by_resource.values())}, separators=(",", ":")) + "\n").encode()


def _number_point(point: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if point.attributes:
        out["attributes"] = encode_attributes(point.attributes)
    out["startTimeUnixNano"] = str(point.start_time_unix_nano or 0)
    out["timeUnixNano"] = str(point.time_unix_nano)
    if isinstance(point.value, int) and not isinstance(point.value, bool):
        out["asInt"] = str(point.value)
    else:
        out["asDouble"] = float(point.value)
    return out


def _histogram_point(point: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if point.attributes:
        out["attributes"] = encode_attributes(point.attributes)
    out["startTimeUnixNano"] = str(point.start_time_unix_nano or 0)
    out["timeUnixNano"] = str(point.time_unix_nano)
    out["count"] = str(point.count)
    out["sum"] = float(point.sum)
    out["bucketCounts"] = [str(c) for c in point.bucket_counts]
    out["explicitBounds"] = [float(b) for b in point.explicit_bounds]
    if point.count:
        out["min"] = float(point.min)
        out["max"] = float(point.max)
    return out


def _exp_histogram_point(point: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if point.attributes:
        out["attributes"] = encode_attributes(point.attributes)
    out["startTimeUnixNano"] = str(point.start_time_unix_nano or 0)
    out["timeUnixNano"] = str(point.time_unix_nano)
    out["count"] = str(point.count)
    out["sum"] = float(point.sum)
    out["scale"] = point.scale
    out["zeroCount"] = str(point.zero_count)
    out["positive"] = {"offset": point.positive.offset, "bucketCounts": [str(c) for c in point.positive.bucket_counts]}
    out["negative"] = {"offset": point.negative.offset, "bucketCounts": [str(c) for c in point.negative.bucket_counts]}
    if point.count:
        out["min"] = float(point.min)
        out["max"] = float(point.max)
    return out


def _metric(metric: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": metric.name}
    if metric.description:
        out["description"] = metric.description
    if metric.unit:
        out["unit"] = metric.unit
    data = metric.data
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
    return out


def encode_metrics(data: MetricsData) -> dict[str, Any]:
    """An ``ExportMetricsServiceRequest``."""
    return {
        "resourceMetrics": [
            {
                "resource": _resource(rm.resource),
                "scopeMetrics": [
                    {"scope": _scope(sm.scope), "metrics": [_metric(m) for m in sm.metrics]}
                    for sm in rm.scope_metrics
                ],
            }
            for rm in data.resource_metrics
        ]
    }
