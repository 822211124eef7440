"""Live OTLP export (HTTP or gRPC) of a run's spans, metrics and logs to any collector.

Loaded only when an endpoint is configured; needs the extra ``reprise-agents[otlp]``. Every
queue here is large (64k items) because the SDK defaults (2,048) silently drop data under
bursts; the run's own files in ``.trace/`` never depend on these queues.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from reprise.errors import RunSetupError
from reprise.observability._settings import ObservabilitySettings

__all__ = ["LiveLogs", "live_logs", "live_metric_reader", "live_span_processor"]

_QUEUE = 65_536


def _exporter(settings: ObservabilitySettings, signal: str, endpoint: str) -> Any:
    """The OTLP exporter for ``signal`` over the configured protocol."""
    headers = settings.resolved_headers(signal) or None
    grpc = settings.resolved_protocol(signal) == "grpc"
    try:
        if signal == "traces":
            if grpc:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

                return GrpcSpans(endpoint=endpoint, headers=headers)
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

            return HttpSpans(endpoint=endpoint, headers=headers)
        if signal == "metrics":
            if grpc:
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

                return GrpcMetrics(endpoint=endpoint, headers=headers)
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

            return HttpMetrics(endpoint=endpoint, headers=headers)
        if grpc:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs

            return GrpcLogs(endpoint=endpoint, headers=headers)
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

        return HttpLogs(endpoint=endpoint, headers=headers)
    except ImportError as exc:
        raise RunSetupError(f"live OTLP export needs the extra: pip install 'reprise-agents[otlp]' ({exc})") from None


def live_span_processor(settings: ObservabilitySettings, endpoint: str) -> SpanProcessor:
    """A batch processor exporting spans to ``endpoint``."""
    return BatchSpanProcessor(
        _exporter(settings, "traces", endpoint),
        max_queue_size=_QUEUE,
        max_export_batch_size=512,
        schedule_delay_millis=500,
    )


def live_metric_reader(settings: ObservabilitySettings, endpoint: str) -> MetricReader:
    """A periodic reader exporting metrics every 5 s (and once more when the run ends)."""
    return PeriodicExportingMetricReader(_exporter(settings, "metrics", endpoint), export_interval_millis=5_000)


_SEVERITY = {"debug": 5, "info": 9, "warning": 13, "warn": 13, "error": 17, "critical": 21, "exception": 17}
# structlog keys that become OpenTelemetry fields rather than attributes, and renamed ones.
_NOT_ATTRIBUTES = frozenset({"event", "trace_id", "span_id", "timestamp", "level"})
_RENAMED = {"run_id": "reprise.run_id", "hierarchy_path": "reprise.hierarchy_path", "exception": "exception.stacktrace"}


def _attribute(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


class LiveLogs:
    """Bridges structlog events into OpenTelemetry log records (use :meth:`processor` as a
    structlog processor). Records carry the trace and span ids the event was bound to."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider
        self._logger = provider.get_logger("reprise")

    def processor(self, logger: Any, method: str, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """Emit ``event`` as a log record; return it unchanged for the next processor."""
        from opentelemetry._logs import LogRecord, SeverityNumber

        attributes = {
            _RENAMED.get(k, k): _attribute(v) for k, v in event.items() if k not in _NOT_ATTRIBUTES and v is not None
        }
        context = None
        trace_id = event.get("trace_id")
        span_id = event.get("span_id")
        if trace_id and span_id:
            span_context = trace_api.SpanContext(
                int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=trace_api.TraceFlags(1)
            )
            context = trace_api.set_span_in_context(trace_api.NonRecordingSpan(span_context))
        level = str(event.get("level", method))
        self._logger.emit(
            LogRecord(
                timestamp=time.time_ns(),
                context=context,
                severity_text=level.upper(),
                severity_number=SeverityNumber(_SEVERITY.get(level, 9)),
                body=str(event.get("event", "")),
                attributes=attributes,
            )
        )
        return event

    def shutdown(self) -> None:
        """Flush and stop the exporter."""
        self._provider.shutdown()


def live_logs(settings: ObservabilitySettings, endpoint: str, resource: Resource) -> LiveLogs:
    """An OpenTelemetry logger provider exporting to ``endpoint``, wrapped for structlog."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    exporter = _exporter(settings, "logs", endpoint)
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_queue_size=_QUEUE))
    return LiveLogs(provider)
