"""RunTelemetry: the tracer, meter and loggers of one run, and the files in its ``.trace/``.

Every run gets its own ``TracerProvider``, ``MeterProvider`` and structlog logger; nothing global
is read or replaced, so two runs in one process (one after the other or at the same time) never
see each other's spans, metrics or logs.

* Spans go to ``trace.jsonl`` as they end, synchronously, one ``ExportTraceServiceRequest`` per
  line: no queue, so nothing is dropped under bursts and a crash loses only spans still open.
* Metrics are collected from an in-memory reader and written to ``metrics.jsonl`` when the run
  completes (and exported live every few seconds when an OTLP endpoint is set).
* Logs are structlog events rendered as JSON lines in ``logs.jsonl``, each with run id,
  hierarchy path, trace id and span id; with live export on they are bridged to OpenTelemetry
  logs as well.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import Status, StatusCode

from reprise import __version__
from reprise.dsl.paths import HierarchyPath
from reprise.observability.otlp_json import SpanLineEncoder, encode_metrics
from reprise.observability.settings import ObservabilitySettings

if TYPE_CHECKING:
    from reprise.run.context import RunContext

__all__ = ["JsonlSink", "RunTelemetry", "SpanFileProcessor"]

TRACE_FILE = "trace.jsonl"
METRICS_FILE = "metrics.jsonl"
LOGS_FILE = "logs.jsonl"

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}


class JsonlSink:
    """An append-only JSON-lines file. Each line is one ``write`` on an ``O_APPEND`` descriptor,
    so lines from several threads never interleave and a reader never sees half a line."""

    __slots__ = ("path", "_fd", "_lock")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def write(self, line: bytes) -> None:
        """Append one line (``line`` ends with a newline)."""
        fd = self._fd
        if fd is not None:
            os.write(fd, line)

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

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        self._sink.write(self._encoder.line((span,)))

    def shutdown(self) -> None:
        self._sink.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _SinkLogger:
    """The structlog 'logger' at the end of the chain: receives the rendered JSON line."""

    __slots__ = ("_sink",)

    def __init__(self, sink: JsonlSink | None) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        if self._sink is not None:
            self._sink.write(message.encode() + b"\n")

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class RunTelemetry:
    """Tracing, metrics and logging for one run. Made by :meth:`RunContext.setup_run`."""

    def __init__(self, ctx: RunContext, settings: ObservabilitySettings) -> None:
        run_dir = ctx.require_run_dir()
        self.settings = settings
        self.run_id = run_dir.run_id
        self.trace_dir = run_dir.trace_dir
        attrs: dict[str, Any] = {
            "service.name": settings.service_name,
            "service.version": __version__,
            "reprise.run_id": self.run_id,
            "reprise.root_component_id": ctx.root_component_id,
            **settings.resource_attributes,
        }
        self.resource = Resource.create(attrs)
        self._closed = False
        self._lock = threading.Lock()

        # -- traces
        self.tracer_provider: TracerProvider | None = None
        self.tracer: trace_api.Tracer | None = None
        self.root_span: Span | None = None
        if settings.tracing:
            provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
            self._trace_sink = JsonlSink(self.trace_dir / TRACE_FILE)
            scope_tracer = provider.get_tracer("reprise", __version__)
            encoder = SpanLineEncoder(self.resource, scope_tracer.instrumentation_info)  # type: ignore[attr-defined]
            provider.add_span_processor(SpanFileProcessor(self._trace_sink, encoder))
            for processor in self._extra_span_processors(settings):
                provider.add_span_processor(processor)
            self.tracer_provider = provider
            self.tracer = scope_tracer
            root_attrs: dict[str, Any] = {
                "reprise.run_id": self.run_id,
                "reprise.hierarchy_path": ctx.root_component_id,
                "reprise.element_type": "run",
            }
            if ctx.previous_run_id:
                root_attrs["reprise.previous_run_id"] = ctx.previous_run_id
            if ctx.start_hierarchy_path:
                root_attrs["reprise.start_hierarchy_path"] = str(ctx.start_hierarchy_path)
            self.root_span = scope_tracer.start_span(f"run {self.run_id}", attributes=root_attrs)  # type: ignore[assignment]

        # -- metrics
        self.meter_provider: MeterProvider | None = None
        self._metric_reader: InMemoryMetricReader | None = None
        self._user_instruments: dict[str, Any] = {}
        if settings.metrics:
            self._metric_reader = InMemoryMetricReader()
            readers: list[MetricReader] = [self._metric_reader, *self._live_metric_readers(settings)]
            self.meter_provider = MeterProvider(resource=self.resource, metric_readers=readers, shutdown_on_exit=False)
            meter = self.meter_provider.get_meter("reprise", __version__)
            self._meter = meter
            self._duration = meter.create_histogram(
                "reprise.node.duration", unit="s", description="Wall time of each node execution"
            )
            self._count = meter.create_counter("reprise.node.count", description="Nodes finished, by status")
            self._retries = meter.create_counter("reprise.node.retries", description="Retried node attempts")

        # -- logs
        self._log_sink: JsonlSink | None = JsonlSink(self.trace_dir / LOGS_FILE) if settings.logging else None
        self._otel_logs = self._live_log_provider(settings)
        root_ids: dict[str, Any] = {"run_id": self.run_id, "hierarchy_path": ctx.root_component_id}
        if self.root_span is not None:
            sc = self.root_span.get_span_context()
            root_ids["trace_id"] = f"{sc.trace_id:032x}"
            root_ids["span_id"] = f"{sc.span_id:016x}"
        self.logger: Any = self._make_logger().bind(**root_ids)
        self.logger.info("run started", root_component_id=ctx.root_component_id, previous_run_id=ctx.previous_run_id)

    @classmethod
    def start(cls, ctx: RunContext, settings: ObservabilitySettings | None) -> RunTelemetry | None:
        """Telemetry for ``ctx``'s run, or ``None`` when tracing, metrics and logs are all off."""
        settings = settings or ObservabilitySettings()
        if not (settings.tracing or settings.metrics or settings.logging):
            return None
        return cls(ctx, settings)

    # -- live export ---------------------------------------------------------------------------
    def _extra_span_processors(self, settings: ObservabilitySettings) -> list[SpanProcessor]:
        processors: list[SpanProcessor] = list(settings.span_processors)
        endpoint = settings.resolved_endpoint("traces")
        if endpoint:
            from reprise.observability.export import live_span_processor

            processors.append(live_span_processor(settings, endpoint))
        if settings.forward_to_global:
            global_provider = trace_api.get_tracer_provider()
            active = getattr(global_provider, "_active_span_processor", None)
            if isinstance(global_provider, TracerProvider) and active is not None:
                processors.append(active)
        return processors

    def _live_metric_readers(self, settings: ObservabilitySettings) -> list[MetricReader]:
        endpoint = settings.resolved_endpoint("metrics")
        if not endpoint:
            return []
        from reprise.observability.export import live_metric_reader

        return [live_metric_reader(settings, endpoint)]

    def _live_log_provider(self, settings: ObservabilitySettings) -> Any:
        endpoint = settings.resolved_endpoint("logs") if settings.logging else None
        if not endpoint:
            return None
        from reprise.observability.export import live_logger

        return live_logger(settings, endpoint, self.resource)

    # -- logging ---------------------------------------------------------------------------
    def _make_logger(self) -> Any:
        processors: list[Any] = [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        ]
        if self._otel_logs is not None:
            processors.append(self._otel_logs.processor)
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False, default=str),
        ]
        level = _LEVELS.get(self.settings.log_level.lower(), 20)
        return structlog.wrap_logger(
            _SinkLogger(self._log_sink),
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(level),
            context_class=dict,
            cache_logger_on_first_use=False,
        )

    def node_logger(self, path: HierarchyPath, span: Span | None) -> Any:
        """A logger bound to the node at ``path`` (and its span)."""
        fields: dict[str, Any] = {"hierarchy_path": str(path)}
        if span is not None:
            sc = span.get_span_context()
            fields["trace_id"] = f"{sc.trace_id:032x}"
            fields["span_id"] = f"{sc.span_id:016x}"
        return self.logger.bind(**fields)

    # -- spans -----------------------------------------------------------------------------
    def start_span(
        self, path: HierarchyPath, element_type: str, parent: Span | None, node_kind: str | None = None
    ) -> Span | None:
        """Start the span of an element (``None`` with tracing off)."""
        tracer = self.tracer
        if tracer is None:
            return None
        attrs: dict[str, Any] = {
            "reprise.run_id": self.run_id,
            "reprise.hierarchy_path": str(path),
            "reprise.element_type": element_type,
        }
        if node_kind is not None:
            attrs["reprise.node_kind"] = node_kind
        context = trace_api.set_span_in_context(parent) if parent is not None else None
        return tracer.start_span(f"{element_type} {path}", context=context, attributes=attrs)  # type: ignore[return-value]

    def end_span(self, span: Span, status: str, error: BaseException | None, *, attempts: int | None = None) -> None:
        """End an element's span, marking failures as errors with the exception recorded."""
        span.set_attribute("reprise.status", status)
        if attempts is not None:
            span.set_attribute("reprise.attempts", attempts)
        if error is not None:
            cause = error.__cause__ if error.__cause__ is not None else error
            span.record_exception(cause)
            span.set_status(Status(StatusCode.ERROR, f"{type(cause).__name__}: {cause}"))
        elif status == "failed":
            span.set_status(Status(StatusCode.ERROR, "failed"))
        span.end()

    def reused_node(self, path: HierarchyPath, node_kind: str, parent: Span | None, result: Mapping[str, Any]) -> None:
        """Record a node reused from an earlier run: a span marked ``reprise.reused``."""
        span = self.start_span(path, "node", parent, node_kind)
        if span is not None:
            span.set_attribute("reprise.reused", True)
            span.set_attribute("reprise.reused_from_run", str(result.get("reused_from", "")))
            span.set_attribute("reprise.attempts", 0)
            self.end_span(span, "completed", None)
        if self.meter_provider is not None:
            self._count.add(1, {"reprise.status": "reused", "reprise.node_kind": node_kind})

    @contextmanager
    def child_span(self, name: str, parent: Span, attributes: Mapping[str, Any]) -> Iterator[Span | None]:
        """A user span under ``parent``; an exception marks it as an error and propagates."""
        tracer = self.tracer
        if tracer is None:
            yield None
            return
        context = trace_api.set_span_in_context(parent)
        with tracer.start_as_current_span(name, context=context, attributes=dict(attributes)) as span:
            yield span  # type: ignore[misc]

    # -- metrics ---------------------------------------------------------------------------
    def node_finished(self, path: HierarchyPath, node_kind: str, status: str, duration_s: float, attempts: int) -> None:
        """Count a finished node and record its duration."""
        if self.meter_provider is None:
            return
        attrs = {"reprise.status": status, "reprise.node_kind": node_kind}
        self._count.add(1, attrs)
        self._duration.record(duration_s, attrs)
        if status == "failed":
            self.logger.error("node failed", hierarchy_path=str(path), attempts=attempts)

    def retry(self, path: HierarchyPath, node_kind: str, attempt: int, error: BaseException, span: Span | None) -> None:
        """Record that attempt ``attempt`` failed and another follows."""
        if self.meter_provider is not None:
            self._retries.add(1, {"reprise.node_kind": node_kind})
        if span is not None:
            span.add_event("retry", {"reprise.attempt": attempt, "exception.type": type(error).__name__, "exception.message": str(error)})
        self.logger.warning("node attempt failed; retrying", hierarchy_path=str(path), attempt=attempt, error=str(error))

    def user_metric(self, name: str, value: float, attributes: Mapping[str, Any]) -> None:
        """Record a value of a user metric (a histogram named ``name``)."""
        if self.meter_provider is None:
            return
        instrument = self._user_instruments.get(name)
        if instrument is None:
            with self._lock:
                instrument = self._user_instruments.get(name)
                if instrument is None:
                    instrument = self._meter.create_histogram(name)
                    self._user_instruments[name] = instrument
        instrument.record(value, dict(attributes))

    # -- completion ------------------------------------------------------------------------
    def finish(self, status: str, error_msg: str | None) -> None:
        """End the root span, write metrics, flush and close every file. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        log = self.logger.error if status == "failed" else self.logger.info
        log("run finished", status=status, error=error_msg)
        if self.root_span is not None:
            self.root_span.set_attribute("reprise.status", status)
            if status == "failed":
                self.root_span.set_status(Status(StatusCode.ERROR, error_msg or "failed"))
            self.root_span.end()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None and self._metric_reader is not None:
            import json

            data = self._metric_reader.get_metrics_data()
            if data is not None:
                line = json.dumps(encode_metrics(data), separators=(",", ":")) + "\n"
                sink = JsonlSink(self.trace_dir / METRICS_FILE)
                sink.write(line.encode())
                sink.close()
            self.meter_provider.shutdown(timeout_millis=5_000)
        if self._otel_logs is not None:
            self._otel_logs.shutdown()
        if self._log_sink is not None:
            self._log_sink.close()


def now_ns() -> int:
    """The current time in nanoseconds since the epoch."""
    return time.time_ns()
