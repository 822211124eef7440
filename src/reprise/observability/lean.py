"""Element spans without the OpenTelemetry SDK's per-span machinery, and the node duration
histogram kept in plain Python.

Every element of a run (the run itself, flows, loops, iterations, nodes, ...) gets a span. With
the SDK, each one costs a sampler call, ids, a ``SpanContext``, attribute cleaning under a lock
per attribute (``BoundedAttributes``), a ``Context`` per child, a ``ReadableSpan`` copy at the end
and the processor chain: about 30 µs per element before a byte is written. When nothing but
``trace.jsonl`` receives the run's spans (no live export, no extra span processor, no forwarding
to the global provider), none of that buys anything, so :class:`LeanSpan` does only what the line
needs: ids from :func:`random.getrandbits`, times from :func:`time.time_ns`, attributes in a
plain dict, and at :meth:`~LeanSpan.end` one OTLP/JSON line, the same line the SDK path writes.

It is a real :class:`opentelemetry.trace.Span`: :meth:`~LeanSpan.get_span_context` is a sampled,
local ``SpanContext`` of the run's trace, so SDK spans opened under it (user spans,
``ctx.span(...)``) get the right parent and trace id, ``trace.use_span`` and
``set_span_in_context`` work, and user code may set attributes, add events, record exceptions
and set the status on it. What user code does goes through the SDK's own rules (attribute
cleaning and limits from :class:`~opentelemetry.sdk.trace.SpanLimits`, events as SDK ``Event``
objects, the status precedence of ``Span.set_status``), so the line is the one an SDK span would
have produced. The attributes reprise sets itself are already clean and stay in a plain dict.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from bisect import bisect_left
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from random import getrandbits
from time import time_ns
from types import MappingProxyType, TracebackType
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, SpanLimits
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

from reprise.observability.otlp_json import (
    SpanLineEncoder,
    dumps_compact,
    encode_events,
    encode_links,
    encode_span,
    encode_status,
    key_value_json,
    quote_json,
)

__all__ = ["DurationHistogram", "LeanSpan", "LeanSpanWriter", "PendingNodeSpan", "node_counts_metric"]

# The SDK's warnings, from the SDK's logger, for the same misuse (e.g. setting an attribute on
# an ended span).
_logger = logging.getLogger("opentelemetry.sdk.trace")

# What the SDK's tracer gives a span of a sampled trace with a random trace id: SAMPLED, plus
# RANDOM_TRACE_ID (W3C Trace Context level 2) in SDK versions that know it.
_TRACE_FLAGS = TraceFlags(TraceFlags.SAMPLED | getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
# OTLP SpanFlags: the trace flags, plus "is_remote is known" (0x100); never remote here. The
# leading quote closes the span id (or the parent's) before it.
_FLAGS_FIELD = f'","flags":{int(_TRACE_FLAGS) | 0x100},'
_KIND = SpanKind.INTERNAL
_KV_CACHE_SIZE = 512
_UNSET = Status(StatusCode.UNSET)


def _random_id(bits: int) -> int:
    """A random non-zero id, as the SDK's ``RandomIdGenerator`` makes them (zero is invalid)."""
    value = getrandbits(bits)
    while not value:
        value = getrandbits(bits)
    return value


#: Spans of reused nodes per trace line (see :meth:`LeanSpanWriter.reused_lines`).
_REUSED_PER_LINE = 256


class LeanSpanWriter:
    """The lean spans of one run: their trace id and limits, and where their lines go.

    ``sink`` is anything with ``write(bytes)`` (the run's ``trace.jsonl``); ``encoder`` gives
    the resource and scope part of each line."""

    __slots__ = (
        "_head",
        "_kv_cache",
        "_limits",
        "_lock",
        "_node_tails",
        "_plain_attributes",
        "_prefix",
        "_suffix",
        "_write",
        "resource",
        "scope",
        "trace_hex",
        "trace_id",
    )

    def __init__(self, sink: Any, encoder: SpanLineEncoder, resource: Resource, scope: InstrumentationScope) -> None:
        self.trace_id = _random_id(128)
        self.trace_hex = f"{self.trace_id:032x}"
        self.resource = resource
        self.scope = scope
        self._write = sink.write
        self._prefix = encoder.prefix
        self._head = f'{encoder.prefix}{{"traceId":"{self.trace_hex}","spanId":"'
        self._kv_cache: dict[tuple[Any, ...], str] = {}
        # The end of a PendingNodeSpan's line after its path, by (run id, kind, status, attempts).
        self._node_tails: dict[tuple[str, str, str, int], tuple[str, str]] = {}
        self._suffix = encoder.suffix
        # The same limits an SDK TracerProvider reads (OTEL_SPAN_*_LIMIT, OTEL_ATTRIBUTE_*).
        self._limits = SpanLimits()
        # reprise's own attributes (at most 10, short) need no bounding unless the limits are
        # set that low: then every span bounds its attributes as the SDK would.
        max_attrs = self._limits.max_span_attributes
        self._plain_attributes = self._limits.max_span_attribute_length is None and (
            max_attrs is None or max_attrs >= 16
        )
        # One lock for the state changes of every span of the run: the SDK takes one per span;
        # nothing here holds it for long, and spans change almost always on one thread.
        self._lock = threading.Lock()

    def key_value(self, key: str, value: Any) -> str:
        """``key_value_json(key, value)``, remembered for the string and integer values that
        come back span after span (run id, element types, statuses, ...)."""
        t = type(value)
        if t is not str and t is not int:
            return key_value_json(key, value)
        # The type is part of the key: True == 1, but their JSON differs.
        cache_key = (key, value) if t is str else (key, value, t)
        text = self._kv_cache.get(cache_key)
        if text is None:
            text = key_value_json(key, value)
            if len(self._kv_cache) < _KV_CACHE_SIZE:  # unique values (paths) would grow it forever
                self._kv_cache[cache_key] = text
        return text

    def _node_tail(self, key: tuple[str, str, str, int]) -> tuple[str, str]:
        """The attribute text of a :class:`PendingNodeSpan`'s line before its path and after
        it, to the end of the line, for ``(run id, node kind, status, attempts)``."""
        run_id, kind, status, attempts = key
        kv = self.key_value
        before = kv("reprise.run_id", run_id) + "," + _PATH_KEY
        after = (
            f"}}}},{kv('reprise.element_type', 'node')},{kv('reprise.node_kind', kind)},"
            f'{kv("reprise.status", status)},{kv("reprise.attempts", attempts)}],"status":{{}}}}{self._suffix}'
        )
        if len(self._node_tails) < _KV_CACHE_SIZE:
            self._node_tails[key] = (before, after)
        return before, after

    def start_span(self, name: str, parent: LeanSpan | None, attributes: dict[str, Any]) -> LeanSpan:
        """Start a span named ``name`` under ``parent`` (``None``: the trace's root), taking
        ``attributes`` as it is (the caller's dict, already clean, becomes the span's)."""
        return LeanSpan(self, name, parent, attributes)

    @property
    def plain_attributes(self) -> bool:
        """Whether spans keep reprise's attributes as they are (no attribute limits set low)."""
        return self._plain_attributes

    def reused_lines(
        self, parent: LeanSpan | None, run_id: str, reused_from: str, nodes: Iterable[tuple[str, str, str]]
    ) -> bytes:
        """The lines of the spans of nodes a re-run reused, ``(hierarchy path, node kind,
        origin run id)`` each, under ``parent``: the spans :meth:`LeanSpan._line` writes for a
        span started with reprise's node attributes, marked ``reprise.reused`` and ended at once,
        with the parts they share encoded once, and up to :data:`_REUSED_PER_LINE` of them in one
        ``ExportTraceServiceRequest`` line (the resource and scope, most of a line's bytes, once
        per line rather than once per span). Only with :attr:`plain_attributes`."""
        kv = self.key_value
        head = self._head[len(self._prefix) :]
        parent_part = f'","parentSpanId":"{parent._id_hex}' if parent is not None else ""
        front = parent_part + _FLAGS_FIELD + '"name":'
        run_kv = kv("reprise.run_id", run_id)
        type_kv = kv("reprise.element_type", "node")
        after_kind = ",".join(
            [
                key_value_json("reprise.reused", True),
                kv("reprise.attempts", 0),
                kv("reprise.reused_from", reused_from),
            ]
        )
        status_tail = "," + kv("reprise.status", "completed") + '],"status":{}}'
        # They are reused at one moment: one time for all, and the constant runs of each span's
        # text joined once, so a span is five pieces.
        now = time_ns()
        between = (
            f',"kind":1,"startTimeUnixNano":"{now}","endTimeUnixNano":"{now}","attributes":[{run_kv}'
            ',{"key":"reprise.hierarchy_path","value":{"stringValue":'
        )
        front += '"node '
        tails: dict[tuple[str, str], str] = {}
        lines = []
        for text, kind, origin in nodes:
            tail = tails.get((kind, origin))
            if tail is None:
                tail = tails[kind, origin] = (
                    f"}}}},{type_kv},{kv('reprise.node_kind', kind)},{after_kind},"
                    f"{kv('reprise.origin_run_id', origin)}{status_tail}"
                )
            quoted = quote_json(text)
            lines.append(
                f"{head}{getrandbits(64) or _random_id(64):016x}{front}{quoted[1:]}{between}{quoted}{tail}"
            )
        prefix, suffix, per_line = self._prefix, self._suffix, _REUSED_PER_LINE
        return "".join(
            [prefix + ",".join(lines[i : i + per_line]) + suffix for i in range(0, len(lines), per_line)]
        ).encode("ascii")

    def write(self, data: bytes) -> None:
        """Append ``data`` (whole lines) to the run's trace file."""
        self._write(data)

    def _bounded(self, attributes: Mapping[str, Any]) -> BoundedAttributes:
        limits = self._limits
        return BoundedAttributes(
            limits.max_span_attributes, attributes, immutable=False, max_value_len=limits.max_span_attribute_length
        )


class LeanSpan(trace_api.Span):
    """An element span: an OpenTelemetry API span that writes its OTLP/JSON line when it ends.

    Made by :meth:`LeanSpanWriter.start_span`. Besides the API it has the read-only properties of
    an SDK ``ReadableSpan`` (``name``, ``attributes``, ``events``, ``status``, ``start_time``,
    ...), so code written against SDK spans can read it."""

    __slots__ = (
        "_attrs",
        "_context",
        "_end_time",
        "_events",
        "_id_hex",
        "_links",
        "_name",
        "_parent_field",
        "_parent_hex",
        "_parent_id",
        "_start_time",
        "_status",
        "_writer",
        "span_id",
    )

    def __init__(
        self,
        writer: LeanSpanWriter,
        name: str,
        parent: LeanSpan | None,
        attributes: dict[str, Any],
        span_id: int | None = None,
    ) -> None:
        self._writer = writer
        self.span_id = span_id if span_id is not None else _random_id(64)
        self._id_hex = f"{self.span_id:016x}"
        # How a child's line names this span as its parent (written for every node under it).
        self._parent_field = f'","parentSpanId":"{self._id_hex}'
        if parent is not None:
            self._parent_id = parent.span_id
            self._parent_hex = parent._id_hex
        else:
            self._parent_id = 0
            self._parent_hex = ""
        self._name = name
        self._attrs: MutableMapping[str, Any] = attributes if writer._plain_attributes else writer._bounded(attributes)
        self._events: BoundedList[Event] | None = None
        self._links: BoundedList[Link] | None = None
        self._status: Status | None = None
        self._context: SpanContext | None = None
        self._end_time: int | None = None
        self._start_time = time_ns()

    def __repr__(self) -> str:
        return f'LeanSpan(name="{self._name}", span_id=0x{self._id_hex})'

    # -- the API ---------------------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            context = self._context = SpanContext(
                self._writer.trace_id, self.span_id, is_remote=False, trace_flags=_TRACE_FLAGS
            )
        return context

    def is_recording(self) -> bool:
        return self._end_time is None

    def hex_ids(self) -> dict[str, str]:
        """``{"trace_id": ..., "span_id": ...}`` in lowercase hex, as log lines carry them."""
        return {"trace_id": self._writer.trace_hex, "span_id": self._id_hex}

    def _user_attributes(self) -> MutableMapping[str, Any]:
        """The attributes as the SDK keeps them, for a change that comes from user code: its
        values must be cleaned and bounded exactly as the SDK does. Called under the lock."""
        attrs = self._attrs
        if type(attrs) is dict:
            attrs = self._attrs = self._writer._bounded(attrs)
        return attrs

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        with self._writer._lock:
            if self._end_time is not None:
                _logger.warning("Setting attribute on ended span.")
                return
            self._user_attributes()[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        with self._writer._lock:
            if self._end_time is not None:
                _logger.warning("Setting attribute on ended span.")
                return
            attrs = self._user_attributes()
            set_items = getattr(attrs, "_set_items", None)
            if set_items is not None:  # the SDK's own path: the mapping is cleaned as a whole
                set_items(attributes)
            else:  # pragma: no cover - an SDK without it
                for key, value in attributes.items():
                    attrs[key] = value

    def set_own_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set attributes reprise computed itself (valid keys, clean values), without the
        cleaning user values need."""
        with self._writer._lock:
            if self._end_time is not None:
                _logger.warning("Setting attribute on ended span.")
                return
            attrs = self._attrs
            for key, value in attributes.items():
                if key in attrs:  # an update moves the key last, as in the SDK's attributes
                    del attrs[key]
                attrs[key] = value

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        limits = self._writer._limits
        event = Event(
            name,
            BoundedAttributes(
                limits.max_event_attributes, attributes, immutable=True, max_value_len=limits.max_attribute_length
            ),
            timestamp,
        )
        with self._writer._lock:
            if self._end_time is not None:
                _logger.warning("Tried calling %s on an ended span.", "_add_event")
                return
            if self._events is None:
                self._events = BoundedList(limits.max_events)
            self._events.append(event)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if not (context and (context.is_valid or attributes or context.trace_state)):
            return  # what the SDK keeps: a valid context, or one that carries something
        limits = self._writer._limits
        link = Link(
            context,
            BoundedAttributes(
                limits.max_link_attributes, attributes, immutable=True, max_value_len=limits.max_attribute_length
            ),
        )
        with self._writer._lock:
            if self._end_time is not None:
                _logger.warning("Tried calling %s on an ended span.", "_add_link")
                return
            if self._links is None:
                self._links = BoundedList(limits.max_links)
            self._links.append(link)

    def update_name(self, name: str) -> None:
        with self._writer._lock:
            if self._end_time is not None:
                _logger.warning("Tried calling %s on an ended span.", "update_name")
                return
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        with self._writer._lock:
            if self._end_time is not None:
                _logger.warning("Tried calling %s on an ended span.", "set_status")
                return
            current = self._status
            # As the SDK: an OK status is final, and UNSET never overrides anything.
            if current is not None and current.status_code is StatusCode.OK:
                return
            if isinstance(status, Status):
                if status.status_code is StatusCode.UNSET:
                    return
                if description is not None:
                    _logger.warning(
                        "Description %s ignored. Use either `Status` or `(StatusCode, Description)`", description
                    )
                self._status = status
            elif isinstance(status, StatusCode):
                if status is StatusCode.UNSET:
                    return
                self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # The SDK's event, attribute for attribute.
        stacktrace = "".join(traceback.format_exception(exception))
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        exception_type = f"{module}.{qualname}" if module and module != "builtins" else qualname
        event_attributes: dict[str, types.AnyValue] = {
            "exception.type": exception_type,
            "exception.message": str(exception),
            "exception.stacktrace": stacktrace,
            "exception.escaped": str(escaped),
        }
        if attributes:
            event_attributes.update(attributes)
        self.add_event("exception", event_attributes, timestamp)

    def end(self, end_time: int | None = None) -> None:
        self.end_with(None, end_time)

    def end_with(self, attributes: Mapping[str, Any] | None, end_time: int | None = None) -> None:
        """Set ``attributes`` (reprise's own, as :meth:`set_own_attributes`) and end the span,
        in one step."""
        with self._writer._lock:
            if self._end_time is not None:
                _logger.warning("Calling end() on an ended span.")
                return
            if attributes:
                attrs = self._attrs
                for key, value in attributes.items():
                    if key in attrs:
                        del attrs[key]
                    attrs[key] = value
            self._end_time = end_time if end_time is not None else time_ns()
        # Nothing changes the span from here on: encode outside the lock.
        try:
            line = self._line()
        except Exception:  # an attribute the fast path cannot write: the dict path can
            line = self._line_safe()
        self._writer._write(line)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        # As an SDK span used as a context manager: the exception is recorded, the status set.
        if exc_val is not None and self.is_recording():
            self.record_exception(exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    # -- reading it back, as an SDK ReadableSpan -------------------------------------------
    @property
    def name(self) -> str:
        """The span's name."""
        return self._name

    @property
    def context(self) -> SpanContext:
        """The span's context (as ``ReadableSpan.context``)."""
        return self.get_span_context()

    @property
    def parent(self) -> SpanContext | None:
        """The parent's context, ``None`` for the trace's root."""
        if not self._parent_id:
            return None
        return SpanContext(self._writer.trace_id, self._parent_id, is_remote=False, trace_flags=_TRACE_FLAGS)

    @property
    def kind(self) -> SpanKind:
        """Always ``INTERNAL``."""
        return _KIND

    @property
    def start_time(self) -> int:
        """Start, in nanoseconds since the epoch."""
        return self._start_time

    @property
    def end_time(self) -> int | None:
        """End, in nanoseconds since the epoch; ``None`` while it runs."""
        return self._end_time

    @property
    def attributes(self) -> Mapping[str, Any]:
        """A read-only view of the attributes."""
        return MappingProxyType(self._attrs)

    @property
    def dropped_attributes(self) -> int:
        """Attributes dropped by the limits."""
        return int(getattr(self._attrs, "dropped", 0))

    @property
    def events(self) -> Sequence[Event]:
        """The events, oldest first."""
        return tuple(self._events) if self._events is not None else ()

    @property
    def dropped_events(self) -> int:
        """Events dropped by the limits."""
        return self._events.dropped if self._events is not None else 0

    @property
    def links(self) -> Sequence[Link]:
        """The links."""
        return tuple(self._links) if self._links is not None else ()

    @property
    def dropped_links(self) -> int:
        """Links dropped by the limits."""
        return self._links.dropped if self._links is not None else 0

    @property
    def status(self) -> Status:
        """The status (``UNSET`` unless set)."""
        return self._status if self._status is not None else _UNSET

    @property
    def resource(self) -> Resource:
        """The run's resource."""
        return self._writer.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        """reprise's instrumentation scope."""
        return self._writer.scope

    # -- the line --------------------------------------------------------------------------
    def _items(self) -> Iterable[tuple[str, Any]]:
        attrs = self._attrs
        if type(attrs) is dict:
            return attrs.items()
        # BoundedAttributes iterates through the Mapping ABC; its plain dict is much faster.
        return getattr(attrs, "_dict", attrs).items()

    def _line(self) -> bytes:
        """The span as an ``ExportTraceServiceRequest`` line: what ``SpanLineEncoder.line``
        writes for the same span from the SDK, built from the fields directly."""
        writer = self._writer
        parts = [writer._head, self._id_hex]
        if self._parent_hex:
            parts.append('","parentSpanId":"')
            parts.append(self._parent_hex)
        parts += [
            _FLAGS_FIELD,
            f'"name":{quote_json(self._name)},"kind":1'
            f',"startTimeUnixNano":"{self._start_time}","endTimeUnixNano":"{self._end_time}"',
        ]
        attrs = self._attrs
        if type(attrs) is dict:
            if attrs:
                # writer.key_value, inlined: this runs for every attribute of every element.
                cache = writer._kv_cache
                encoded = []
                for k, v in attrs.items():
                    t = type(v)
                    if t is str:
                        text = cache.get((k, v))
                    elif t is int:
                        text = cache.get((k, v, t))
                    else:
                        text = None
                    encoded.append(text if text is not None else writer.key_value(k, v))
                parts.append(',"attributes":[')
                parts.append(",".join(encoded))
                parts.append("]")
        elif attrs:
            parts.append(',"attributes":[')
            parts.append(",".join([key_value_json(k, v) for k, v in self._items()]))
            parts.append("]")
            dropped = self.dropped_attributes
            if dropped:
                parts.append(f',"droppedAttributesCount":{dropped}')
        events = self._events
        if events:
            parts.append(f',"events":{dumps_compact(encode_events(events))}')
        if events is not None and events.dropped:
            parts.append(f',"droppedEventsCount":{events.dropped}')
        links = self._links
        if links:
            parts.append(f',"links":{dumps_compact(encode_links(links))}')
        if links is not None and links.dropped:
            parts.append(f',"droppedLinksCount":{links.dropped}')
        status = self._status
        if status is not None and (status.status_code.value or status.description):
            parts.append(f',"status":{dumps_compact(encode_status(status))}}}')
        else:
            parts.append(',"status":{}}')
        parts.append(writer._suffix)
        return "".join(parts).encode("ascii")

    def _line_safe(self) -> bytes:
        """Like :meth:`_line`, through the dict encoding (``default=str`` for the unforeseen)."""
        body = json.dumps(encode_span(self), separators=(",", ":"), default=str)
        return f"{self._writer._prefix}{body}{self._writer._suffix}".encode("ascii")


_PATH_KEY = '{"key":"reprise.hierarchy_path","value":{"stringValue":'


class PendingNodeSpan:
    """A node's span that nothing has asked for as a span yet.

    Most nodes never touch their span: nothing logs under it, opens a child span or reads it.
    For those the executor needs only the span's line when the node ends, and this handle
    writes exactly the line a :class:`LeanSpan` started with reprise's node attributes and
    ended with ``reprise.status`` and ``reprise.attempts`` would (same fields, same order),
    without the span object, its attribute dict or its lock (~8 µs a node).

    Whatever needs the span itself calls :meth:`materialize`: from then on it is that
    :class:`LeanSpan` (same start time), ended the usual way."""

    __slots__ = ("_id", "_kind", "_parent", "_run_id", "_text", "_writer", "ended", "span", "start")

    def __init__(self, writer: LeanSpanWriter, parent: LeanSpan | None, text: str, kind: str, run_id: str) -> None:
        self._writer = writer
        self._parent = parent
        self._text = text
        self._kind = kind
        self._run_id = run_id
        # The span's id, fixed now: the line end_plain writes and a span made later (a logger
        # first used after the node ended, from another thread) must name the same span.
        self._id = getrandbits(64) or _random_id(64)
        #: The span, once something asked for it.
        self.span: LeanSpan | None = None
        #: End time (ns) once :meth:`end_plain` wrote the line.
        self.ended: int | None = None
        self.start = time_ns()

    def materialize(self) -> LeanSpan:
        """The node's span (made on the first call, started when this handle was)."""
        span = self.span
        if span is None:
            attrs: dict[str, Any] = {
                "reprise.run_id": self._run_id,
                "reprise.hierarchy_path": self._text,
                "reprise.element_type": "node",
                "reprise.node_kind": self._kind,
            }
            span = LeanSpan(self._writer, f"node {self._text}", self._parent, attrs, span_id=self._id)
            span._start_time = self.start
            if self.ended is not None:  # asked for after its line was written: already ended
                span._end_time = self.ended
            self.span = span
        return span

    def end_plain(self, status: str, attempts: int) -> bool:
        """Write the span's line, ended now with ``status`` and ``attempts`` and nothing else;
        ``False`` (nothing written) when the span was asked for: end that span instead."""
        if self.span is not None:
            return False
        end = self.ended = time_ns()
        writer = self._writer
        key = (self._run_id, self._kind, status, attempts)
        tail = writer._node_tails.get(key)
        if tail is None:
            tail = writer._node_tail(key)
        parent = self._parent
        quoted = quote_json(self._text)
        # One format for the whole line; the parts that repeat span after span come cached.
        line = (
            f"{writer._head}{self._id:016x}"
            f'{"" if parent is None else parent._parent_field}{_FLAGS_FIELD}"name":"node {quoted[1:]},"kind":1'
            f',"startTimeUnixNano":"{self.start}","endTimeUnixNano":"{end}","attributes":[{tail[0]}{quoted}{tail[1]}'
        )
        writer._write(line.encode("ascii"))
        return True


class DurationHistogram:
    """An explicit-bucket histogram of durations per attribute set, aggregated in Python and
    handed over as an SDK ``Metric`` when the run ends: what an SDK histogram with cumulative
    temporality would report, without an SDK ``record`` call (attribute hashing, a lock, the
    aggregation objects) per node."""

    __slots__ = ("_boundaries", "_lock", "_series", "description", "name", "unit")

    def __init__(self, name: str, unit: str, description: str, boundaries: Sequence[float]) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self._boundaries = tuple(float(b) for b in boundaries)
        # attributes key -> [start ns, count, sum, min, max, bucket counts]
        self._series: dict[tuple[tuple[str, Any], ...], list[Any]] = {}
        self._lock = threading.Lock()

    def record(self, value: float, attributes: tuple[tuple[str, Any], ...]) -> None:
        """Add ``value`` to the series of ``attributes`` (a tuple of key/value pairs)."""
        with self._lock:
            series = self._series.get(attributes)
            if series is None:
                series = self._series[attributes] = [time_ns(), 0, 0.0, value, value, [0] * (len(self._boundaries) + 1)]
            series[1] += 1
            series[2] += value
            if value < series[3]:
                series[3] = value
            if value > series[4]:
                series[4] = value
            # The SDK's bucket: the first boundary >= value (buckets are upper-inclusive).
            series[5][bisect_left(self._boundaries, value)] += 1

    def counts(self) -> list[tuple[tuple[tuple[str, Any], ...], int]]:
        """``(attributes, number of values)`` of each series, in the order they began."""
        with self._lock:
            return [(key, series[1]) for key, series in self._series.items()]

    def metric(self, time_unix_nano: int | None = None) -> Metric | None:
        """The histogram as an SDK ``Metric`` (cumulative), or ``None`` before any value.
        ``time_unix_nano``: the collection time (now if not given)."""
        now = time_unix_nano if time_unix_nano is not None else time_ns()
        with self._lock:
            points = [
                HistogramDataPoint(
                    attributes=dict(key),
                    start_time_unix_nano=start,
                    time_unix_nano=now,
                    count=count,
                    sum=total,
                    bucket_counts=list(buckets),
                    explicit_bounds=self._boundaries,
                    min=low,
                    max=high,
                )
                for key, (start, count, total, low, high, buckets) in self._series.items()
            ]
        if not points:
            return None
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE),
        )


def node_counts_metric(
    name: str, description: str, counts: Sequence[tuple[Mapping[str, Any], int]], time_unix_nano: int
) -> Metric | None:
    """Counts per attribute set as an SDK ``Metric``: what an SDK observable counter (a
    cumulative, monotonic sum, its points starting at their first collection) reports for them,
    without a meter provider. ``None`` without counts."""
    if not counts:
        return None
    points = [
        NumberDataPoint(
            attributes=dict(attributes), start_time_unix_nano=time_unix_nano, time_unix_nano=time_unix_nano, value=n
        )
        for attributes, n in counts
    ]
    return Metric(
        name=name,
        description=description,
        unit="",
        data=Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True),
    )
