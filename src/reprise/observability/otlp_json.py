"""OTLP/JSON encoding of SDK spans and metrics: the format of the OpenTelemetry Collector's file
exporter, which its ``otlpjsonfile`` receiver reads back.

This is the protobuf JSON mapping with OTLP's deviations ("JSON Protobuf Encoding" in the OTLP
specification): trace and span ids are lowercase hex (not base64), enums are integers (never
names), keys are lowerCamelCase. As in the protobuf mapping, 64-bit integers (times in
nanoseconds, counts, ``intValue``) are decimal strings, doubles are JSON numbers or ``"NaN"``,
``"Infinity"``, ``"-Infinity"``, and empty fields are left out. Output is ASCII (non-ASCII text
is ``\\u`` escaped), so a line is valid UTF-8 whatever a user puts in an attribute.

A span line is built from strings rather than dicts: it is written for every element of every
run, and building it by hand is about four times faster than ``json.dumps`` of a dict.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Protocol

from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram,
    Gauge,
    Histogram,
    Metric,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status

__all__ = [
    "SpanData",
    "SpanLineEncoder",
    "any_value",
    "dumps_compact",
    "encode_attributes",
    "encode_events",
    "encode_links",
    "encode_metrics",
    "encode_span",
    "encode_status",
    "key_value_json",
    "metric_dict",
    "metrics_request_line",
    "quote_json",
]

_COMPACT = (",", ":")

# OTLP SpanFlags: bit 8 says "bit 9 is known", bit 9 says "the parent is remote".
_FLAG_HAS_IS_REMOTE = 0x100
_FLAG_IS_REMOTE = 0x200


class SpanData(Protocol):
    """What the dict encoding reads from a span: an SDK ``ReadableSpan`` or a ``LeanSpan``."""

    @property
    def context(self) -> Any: ...
    @property
    def parent(self) -> SpanContext | None: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> SpanKind: ...
    @property
    def start_time(self) -> int | None: ...
    @property
    def end_time(self) -> int | None: ...
    @property
    def attributes(self) -> Mapping[str, Any] | None: ...
    @property
    def dropped_attributes(self) -> int: ...
    @property
    def events(self) -> Sequence[Any]: ...
    @property
    def dropped_events(self) -> int: ...
    @property
    def links(self) -> Sequence[Link]: ...
    @property
    def dropped_links(self) -> int: ...
    @property
    def status(self) -> Status: ...


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
    return json.dumps(data, separators=_COMPACT, ensure_ascii=True, allow_nan=False)


def _resource(resource: Resource) -> dict[str, Any]:
    return {"attributes": encode_attributes(resource.attributes)}


def _scope(scope: InstrumentationScope | None) -> dict[str, Any]:
    if scope is None:
        return {}
    out: dict[str, Any] = {"name": scope.name}
    if scope.version:
        out["version"] = scope.version
    return out


def _span_flags(span: SpanData) -> int:
    ctx = span.context
    assert ctx is not None
    flags = int(ctx.trace_flags) | _FLAG_HAS_IS_REMOTE
    if span.parent is not None and span.parent.is_remote:
        flags |= _FLAG_IS_REMOTE
    return flags


def encode_events(events: Iterable[Any]) -> list[dict[str, Any]]:
    """OTLP ``Span.Event`` dicts for SDK ``Event`` objects (name, timestamp, attributes)."""
    return [
        {
            "timeUnixNano": str(e.timestamp),
            "name": e.name,
            **({"attributes": encode_attributes(e.attributes)} if e.attributes else {}),
        }
        for e in events
    ]


def encode_links(links: Iterable[Link]) -> list[dict[str, Any]]:
    """OTLP ``Span.Link`` dicts."""
    return [
        {
            "traceId": f"{link.context.trace_id:032x}",
            "spanId": f"{link.context.span_id:016x}",
            **({"attributes": encode_attributes(link.attributes)} if link.attributes else {}),
        }
        for link in links
    ]


def encode_status(status: Status) -> dict[str, Any]:
    """An OTLP ``Status`` dict (empty for UNSET without a message)."""
    out: dict[str, Any] = {}
    code = status.status_code.value
    if code:
        out["code"] = code
    if status.description:
        out["message"] = status.description
    return out


def _events(span: SpanData) -> list[dict[str, Any]]:
    return encode_events(span.events)


def _links(span: SpanData) -> list[dict[str, Any]]:
    return encode_links(span.links)


def _status(span: SpanData) -> dict[str, Any]:
    return encode_status(span.status)


def encode_span(span: SpanData) -> dict[str, Any]:
    """One OTLP ``Span`` as a dict (the reference form; :class:`SpanLineEncoder` and
    ``LeanSpan`` write the same thing faster)."""
    ctx = span.context
    assert ctx is not None
    out: dict[str, Any] = {"traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}"}
    if ctx.trace_state:
        out["traceState"] = ctx.trace_state.to_header()
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    out["flags"] = _span_flags(span)
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
        out["events"] = _events(span)
    if span.dropped_events:
        out["droppedEventsCount"] = span.dropped_events
    if span.links:
        out["links"] = _links(span)
    if span.dropped_links:
        out["droppedLinksCount"] = span.dropped_links
    out["status"] = _status(span)
    return out


def key_value_json(key: str, value: Any) -> str:
    """One ``KeyValue`` as JSON text; the common scalar types without building a dict."""
    t = type(value)
    if t is str:
        return f'{{"key":{_quote(key)},"value":{{"stringValue":{_quote(value)}}}}}'
    if t is bool:
        return f'{{"key":{_quote(key)},"value":{{"boolValue":{"true" if value else "false"}}}}}'
    if t is int:
        return f'{{"key":{_quote(key)},"value":{{"intValue":"{value}"}}}}'
    return _dumps({"key": key, "value": any_value(value)})


_key_value = key_value_json
#: A str as a JSON string literal, ASCII only (``\\u`` escapes).
quote_json = _quote


def dumps_compact(data: Any) -> str:
    """Compact, ASCII, strict JSON (no NaN literals): how every dict part of a line is written."""
    return _dumps(data)


def _span_json(span: ReadableSpan) -> str:
    ctx = span.context
    assert ctx is not None
    parts = [f'{{"traceId":"{ctx.trace_id:032x}","spanId":"{ctx.span_id:016x}"']
    if ctx.trace_state:
        parts.append(f',"traceState":{_quote(ctx.trace_state.to_header())}')
    parent = span.parent
    if parent is not None:
        parts.append(f',"parentSpanId":"{parent.span_id:016x}"')
    parts.append(
        f',"flags":{_span_flags(span)},"name":{_quote(span.name)},"kind":{span.kind.value + 1}'
        f',"startTimeUnixNano":"{span.start_time or 0}","endTimeUnixNano":"{span.end_time or 0}"'
    )
    # ``_attributes`` avoids the MappingProxy the public property builds on every access.
    attributes = getattr(span, "_attributes", None)
    if attributes is None:
        attributes = span.attributes
    if attributes:
        parts.append(',"attributes":[')
        # BoundedAttributes iterates through the Mapping ABC; its plain dict is much faster.
        items = getattr(attributes, "_dict", attributes).items()
        parts.append(",".join([_key_value(k, v) for k, v in items]))
        parts.append("]")
        if span.dropped_attributes:
            parts.append(f',"droppedAttributesCount":{span.dropped_attributes}')
    if span.events:
        parts.append(f',"events":{_dumps(_events(span))}')
    if span.dropped_events:
        parts.append(f',"droppedEventsCount":{span.dropped_events}')
    if span.links:
        parts.append(f',"links":{_dumps(_links(span))}')
    if span.dropped_links:
        parts.append(f',"droppedLinksCount":{span.dropped_links}')
    status = span.status
    if status.status_code.value or status.description:
        parts.append(f',"status":{_dumps(_status(span))}}}')
    else:
        parts.append(',"status":{}}')
    return "".join(parts)


class SpanLineEncoder:
    """Encodes ended spans as ``ExportTraceServiceRequest`` lines. The resource and scope are the
    same for every span of a run, so their JSON is built once."""

    __slots__ = ("_prefix", "_suffix")

    def __init__(self, resource: Resource, scope: InstrumentationScope | None) -> None:
        resource_json = _dumps(_resource(resource))
        scope_json = _dumps(_scope(scope))
        self._prefix = f'{{"resourceSpans":[{{"resource":{resource_json},"scopeSpans":[{{"scope":{scope_json},"spans":['
        self._suffix = "]}]}]}\n"

    @property
    def prefix(self) -> str:
        """The line up to the first span (resource and scope included)."""
        return self._prefix

    @property
    def suffix(self) -> str:
        """The line after the last span, newline included."""
        return self._suffix

    def line(self, spans: Iterable[ReadableSpan]) -> bytes:
        """One line holding ``spans`` (which must share this encoder's resource and scope)."""
        body = ",".join([_span_json(s) for s in spans])
        return f"{self._prefix}{body}{self._suffix}".encode("ascii")

    def line_safe(self, spans: Iterable[ReadableSpan]) -> bytes:
        """Like :meth:`line` through the slower dict path; for a span the fast path rejected."""
        body = ",".join([json.dumps(encode_span(s), separators=_COMPACT, default=str) for s in spans])
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


def metric_dict(metric: Metric) -> dict[str, Any] | None:
    """One OTLP ``Metric`` as a dict, or ``None`` when it holds no data point."""
    return _metric(metric)


def _add_first(
    request: dict[str, Any], metrics: Sequence[dict[str, Any]], resource: Resource, scope: InstrumentationScope
) -> None:
    """Put ``metrics`` first in ``request``'s envelope for ``resource`` and ``scope``, making the
    envelopes that are missing."""
    resource_json = _resource(resource)
    scope_json = _scope(scope)
    for rm in request["resourceMetrics"]:
        if rm["resource"] == resource_json:
            for sm in rm["scopeMetrics"]:
                if sm["scope"] == scope_json:
                    sm["metrics"][:0] = metrics
                    return
            rm["scopeMetrics"].insert(0, {"scope": scope_json, "metrics": list(metrics)})
            return
    request["resourceMetrics"].insert(
        0, {"resource": resource_json, "scopeMetrics": [{"scope": scope_json, "metrics": list(metrics)}]}
    )


def metrics_request_line(
    data: MetricsData | None,
    first: Sequence[Metric] = (),
    resource: Resource | None = None,
    scope: InstrumentationScope | None = None,
) -> bytes | None:
    """``data`` as one ``metrics.jsonl`` line, or ``None`` when it holds no data point.

    ``first`` are metrics aggregated outside the SDK (with ``resource`` and ``scope``, which
    they need): they go first in their scope's list, where the SDK would have put an instrument
    created before the others."""
    request = encode_metrics(data) if data is not None else {"resourceMetrics": []}
    extra = [m for m in (_metric(x) for x in first) if m is not None]
    if extra:
        if resource is None or scope is None:
            raise ValueError("metrics aggregated outside the SDK need their resource and scope")
        _add_first(request, extra, resource, scope)
    if not request["resourceMetrics"]:
        return None
    return (_dumps(request) + "\n").encode("ascii")
