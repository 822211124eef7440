"""Live OTLP export (HTTP or gRPC) of a run's spans, metrics and logs to any collector.

Loaded only when an endpoint is configured; needs the extra ``reprise[otlp]``.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from reprise.observability.settings import ObservabilitySettings

__all__ = ["live_logger", "live_metric_reader", "live_span_processor"]


def _missing(exc: ImportError) -> ImportError:
    return ImportError(f"live OTLP export needs the extra: pip install 'reprise[otlp]' ({exc})")


def _grpc_args(endpoint: str) -> dict[str, Any]:
    insecure = endpoint.startswith("http://") or "://" not in endpoint
    return {"endpoint": endpoint.split("://", 1)[-1], "insecure": insecure}


def live_span_processor(settings: ObservabilitySettings, endpoint: str) -> SpanProcessor:
    """A batch processor exporting spans to ``endpoint``. The queue is large (64k) because the
    SDK default of 2,048 silently drops spans under bursts; the run's own file never drops."""
    headers = settings.resolved_headers()
    try:
        if settings.resolved_protocol() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            exporter: Any = GrpcExporter(headers=headers or None, **_grpc_args(endpoint))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            exporter = HttpExporter(endpoint=endpoint, headers=headers or None)
    except ImportError as exc:
        raise _missing(exc) from exc
    return BatchSpanProcessor(exporter, max_queue_size=65_536, max_export_batch_size=512, schedule_delay_millis=500)


def live_metric_reader(settings: ObservabilitySettings, endpoint: str) -> MetricReader:
    """A periodic reader exporting metrics every 5 s (and once more at shutdown)."""
    headers = settings.resolved_headers()
    try:
        if settings.resolved_protocol() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

            exporter: Any = GrpcExporter(headers=headers or None, **_grpc_args(endpoint))
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

            exporter = HttpExporter(endpoint=endpoint, headers=headers or None)
    except ImportError as exc:
        raise _missing(exc) from exc
    return PeriodicExportingMetricReader(exporter, export_interval_millis=5_000)


_SEVERITY = {"debug": 5, "info": 9, "warning": 13, "warn": 13, "error": 17, "critical": 21, "exception": 17}


class LiveLogs:
    """Bridges structlog events into OpenTelemetry log records (a structlog processor)."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider
        self._logger = provider.get_logger("reprise")

    def processor(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        from opentelemetry._logs import LogRecord, SeverityNumber

        attrs = {
            f"reprise.{k}" if k in ("run_id", "hierarchy_path") else k: (v if isinstance(v, (str, int, float, bool)) else str(v))
            for k, v in event.items()
            if k not in ("event", "trace_id", "span_id", "timestamp", "level")
        }
        trace_id = event.get("trace_id")
        span_id = event.get("span_id")
        self._logger.emit(
            LogRecord(
                timestamp=time.time_ns(),
                trace_id=int(trace_id, 16) if trace_id else None,
                span_id=int(span_id, 16) if span_id else None,
                severity_text=method.upper(),
                severity_number=SeverityNumber(_SEVERITY.get(method, 9)),
                body=str(event.get("event", "")),
                attributes=attrs,
            )
        )
        return event

    def shutdown(self) -> None:
        self._provider.shutdown()


def live_logger(settings: ObservabilitySettings, endpoint: str, resource: Resource) -> LiveLogs:
    """An OpenTelemetry logger provider exporting to ``endpoint``, wrapped for structlog."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    headers = settings.resolved_headers()
    try:
        if settings.resolved_protocol() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcExporter

            exporter: Any = GrpcExporter(headers=headers or None, **_grpc_args(endpoint))
        else:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpExporter

            exporter = HttpExporter(endpoint=endpoint, headers=headers or None)
    except ImportError as exc:
        raise _missing(exc) from exc
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return LiveLogs(provider)
