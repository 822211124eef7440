"""``reprise export``: replay a finished run's trace, metrics and logs into an OTLP backend."""

from __future__ import annotations

import argparse
from typing import Any

from reprise.cli._common import EXIT_OK, Output, UsageError, add_common, run_root_of

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``export``."""
    p = subparsers.add_parser(
        "export",
        help="send a finished run's trace, metrics and logs to an OpenTelemetry backend (OTLP)",
        description="Replay the telemetry a run wrote to its .trace/ files (spans, metrics, log lines) "
        "into any OTLP backend (an OpenTelemetry Collector, Jaeger, Tempo, Honeycomb...), with the "
        "exporters live export uses. Headers (an API key) come from OTEL_EXPORTER_OTLP_HEADERS.",
    )
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="the backend: http://host:4318 for HTTP (/v1/<signal> is added), host:4317 for gRPC "
        "(default: $OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    p.add_argument(
        "--otlp-protocol",
        choices=("http/protobuf", "grpc"),
        help="default: $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf",
    )
    add_common(p)
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace, out: Output) -> int:
    from reprise._api import Api
    from reprise.observability import ObservabilitySettings
    from reprise.run._replay import replay_run

    api = Api(run_root_of(args))
    run = api.run_dir(args.run_id)
    status = run.status().value
    if status == "running":
        raise UsageError(f"run {run.run_id} is still running: export it once it has finished")
    settings = ObservabilitySettings(otlp_endpoint=args.otlp_endpoint, otlp_protocol=args.otlp_protocol)
    if not settings.resolved_endpoint("traces"):
        raise UsageError("no OTLP endpoint: pass --otlp-endpoint URL or set OTEL_EXPORTER_OTLP_ENDPOINT")
    report = replay_run(run.path, settings)
    data = {
        "run_id": run.run_id,
        "endpoint": settings.otlp_endpoint or settings.resolved_endpoint("traces"),
        "spans": report.spans,
        "metric_points": report.metric_points,
        "log_records": report.log_records,
    }
    out.emit(
        data,
        f"{run.run_id}: sent {report.spans} spans, {report.metric_points} metric points and "
        f"{report.log_records} log records to {data['endpoint']}",
    )
    return EXIT_OK
