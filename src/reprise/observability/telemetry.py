"""RunTelemetry: the tracer, meter and loggers of one run, and the files in its ``.trace/``.

Every run gets its own ``TracerProvider``, ``MeterProvider`` and structlog logger; nothing global
is read or replaced (unless the user opts in to ``forward_to_global``), so two runs in one
process, one after the other or at the same time, never see each other's spans, metrics or logs.

* Spans go to ``trace.jsonl`` as they end, synchronously, one ``ExportTraceServiceRequest`` per
  line: no queue, so nothing is dropped under bursts and a crash loses only spans still open.
  Element spans are :class:`~reprise.observability.lean.LeanSpan` objects when that file is
  their only destination (the default), SDK spans when a processor, live export or forwarding
  also receives them; both write the same lines. User spans are always SDK spans.
* Element listeners (``ObservabilitySettings.element_listeners``) are told when each element
  starts and ends, from the same calls that start and end its span, on either span path; they
  do not make spans SDK spans, which is why ``reprise run`` shows its progress through one.
* Metrics are collected from an in-memory reader and written to ``metrics.jsonl`` when the run
  ends (and exported live every few seconds when an OTLP endpoint is set). Node counts and,
  without live export, node durations are aggregated in Python and merged in at the end.
* Logs are structlog events rendered as JSON lines in ``logs.jsonl``, each with run id,
  hierarchy path, trace id and span id; with live export on they become OpenTelemetry log
  records as well.
* Live exporters are shut down on background (non-daemon) threads when the run ends, so a slow
  or unreachable collector never blocks the event loop; the interpreter waits for them at exit
  and :meth:`RunTelemetry.wait_exported` waits for them explicitly.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric, MetricReader, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Status, StatusCode

from reprise._version import __version__
from reprise.dsl.definition import definition_path
from reprise.dsl.paths import HierarchyPath
from reprise.errors import RepriseError, RunSetupError
from reprise.observability.lean import (
    DurationHistogram,
    LeanSpan,
    LeanSpanWriter,
    PendingNodeSpan,
    node_counts_metric,
)
from reprise.observability.otlp_json import SpanLineEncoder, metrics_request_line
from reprise.observability.settings import ElementListener, ObservabilitySettings

if TYPE_CHECKING:
    from reprise.observability.export import LiveLogs
    from reprise.run.context import RunContext

__all__ = ["LOGS_FILE", "METRICS_FILE", "TRACE_FILE", "JsonlSink", "RunTelemetry", "SpanFileProcessor"]

TRACE_FILE = "trace.jsonl"
METRICS_FILE = "metrics.jsonl"
LOGS_FILE = "logs.jsonl"

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
# Seconds. The SDK's default boundaries (0, 5, 10, 25, ... 10000) would put almost every node in
# one bucket; these resolve from a millisecond to ten minutes.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_COUNT_NAME = "reprise.node.count"
_COUNT_DESCRIPTION = "Nodes finished, by status"
_DURATION_NAME = "reprise.node.duration"
_DURATION_UNIT = "s"
_DURATION_DESCRIPTION = "Wall time of each node execution"
# OpenTelemetry's instrument name syntax.
_METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_./-]{0,254}\Z")
# The user span open in the current task or thread, with the span id of the node it belongs to,
# so ``with ctx.span("a"): with ctx.span("b"):`` nests b under a.
_USER_SPAN: ContextVar[tuple[int, trace_api.Span] | None] = ContextVar("reprise_user_span", default=None)


class JsonlSink:
    """An append-only JSON-lines file. Each line is one ``write`` on an ``O_APPEND`` descriptor
    under a lock, so lines from several threads never interleave, a reader never sees half a
    line, and a write racing with :meth:`close` never lands in a reused descriptor."""

    __slots__ = ("_fd", "_lock", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def write(self, line: bytes) -> None:
        """Append one line (``line`` ends with a newline); ignored once closed."""
        with self._lock:
            if self._fd is not None:
                os.write(self._fd, line)

    def close(self) -> None:
        """Close the file; later writes are ignored."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class SpanFileProcessor(SpanProcessor):
    """Writes each span to ``trace.jsonl`` the moment it ends."""

    def __init__(self, sink: JsonlSink, encoder: SpanLineEncoder) -> None:
        self._sink = sink
        self._encoder = encoder

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        # The SDK does not catch errors from processors: one here would fail the node whose
        # span ended. The fast encoder handles every attribute type the SDK accepts; the
        # fallback is for the unforeseen.
        try:
            line = self._encoder.line((span,))
        except Exception:
            line = self._encoder.line_safe((span,))
        self._sink.write(line)

    def shutdown(self) -> None:
        self._sink.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _BorrowedProcessor(SpanProcessor):
    """A span processor owned by someone else (the global provider's, or one passed in the
    settings): spans go to it, but it is never shut down with the run. Processors from the
    settings are flushed when the run ends; the global provider's are left to their owner, whose
    exporter may be slow and whose provider flushes them at its own shutdown."""

    def __init__(self, processor: SpanProcessor, *, flush_at_end: bool) -> None:
        self._processor = processor
        self._flush_at_end = flush_at_end

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._processor.on_end(span)

    def shutdown(self) -> None:
        if self._flush_at_end:
            self._processor.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)


class _SinkLogger:
    """The structlog 'logger' at the end of the chain: receives the rendered JSON line."""

    __slots__ = ("_sink",)

    def __init__(self, sink: JsonlSink | None) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        if self._sink is not None:
            self._sink.write(message.encode() + b"\n")

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _lead_keys(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Put timestamp, level and message first in each line, for people reading the file."""
    lead: dict[str, Any] = {k: event.pop(k) for k in ("timestamp", "level", "event") if k in event}
    lead.update(event)
    return lead


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as strings (``"nan"``, ``"inf"``): they are not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _dumps_log(event: Any, **kwargs: Any) -> str:
    """Strict JSON for a log line; the slow path only for the rare non-finite float."""
    try:
        return json.dumps(event, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(event), default=str, allow_nan=False)


def _preflight(settings: ObservabilitySettings) -> None:
    """Raise :class:`RunSetupError` for a live-export configuration that cannot work."""
    wanted = [("traces", settings.tracing), ("metrics", settings.metrics), ("logs", settings.logging)]
    for signal, on in wanted:
        if not on or not settings.resolved_endpoint(signal):
            continue
        module = "grpc" if settings.resolved_protocol(signal) == "grpc" else "http"
        try:
            found = importlib.util.find_spec(f"opentelemetry.exporter.otlp.proto.{module}") is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            raise RunSetupError(
                f"live OTLP export ({signal} over {settings.resolved_protocol(signal)}) needs the extra: "
                "pip install 'reprise-agents[otlp]'"
            )


def _hex_ids(span: trace_api.Span) -> dict[str, str]:
    if type(span) is LeanSpan:
        return span.hex_ids()
    sc = span.get_span_context()
    return {"trace_id": f"{sc.trace_id:032x}", "span_id": f"{sc.span_id:016x}"}


def _attribute(span: trace_api.Span, key: str) -> Any:
    """An attribute of a span of ours (SDK or lean), ``None`` if absent."""
    attributes = getattr(span, "attributes", None)
    return attributes.get(key) if attributes else None


def _attributes_view(span: trace_api.Span) -> Mapping[str, Any]:
    """A read-only view of the attributes of a span of ours, for element listeners."""
    attributes = getattr(span, "attributes", None)
    if type(span) is LeanSpan or attributes is None:  # a LeanSpan's is already a read-only view
        return attributes if attributes is not None else MappingProxyType({})
    return MappingProxyType(attributes)


def _collection_time(data: MetricsData | None) -> int | None:
    """When the SDK collected ``data`` (the time of its first point), so metrics aggregated
    outside the SDK carry the same collection time as the SDK's own."""
    if data is None:
        return None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    return int(point.time_unix_nano)
    return None


_BASE_RESOURCES: dict[str, Resource] = {}


def _base_resource() -> Resource:
    """The SDK's detected resource (SDK attributes, ``OTEL_RESOURCE_ATTRIBUTES``), detected once
    per process and environment: detection costs milliseconds, and runs start often."""
    key = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "") + "\0" + os.environ.get("OTEL_SERVICE_NAME", "")
    base = _BASE_RESOURCES.get(key)
    if base is None:
        base = _BASE_RESOURCES[key] = Resource.create({})
    return base


class RunTelemetry:
    """Tracing, metrics and logging for one run. Made by :meth:`RunContext.setup_run`.

    The executor calls :meth:`start_span` / :meth:`end_span` around every element,
    :meth:`node_finished`, :meth:`retry` and :meth:`reused_node` for nodes, and
    :meth:`finish` once at the end. Nodes reach :meth:`node_logger`, :meth:`child_span` and
    :meth:`user_metric` through their ``NodeContext``.
    """

    def __init__(self, ctx: RunContext, settings: ObservabilitySettings) -> None:
        run_dir = ctx.require_run_dir()
        self.settings = settings
        self.run_id = run_dir.run_id
        self.trace_dir = run_dir.trace_dir
        attrs: dict[str, Any] = {
            "service.name": settings.resolved_service_name(),
            "service.version": __version__,
            "reprise.run_id": self.run_id,
            "reprise.root_component_id": ctx.root_component_id,
            **settings.resource_attributes,
        }
        _preflight(settings)  # configuration errors surface before any file or thread exists
        self.resource = _base_resource().merge(Resource(attrs))
        self._closed = False
        self._lock = threading.Lock()
        self._live = False
        self._shutdown_threads: list[threading.Thread] = []
        self._notes: list[str] = []
        scope = InstrumentationScope("reprise", __version__)

        # -- traces
        self.tracer_provider: TracerProvider | None = None
        self.tracer: trace_api.Tracer | None = None
        #: The run's span (an SDK span, or a :class:`LeanSpan`); ``None`` with tracing off.
        self.root_span: trace_api.Span | None = None
        self._trace_sink: JsonlSink | None = None
        # Element spans are LeanSpans when trace.jsonl is their only destination; None: SDK spans.
        self._lean: LeanSpanWriter | None = None
        # None when there is none: the span calls test this and nothing else.
        self._listeners: tuple[ElementListener, ...] | None = (
            tuple(settings.element_listeners) if settings.element_listeners and settings.tracing else None
        )
        # Path and element type of each element span still open, for the listeners' end call
        # (user code may change the span's own attributes).
        self._open_elements: dict[trace_api.Span, tuple[HierarchyPath, str]] = {}
        # Listeners whose failure was logged (by id: a listener need not be hashable).
        self._failed_listeners: set[int] = set()
        if settings.tracing:
            # ALWAYS_ON: a sampler from OTEL_TRACES_SAMPLER must not thin out the run's record.
            provider = TracerProvider(sampler=ALWAYS_ON, resource=self.resource, shutdown_on_exit=False)
            self._trace_sink = JsonlSink(self.trace_dir / TRACE_FILE)
            encoder = SpanLineEncoder(self.resource, scope)
            provider.add_span_processor(SpanFileProcessor(self._trace_sink, encoder))
            extra_processors = self._extra_span_processors(settings)
            for processor in extra_processors:
                provider.add_span_processor(processor)
            if not extra_processors:
                # Nobody but trace.jsonl sees element spans: write their lines without the SDK.
                # User spans (child_span) stay SDK spans of this provider, under lean parents.
                self._lean = LeanSpanWriter(self._trace_sink, encoder, self.resource, scope)
            self.tracer_provider = provider
            self.tracer = provider.get_tracer(scope.name, scope.version)
            root_attrs: dict[str, Any] = {
                "reprise.run_id": self.run_id,
                "reprise.hierarchy_path": ctx.root_component_id,
                "reprise.element_type": "run",
            }
            if ctx.previous_run_id:
                root_attrs["reprise.previous_run_id"] = ctx.previous_run_id
            if ctx.start_hierarchy_path:
                root_attrs["reprise.start_hierarchy_path"] = str(ctx.start_hierarchy_path)
            if self._lean is not None:
                self.root_span = self._lean.start_span(f"run {self.run_id}", None, root_attrs)
            else:
                self.root_span = self.tracer.start_span(f"run {self.run_id}", attributes=root_attrs)

        # -- metrics
        #: The SDK's meter provider: with live metric export from the start; otherwise made
        #: when a retry or a user metric first needs it (most runs: never, ~0.15 ms saved).
        self.meter_provider: MeterProvider | None = None
        self._metric_reader: InMemoryMetricReader | None = None
        self._meter: Any = None
        self._retries: Any = None
        self._metrics_on = settings.metrics
        self._user_instruments: dict[str, Any] = {}
        # Node counts are kept here and observed at collection time: a plain dict increment
        # per node instead of an SDK counter call (about 5 µs each).
        self._counts: dict[tuple[str, str], int] = {}
        self._attr_cache: dict[tuple[str, str], dict[str, str]] = {}
        self._series_keys: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        self._scope = scope
        # Node durations: aggregated here and written with the SDK's metrics at the end (an SDK
        # histogram record costs ~10 µs per node); with live metric export, the SDK histogram
        # gets every value instead, so the exporter sees them as they come.
        self._durations: DurationHistogram | None = None
        self._duration: Any = None
        if settings.metrics:
            live_readers = self._live_metric_readers(settings)
            if live_readers:
                meter = self._sdk_meter(live_readers)
                self._duration = meter.create_histogram(
                    _DURATION_NAME,
                    unit=_DURATION_UNIT,
                    description=_DURATION_DESCRIPTION,
                    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
                )
                meter.create_observable_counter(
                    _COUNT_NAME, callbacks=[self._observe_counts], description=_COUNT_DESCRIPTION
                )
            else:
                # Counted and written by reprise at the end, as the SDK would (node_counts_metric).
                self._durations = DurationHistogram(
                    _DURATION_NAME, _DURATION_UNIT, _DURATION_DESCRIPTION, DURATION_BUCKETS
                )

        # -- logs
        self._log_sink: JsonlSink | None = JsonlSink(self.trace_dir / LOGS_FILE) if settings.logging else None
        self._otel_logs: LiveLogs | None = self._live_logs(settings)
        root_ids: dict[str, Any] = {"run_id": self.run_id, "hierarchy_path": ctx.root_component_id}
        if self.root_span is not None:
            root_ids.update(_hex_ids(self.root_span))
        #: The run's logger (bound to the run's root span); nodes get :meth:`node_logger`.
        self.logger: Any = self._make_logger().bind(**root_ids)
        started: dict[str, Any] = {"root_component_id": ctx.root_component_id}
        if ctx.previous_run_id:
            started["previous_run_id"] = ctx.previous_run_id
        if ctx.start_hierarchy_path:
            started["start_hierarchy_path"] = str(ctx.start_hierarchy_path)
        self.logger.info("run started", **started)
        for note in self._notes:
            self.logger.warning(note)
        if self._listeners is not None and self.root_span is not None:
            self._notify_start(HierarchyPath(ctx.root_component_id), "run", self.root_span)

    @classmethod
    def start(cls, ctx: RunContext, settings: ObservabilitySettings | None) -> RunTelemetry | None:
        """Telemetry for ``ctx``'s run, or ``None`` when tracing, metrics and logs are all off."""
        settings = settings or ObservabilitySettings()
        if not (settings.tracing or settings.metrics or settings.logging):
            return None
        return cls(ctx, settings)

    # -- live export ---------------------------------------------------------------------------
    def _extra_span_processors(self, settings: ObservabilitySettings) -> list[SpanProcessor]:
        processors: list[SpanProcessor] = [_BorrowedProcessor(p, flush_at_end=True) for p in settings.span_processors]
        endpoint = settings.resolved_endpoint("traces")
        if endpoint:
            from reprise.observability.export import live_span_processor

            processors.append(live_span_processor(settings, endpoint))
            self._live = True
        if settings.forward_to_global:
            global_provider = trace_api.get_tracer_provider()
            # Private, but the only way to reach an SDK provider's pipeline without replacing it.
            active = getattr(global_provider, "_active_span_processor", None)
            if isinstance(global_provider, TracerProvider) and active is not None:
                processors.append(_BorrowedProcessor(active, flush_at_end=False))
            else:
                self._notes.append(
                    "forward_to_global is on, but the global tracer provider is not an SDK TracerProvider; "
                    "spans are not forwarded"
                )
        return processors

    def _live_metric_readers(self, settings: ObservabilitySettings) -> list[MetricReader]:
        endpoint = settings.resolved_endpoint("metrics")
        if not endpoint:
            return []
        from reprise.observability.export import live_metric_reader

        self._live = True
        return [live_metric_reader(settings, endpoint)]

    def _live_logs(self, settings: ObservabilitySettings) -> LiveLogs | None:
        endpoint = settings.resolved_endpoint("logs") if settings.logging else None
        if not endpoint:
            return None
        from reprise.observability.export import live_logs

        self._live = True
        return live_logs(settings, endpoint, self.resource)

    # -- logging ---------------------------------------------------------------------------
    def _make_logger(self) -> Any:
        processors: list[Any] = [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.format_exc_info,
        ]
        if self._otel_logs is not None:
            processors.append(self._otel_logs.processor)
        processors += [_lead_keys, structlog.processors.JSONRenderer(serializer=_dumps_log)]
        level = _LEVELS[self.settings.log_level.lower()]
        return structlog.wrap_logger(
            _SinkLogger(self._log_sink),
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(level),
            context_class=dict,
            cache_logger_on_first_use=False,
        )

    def node_logger(self, path: HierarchyPath, span: trace_api.Span | None) -> Any:
        """A logger bound to the node at ``path`` (and its span)."""
        fields: dict[str, Any] = {"hierarchy_path": str(path)}
        if span is not None:
            fields.update(_hex_ids(span))
        return self.logger.bind(**fields)

    # -- spans -----------------------------------------------------------------------------
    def node_span(
        self, path: HierarchyPath, parent: trace_api.Span | None, node_kind: str
    ) -> trace_api.Span | PendingNodeSpan | None:
        """Start a node's span: a :class:`PendingNodeSpan` when only ``trace.jsonl`` receives
        spans, no listener follows elements and attributes are not bounded (what
        :meth:`end_span` takes like a span; :meth:`PendingNodeSpan.materialize` makes it one),
        else :meth:`start_span`'s span. Not with ``forward_to_global``: the node then runs
        with its span as the current OpenTelemetry span, which must be a span."""
        lean = self._lean
        if (
            lean is not None
            and self._listeners is None
            and not self.settings.forward_to_global
            and lean.plain_attributes
            and (parent is None or type(parent) is LeanSpan)
        ):
            return PendingNodeSpan(lean, parent, str(path), node_kind, self.run_id)
        return self.start_span(path, "node", parent, node_kind)

    def start_span(
        self, path: HierarchyPath, element_type: str, parent: trace_api.Span | None, node_kind: str | None = None
    ) -> trace_api.Span | None:
        """Start the span of an element (``None`` with tracing off): a :class:`LeanSpan` when
        only ``trace.jsonl`` receives spans, else an SDK span."""
        tracer = self.tracer
        if tracer is None:
            return None
        text = str(path)
        attrs: dict[str, Any] = {
            "reprise.run_id": self.run_id,
            "reprise.hierarchy_path": text,
            "reprise.element_type": element_type,
        }
        if node_kind is not None:
            attrs["reprise.node_kind"] = node_kind
        lean = self._lean
        span: trace_api.Span
        if lean is not None and (parent is None or type(parent) is LeanSpan):
            span = lean.start_span(f"{element_type} {text}", parent, attrs)
        else:
            context = trace_api.set_span_in_context(parent) if parent is not None else None
            span = tracer.start_span(f"{element_type} {text}", context=context, attributes=attrs)
        if self._listeners is not None:
            self._notify_start(path, element_type, span)
        return span

    def end_span(
        self,
        span: trace_api.Span | PendingNodeSpan,
        status: str,
        error: BaseException | None,
        *,
        attempts: int | None = None,
    ) -> None:
        """End an element's span: status attribute, and for a failure status ERROR with the
        exception recorded (the original one, when reprise wrapped it)."""
        if isinstance(span, PendingNodeSpan):
            if error is None and status != "failed" and attempts is not None and span.end_plain(status, attempts):
                return
            self._end_span(span.materialize(), status, error, attempts)
        else:
            self._end_span(span, status, error, attempts)

    def _end_span(self, span: trace_api.Span, status: str, error: BaseException | None, attempts: int | None) -> None:
        if type(span) is LeanSpan and error is None and status != "failed":
            # The common case in one step: attributes and end under one lock.
            span.end_with(
                {"reprise.status": status}
                if attempts is None
                else {"reprise.status": status, "reprise.attempts": attempts}
            )
            if self._listeners is not None:
                self._notify_end(span, status)
            return
        if type(span) is LeanSpan:
            own: dict[str, Any] = {"reprise.status": status}
            if attempts is not None:
                own["reprise.attempts"] = attempts
            span.set_own_attributes(own)
        elif attempts is None:
            span.set_attribute("reprise.status", status)
        else:
            span.set_attributes({"reprise.status": status, "reprise.attempts": attempts})
        if error is not None:
            cause = error.__cause__ if error.__cause__ is not None else error
            span.record_exception(cause)
            description = f"{type(cause).__name__}: {cause}" if str(cause) else str(error) or type(error).__name__
            span.set_status(Status(StatusCode.ERROR, description))
            path = _attribute(span, "reprise.hierarchy_path")
            self.logger.bind(hierarchy_path=path, **_hex_ids(span)).error(
                "node failed", attempts=attempts, error=description
            )
        elif status == "failed":
            span.set_status(Status(StatusCode.ERROR, "failed"))
        span.end()
        if self._listeners is not None:
            self._notify_end(span, status)

    # -- element listeners -----------------------------------------------------------------
    def _notify_start(self, path: HierarchyPath, element_type: str, span: trace_api.Span) -> None:
        listeners = self._listeners
        if listeners is None:
            return
        self._open_elements[span] = (path, element_type)
        attributes = _attributes_view(span)
        for listener in listeners:
            try:
                listener.on_element_start(path, element_type, attributes)
            except Exception as exc:  # a listener must never fail the element or the run
                self._listener_failed(listener, "on_element_start", path, exc)

    def _notify_end(self, span: trace_api.Span, status: str) -> None:
        listeners = self._listeners
        element = self._open_elements.pop(span, None)
        if listeners is None or element is None:
            return
        path, element_type = element
        attributes = _attributes_view(span)
        for listener in listeners:
            try:
                listener.on_element_end(path, element_type, status, attributes)
            except Exception as exc:
                self._listener_failed(listener, "on_element_end", path, exc)

    def _listener_failed(self, listener: ElementListener, method: str, path: HierarchyPath, exc: Exception) -> None:
        """Log the first failure of ``listener``; later ones are ignored (a listener failing on
        every element would otherwise write a traceback per element)."""
        with self._lock:
            if id(listener) in self._failed_listeners:
                return
            self._failed_listeners.add(id(listener))
        self.logger.bind(hierarchy_path=str(path)).error(
            "element listener failed; its later failures are not logged",
            listener=repr(listener),
            method=method,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )

    def reused_node(
        self, path: HierarchyPath, node_kind: str, parent: trace_api.Span | None, result: Mapping[str, Any]
    ) -> None:
        """Record a node reused from an earlier run: a span marked ``reprise.reused``."""
        span = self.start_span(path, "node", parent, node_kind)
        if span is not None:
            attrs: dict[str, Any] = {"reprise.reused": True, "reprise.attempts": 0}
            for key in ("reused_from", "origin_run_id"):
                if result.get(key):
                    attrs[f"reprise.{key}"] = str(result[key])
            if type(span) is LeanSpan:
                span.set_own_attributes(attrs)
            else:
                span.set_attributes(attrs)
            self.end_span(span, "completed", None)
        self._count("reused", node_kind)

    def reused_nodes(
        self, parent: trace_api.Span | None, reused_from: str, nodes: Sequence[tuple[str, str, str]]
    ) -> None:
        """Record nodes reused from an earlier run, ``(hierarchy path, node kind, origin run
        id)`` each: spans marked as :meth:`reused_node` marks them. With only ``trace.jsonl``
        receiving spans and no listener, their lines are made together and written at once (a
        re-run from the last node of a long chain reuses every node before it)."""
        lean = self._lean
        if self.tracer is not None:
            if (
                lean is not None
                and lean.plain_attributes
                and self._listeners is None
                and (parent is None or type(parent) is LeanSpan)
            ):
                lean.write(lean.reused_lines(parent, self.run_id, reused_from, nodes))
            else:
                for text, kind, origin in nodes:
                    result = {"reused_from": reused_from, "origin_run_id": origin}
                    self.reused_node(HierarchyPath(text), kind, parent, result)
                return  # counted by reused_node
        kinds: dict[str, int] = {}
        for _, kind, _ in nodes:
            kinds[kind] = kinds.get(kind, 0) + 1
        with self._lock:
            for kind, n in kinds.items():
                key = ("reused", kind)
                self._counts[key] = self._counts.get(key, 0) + n

    @contextmanager
    def child_span(
        self, name: str, parent: trace_api.Span, attributes: Mapping[str, Any]
    ) -> Iterator[trace_api.Span | None]:
        """A user span under ``parent`` (a node's span), or under the user span already open
        for that node in this task; it is the current OpenTelemetry span inside the block, and
        an exception marks it as an error and propagates."""
        tracer = self.tracer
        if tracer is None:
            yield None
            return
        node_span_id = parent.get_span_context().span_id
        open_span = _USER_SPAN.get()
        under = open_span[1] if open_span is not None and open_span[0] == node_span_id else parent
        attrs: dict[str, Any] = {
            "reprise.run_id": self.run_id,
            "reprise.hierarchy_path": _attribute(parent, "reprise.hierarchy_path") or "",
            "reprise.element_type": "user_span",
            **attributes,
        }
        context = trace_api.set_span_in_context(under)
        with tracer.start_as_current_span(name, context=context, attributes=attrs) as span:
            token = _USER_SPAN.set((node_span_id, span))
            try:
                yield span
            finally:
                _USER_SPAN.reset(token)

    # -- metrics ---------------------------------------------------------------------------
    def _attrs(self, status: str, node_kind: str) -> dict[str, str]:
        key = (status, node_kind)
        attrs = self._attr_cache.get(key)
        if attrs is None:
            attrs = self._attr_cache[key] = {"reprise.status": status, "reprise.node_kind": node_kind}
        return attrs

    def _count(self, status: str, node_kind: str) -> None:
        key = (status, node_kind)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def _sdk_meter(self, live_readers: Sequence[MetricReader] = ()) -> Any:
        """The SDK meter of this run, made on first use (see ``meter_provider``)."""
        meter = self._meter
        if meter is None:
            with self._lock:
                if self._meter is None:
                    self._metric_reader = InMemoryMetricReader()
                    readers: list[MetricReader] = [self._metric_reader, *live_readers]
                    self.meter_provider = MeterProvider(
                        resource=self.resource, metric_readers=readers, shutdown_on_exit=False
                    )
                    self._meter = self.meter_provider.get_meter(self._scope.name, self._scope.version)
                meter = self._meter
        return meter

    def _node_counts(self) -> dict[tuple[str, str], int]:
        # Executed nodes are counted by the duration histogram (one series per status and kind,
        # a count each); the rest (reused nodes, and all with live export) in _counts.
        counts: dict[tuple[str, str], int] = {}
        if self._durations is not None:
            for ((_, status), (_, kind)), n in self._durations.counts():
                counts[(status, kind)] = n
        with self._lock:
            for key, n in self._counts.items():
                counts[key] = counts.get(key, 0) + n
        return counts

    def _observe_counts(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, self._attrs(status, kind)) for (status, kind), n in self._node_counts().items()]

    def node_finished(self, path: HierarchyPath, node_kind: str, status: str, duration_s: float, attempts: int) -> None:
        """Count a finished node and record its duration."""
        if not self._metrics_on:
            return
        key = (status, node_kind)
        durations = self._durations
        if durations is not None:  # its series' counts are the node counts (_observe_counts)
            series = self._series_keys.get(key)
            if series is None:
                series = self._series_keys[key] = (("reprise.status", status), ("reprise.node_kind", node_kind))
            durations.record(duration_s, series)
        else:
            with self._lock:
                self._counts[key] = self._counts.get(key, 0) + 1
            self._duration.record(duration_s, self._attrs(status, node_kind))

    def retry(
        self,
        path: HierarchyPath,
        node_kind: str,
        attempt: int,
        error: BaseException,
        span: trace_api.Span | PendingNodeSpan | None,
    ) -> None:
        """Record that attempt ``attempt`` failed and another follows."""
        if isinstance(span, PendingNodeSpan):
            span = span.materialize()
        if self._metrics_on:
            retries = self._retries
            if retries is None:
                retries = self._retries = self._sdk_meter().create_counter(
                    "reprise.node.retries", description="Retried node attempts"
                )
            # The definition path (loop indexes as ``*``) keeps the number of series bounded.
            retries.add(1, {"reprise.node_kind": node_kind, "reprise.definition_path": definition_path(path)})
        cause = error.__cause__ if error.__cause__ is not None else error
        message = f"{type(cause).__name__}: {cause}" if str(cause) else str(error)
        if span is not None:
            span.add_event(
                "retry",
                {"reprise.attempt": attempt, "exception.type": type(cause).__name__, "exception.message": message},
            )
        ids = _hex_ids(span) if span is not None else {}
        self.logger.bind(hierarchy_path=str(path), **ids).warning(
            "node attempt failed; retrying", attempt=attempt, error=message
        )

    def user_metric(self, name: str, value: float, attributes: Mapping[str, Any], *, path: str | None = None) -> None:
        """Record a value of the user metric ``name`` (a histogram). ``path`` (the recording
        node's hierarchy path) is for error messages and logs only."""
        path = path or attributes.get("reprise.hierarchy_path")
        if not isinstance(name, str) or not _METRIC_NAME.match(name):
            raise RepriseError(
                f"invalid metric name {name!r}: use letters, digits, '_', '.', '-', '/', starting with a letter",
                path=path,
                run_id=self.run_id,
            )
        if name.startswith("reprise."):
            raise RepriseError(f"metric names starting with 'reprise.' are reserved: {name!r}", path=path)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RepriseError(f"metric {name!r}: value must be a number, got {type(value).__name__}", path=path)
        if not self._metrics_on:
            return
        if not math.isfinite(value):
            # The SDK drops it too, but only tells stdlib logging; say so where the run logs.
            self.logger.bind(hierarchy_path=path).warning(
                "metric value is not finite; dropped", metric=name, value=value
            )
            return
        instrument = self._user_instruments.get(name)
        if instrument is None:
            meter = self._sdk_meter()  # not under _lock: it takes it (and it is not reentrant)
            with self._lock:
                instrument = self._user_instruments.get(name)
                if instrument is None:
                    instrument = meter.create_histogram(name)
                    self._user_instruments[name] = instrument
        instrument.record(value, dict(attributes))

    # -- completion ------------------------------------------------------------------------
    def finish(
        self,
        status: str,
        error_msg: str | None,
        *,
        before_close: Callable[[], None] | None = None,
        duration_s: float | None = None,
    ) -> None:
        """End the root span, write metrics, close every file. Idempotent.

        ``duration_s``: the run's duration as its context fixed it; the root span ends that long
        after it started, so the trace shows the run's one duration.

        ``before_close`` is called once the trace and metrics are written, while the log is
        still open (the run's outcome commit is waited for there), and the ``run finished`` log
        line comes after it, the last line. The files are complete when this returns. Live
        exporters are flushed and shut down on background threads (see :meth:`wait_exported`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        fields: dict[str, Any] = {"status": status}
        if error_msg:
            fields["error"] = error_msg
        try:
            try:
                self._finish_trace_and_metrics(status, error_msg, duration_s)
                if before_close is not None:
                    before_close()
            finally:
                (self.logger.error if status == "failed" else self.logger.info)("run finished", **fields)
        finally:
            if self._trace_sink is not None:
                self._trace_sink.close()
            if self._log_sink is not None:
                self._log_sink.close()
            self._shutdown_providers()

    def _finish_trace_and_metrics(self, status: str, error_msg: str | None, duration_s: float | None) -> None:
        root = self.root_span
        if root is not None:
            if type(root) is LeanSpan:
                root.set_own_attributes({"reprise.status": status})
            else:
                root.set_attribute("reprise.status", status)
            if status == "failed":
                root.set_status(Status(StatusCode.ERROR, error_msg or "failed"))
            start = getattr(root, "start_time", None)
            root.end(None if duration_s is None or start is None else start + round(duration_s * 1e9))
            if self._listeners is not None:
                self._notify_end(root, status)
        if self._metrics_on:
            reader = self._metric_reader
            data = reader.get_metrics_data() if reader is not None else None
            first: list[Metric] = []
            if self._durations is not None:  # reprise's own, as the SDK would write them
                when = _collection_time(data) or time.time_ns()
                durations = self._durations.metric(when)
                if durations is not None:
                    first.append(durations)
                by_attrs = [(self._attrs(*key), n) for key, n in self._node_counts().items()]
                counts = node_counts_metric(_COUNT_NAME, _COUNT_DESCRIPTION, by_attrs, when)
                if counts is not None:
                    first.append(counts)
            line = metrics_request_line(data, first=first, resource=self.resource, scope=self._scope)
            if line is not None:
                sink = JsonlSink(self.trace_dir / METRICS_FILE)
                sink.write(line)
                sink.close()

    def _shutdown_providers(self) -> None:
        jobs: list[Any] = []
        if self.tracer_provider is not None:
            jobs.append(self.tracer_provider.shutdown)
        if self.meter_provider is not None:
            meter_provider = self.meter_provider
            jobs.append(lambda: meter_provider.shutdown(timeout_millis=10_000))
        if self._otel_logs is not None:
            jobs.append(self._otel_logs.shutdown)
        if not self._live:
            for job in jobs:  # nothing goes over the network: cheap, do it now
                job()
            return
        # Not daemon threads: the interpreter waits for them at exit, so data is delivered even
        # when a script ends right after its run.
        for job in jobs:
            thread = threading.Thread(target=job, name=f"reprise-otlp-shutdown-{self.run_id}", daemon=False)
            thread.start()
            self._shutdown_threads.append(thread)

    def wait_exported(self, timeout: float | None = None) -> bool:
        """Wait until live exporters have delivered (or given up on) everything after
        :meth:`finish`; True if they are done. Without live export, True at once."""
        for thread in self._shutdown_threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in self._shutdown_threads)
