"""RunTelemetry: the tracer, meter and loggers of one run, and the files in its ``.trace/``.

Every run gets its own ``TracerProvider``, ``MeterProvider`` and structlog logger; nothing global
is read or replaced, so two runs in one process, one after the other or at the same time, never
see each other's spans, metrics or logs.

* Every element of the run (the run itself, flows, loops, iterations, nodes, ...) is an SDK span
  of the run's provider. :class:`TraceFileExporter` writes each one to ``trace.jsonl`` as it
  ends, under a ``SimpleSpanProcessor``: no queue, so nothing is dropped under bursts and a
  crash loses only spans still open.
* Element listeners (``ObservabilitySettings.element_listeners``) are told when each element
  starts and ends, from the same calls that start and end its span.
* Metrics come from the SDK's instruments; :class:`MetricsFileExporter` writes them to
  ``metrics.jsonl`` when the run ends, through a reader that exports only when flushed (and
  live every few seconds when an OTLP endpoint is set).
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Status, StatusCode

from reprise._version import __version__
from reprise.dsl._definition import definition_path
from reprise.dsl._paths import HierarchyPath
from reprise.errors import RepriseError, RunSetupError
from reprise.observability._otlp_json import SpanLineEncoder, metrics_request_line
from reprise.observability._settings import ElementListener, ObservabilitySettings

if TYPE_CHECKING:
    from reprise.observability._export import LiveLogs
    from reprise.run._context import RunContext

__all__ = [
    "LOGS_FILE",
    "METRICS_FILE",
    "TRACE_FILE",
    "JsonlSink",
    "MetricsFileExporter",
    "RunTelemetry",
    "TraceFileExporter",
]

TRACE_FILE = "trace.jsonl"
METRICS_FILE = "metrics.jsonl"
LOGS_FILE = "logs.jsonl"

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
# Seconds. The SDK's default boundaries (0, 5, 10, 25, ... 10000) would put almost every node in
# one bucket; these resolve from a millisecond to ten minutes.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
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


class TraceFileExporter(SpanExporter):
    """Writes the spans of each export call as one OTLP/JSON line of ``trace.jsonl``. Under a
    ``SimpleSpanProcessor`` that is one line per span, written the moment the span ends.

    The SDK's processors log an exporter's exception and go on; the first one is kept in
    :attr:`error` so that the run can raise it when it ends."""

    def __init__(self, sink: JsonlSink, encoder: SpanLineEncoder) -> None:
        self._sink = sink
        self._encoder = encoder
        #: The first error writing the file, if any.
        self.error: Exception | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._sink.write(self._encoder.line(spans))
        except Exception as exc:
            self.error = self.error or exc
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._sink.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class MetricsFileExporter(MetricExporter):
    """Writes each collection it is given as one OTLP/JSON line of ``metrics.jsonl`` (the file
    is made by the first collection that holds a data point). As :class:`TraceFileExporter`,
    it keeps its first error in :attr:`error`."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        #: The first error writing the file, if any.
        self.error: Exception | None = None

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        try:
            line = metrics_request_line(metrics_data)
            if line is not None:
                sink = JsonlSink(self._path)
                try:
                    sink.write(line)
                finally:
                    sink.close()
        except Exception as exc:
            self.error = self.error or exc
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class _BorrowedProcessor(SpanProcessor):
    """A span processor passed in the settings: spans go to it, and it is flushed when the run
    ends, but never shut down (the caller owns it and may reuse it for other runs)."""

    def __init__(self, processor: SpanProcessor) -> None:
        self._processor = processor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._processor.on_end(span)

    def shutdown(self) -> None:
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
    sc = span.get_span_context()
    return {"trace_id": f"{sc.trace_id:032x}", "span_id": f"{sc.span_id:016x}"}


def _attributes(span: trace_api.Span) -> Mapping[str, Any]:
    """The attributes of a span of ours (an SDK span: a read-only view), empty if it has none."""
    return getattr(span, "attributes", None) or {}


_BASE_RESOURCES: dict[str, Resource] = {}


def _base_resource() -> Resource:
    """The SDK's detected resource (SDK attributes, ``OTEL_RESOURCE_ATTRIBUTES``), detected once
    per process and environment: detection is slow next to the rest of a run's set-up, and runs
    start often."""
    key = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "") + "\0" + os.environ.get("OTEL_SERVICE_NAME", "")
    base = _BASE_RESOURCES.get(key)
    if base is None:
        base = _BASE_RESOURCES[key] = Resource.create({})
    return base


class RunTelemetry:
    """Tracing, metrics and logging for one run. Made by :meth:`RunContext.setup_run`.

    The executor calls :meth:`start_span` / :meth:`end_span` around every element,
    :meth:`node_finished`, :meth:`retry` and :meth:`reused_nodes` for nodes, and
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
        scope = InstrumentationScope("reprise", __version__)

        # -- traces
        self.tracer_provider: TracerProvider | None = None
        self._trace_exporter: TraceFileExporter | None = None
        self.tracer: trace_api.Tracer | None = None
        #: The run's span; ``None`` with tracing off.
        self.root_span: trace_api.Span | None = None
        self._trace_sink: JsonlSink | None = None
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
            self._trace_exporter = TraceFileExporter(self._trace_sink, SpanLineEncoder(self.resource, scope))
            provider.add_span_processor(SimpleSpanProcessor(self._trace_exporter))
            for processor in self._extra_span_processors(settings):
                provider.add_span_processor(processor)
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
            self.root_span = self.tracer.start_span(f"run {self.run_id}", attributes=root_attrs)

        # -- metrics
        self.meter_provider: MeterProvider | None = None
        #: Exports to ``metrics.jsonl`` only when flushed (at the end of the run).
        self._metric_reader: MetricReader | None = None
        self._metrics_exporter: MetricsFileExporter | None = None
        self._user_instruments: dict[str, Any] = {}
        if settings.metrics:
            self._metrics_exporter = MetricsFileExporter(self.trace_dir / METRICS_FILE)
            self._metric_reader = PeriodicExportingMetricReader(self._metrics_exporter, export_interval_millis=math.inf)
            readers = [self._metric_reader, *self._live_metric_readers(settings)]
            self.meter_provider = MeterProvider(resource=self.resource, metric_readers=readers, shutdown_on_exit=False)
            self._meter = self.meter_provider.get_meter(scope.name, scope.version)
            self._durations = self._meter.create_histogram(
                "reprise.node.duration",
                unit="s",
                description="Wall time of each node execution",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
            self._counts = self._meter.create_counter("reprise.node.count", description="Nodes finished, by status")
            self._retries = self._meter.create_counter("reprise.node.retries", description="Retried node attempts")

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
        processors: list[SpanProcessor] = [_BorrowedProcessor(p) for p in settings.span_processors]
        endpoint = settings.resolved_endpoint("traces")
        if endpoint:
            from reprise.observability._export import live_span_processor

            processors.append(live_span_processor(settings, endpoint))
            self._live = True
        return processors

    def _live_metric_readers(self, settings: ObservabilitySettings) -> list[MetricReader]:
        endpoint = settings.resolved_endpoint("metrics")
        if not endpoint:
            return []
        from reprise.observability._export import live_metric_reader

        self._live = True
        return [live_metric_reader(settings, endpoint)]

    def _live_logs(self, settings: ObservabilitySettings) -> LiveLogs | None:
        endpoint = settings.resolved_endpoint("logs") if settings.logging else None
        if not endpoint:
            return None
        from reprise.observability._export import live_logs

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
    def start_span(
        self,
        path: HierarchyPath,
        element_type: str,
        parent: trace_api.Span | None,
        node_kind: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> trace_api.Span | None:
        """Start the span of an element under ``parent`` (``None``: under the run's span), with
        reprise's attributes and ``attributes``; ``None`` with tracing off."""
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
        if attributes:
            attrs.update(attributes)
        context = trace_api.set_span_in_context(parent) if parent is not None else None
        span = tracer.start_span(f"{element_type} {text}", context=context, attributes=attrs)
        if self._listeners is not None:
            self._notify_start(path, element_type, span)
        return span

    def end_span(
        self, span: trace_api.Span, status: str, error: BaseException | None, *, attempts: int | None = None
    ) -> None:
        """End an element's span: status attribute, and for a failure status ERROR with the
        exception recorded (the original one, when reprise wrapped it)."""
        if attempts is None:
            span.set_attribute("reprise.status", status)
        else:
            span.set_attributes({"reprise.status": status, "reprise.attempts": attempts})
        if error is not None:
            cause = error.__cause__ if error.__cause__ is not None else error
            span.record_exception(cause)
            description = f"{type(cause).__name__}: {cause}" if str(cause) else str(error) or type(error).__name__
            span.set_status(Status(StatusCode.ERROR, description))
            path = _attributes(span).get("reprise.hierarchy_path")
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
        attributes = _attributes(span)
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
        attributes = _attributes(span)
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
        """Record a node reused from an earlier run (``result``: its reused record): a span
        started and ended at once, marked ``reprise.reused`` with the run it was taken from and
        the run that executed it, and a count of ``reused`` nodes."""
        if self.tracer is not None:
            attrs: dict[str, Any] = {"reprise.reused": True, "reprise.attempts": 0}
            for key in ("reused_from", "origin_run_id"):
                if result.get(key):
                    attrs[f"reprise.{key}"] = str(result[key])
            span = self.start_span(path, "node", parent, node_kind, attrs)
            if span is not None:
                self.end_span(span, "completed", None)
        if self.meter_provider is not None:
            self._counts.add(1, {"reprise.status": "reused", "reprise.node_kind": node_kind})

    def reused_nodes(
        self, parent: trace_api.Span | None, reused_from: str, nodes: Sequence[tuple[str, str, str]]
    ) -> None:
        """Record nodes reused from ``reused_from``, ``(hierarchy path, node kind, origin run
        id)`` each, as :meth:`reused_node` does."""
        for text, kind, origin in nodes:
            self.reused_node(HierarchyPath(text), kind, parent, {"reused_from": reused_from, "origin_run_id": origin})

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
            "reprise.hierarchy_path": _attributes(parent).get("reprise.hierarchy_path") or "",
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
    def node_finished(self, path: HierarchyPath, node_kind: str, status: str, duration_s: float, attempts: int) -> None:
        """Count a finished node and record its duration."""
        if self.meter_provider is None:
            return
        attrs = {"reprise.status": status, "reprise.node_kind": node_kind}
        self._durations.record(duration_s, attrs)
        self._counts.add(1, attrs)

    def retry(
        self, path: HierarchyPath, node_kind: str, attempt: int, error: BaseException, span: trace_api.Span | None
    ) -> None:
        """Record that attempt ``attempt`` failed and another follows."""
        if self.meter_provider is not None:
            # The definition path (loop indexes as ``*``) keeps the number of series bounded.
            self._retries.add(1, {"reprise.node_kind": node_kind, "reprise.definition_path": definition_path(path)})
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
        if self.meter_provider is None:
            return
        if not math.isfinite(value):
            # The SDK drops it too, but only tells stdlib logging; say so where the run logs.
            self.logger.bind(hierarchy_path=path).warning(
                "metric value is not finite; dropped", metric=name, value=value
            )
            return
        with self._lock:
            instrument = self._user_instruments.get(name)
            if instrument is None:
                instrument = self._user_instruments[name] = self._meter.create_histogram(name)
        instrument.record(value, dict(attributes))

    # -- completion ------------------------------------------------------------------------
    def finish(self, status: str, error_msg: str | None, *, before_close: Callable[[], None] | None = None) -> None:
        """End the root span, write metrics, close every file. Idempotent.

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
                self._finish_trace_and_metrics(status, error_msg)
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

    def _finish_trace_and_metrics(self, status: str, error_msg: str | None) -> None:
        root = self.root_span
        if root is not None:
            root.set_attribute("reprise.status", status)
            if status == "failed":
                root.set_status(Status(StatusCode.ERROR, error_msg or "failed"))
            root.end()
            if self._listeners is not None:
                self._notify_end(root, status)
        if self._metric_reader is not None:
            self._metric_reader.force_flush()  # collects once and writes metrics.jsonl
        for exporter in (self._trace_exporter, self._metrics_exporter):
            if exporter is not None and exporter.error is not None:
                raise exporter.error

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
