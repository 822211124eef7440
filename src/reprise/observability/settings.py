"""ObservabilitySettings: what a run records and where it sends it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ObservabilitySettings"]

Protocol = Literal["http/protobuf", "grpc"]


def _env_headers(raw: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in (raw or "").split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            headers[k.strip()] = v.strip()
    return headers


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservabilitySettings:
    """Settings for a run's traces, metrics and logs.

    Everything is written to the run's ``.trace/`` by default. Live OTLP export is off unless
    ``otlp_endpoint`` is set here or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the signal-specific
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` etc.) is set in the environment; ``otlp_protocol``
    falls back to ``OTEL_EXPORTER_OTLP_PROTOCOL`` and then ``http/protobuf``.

    Args:
        tracing: write spans to ``.trace/trace.jsonl`` (and export them live if configured).
        metrics: write ``.trace/metrics.jsonl`` at the end of the run.
        logging: write ``.trace/logs.jsonl``.
        service_name: the ``service.name`` resource attribute.
        resource_attributes: more resource attributes.
        otlp_endpoint: base URL (HTTP, e.g. ``http://127.0.0.1:4318``) or ``host:port`` (gRPC).
        otlp_protocol: ``http/protobuf`` or ``grpc``.
        otlp_headers: headers for the exporter (e.g. an auth token; never written to the run).
        forward_to_global: also hand our spans to the span processors of the global
            ``TracerProvider`` if the application installed an SDK one (opt-in; the global
            provider itself is never replaced).
        span_processors: extra SDK span processors for this run's provider.
        log_level: minimum level for ``logs.jsonl`` (``debug``, ``info``, ``warning``, ``error``).
    """

    tracing: bool = True
    metrics: bool = True
    logging: bool = True
    service_name: str = "reprise"
    resource_attributes: Mapping[str, Any] = field(default_factory=dict)
    otlp_endpoint: str | None = None
    otlp_protocol: Protocol | None = None
    otlp_headers: Mapping[str, str] | None = None
    forward_to_global: bool = False
    span_processors: Sequence[Any] = ()
    log_level: str = "info"

    @classmethod
    def disabled(cls) -> ObservabilitySettings:
        """No trace, metrics or log files at all (the run directory files are still written)."""
        return cls(tracing=False, metrics=False, logging=False)

    def resolved_endpoint(self, signal: str) -> str | None:
        """The live export endpoint for ``signal`` (``traces``, ``metrics``, ``logs``), if any.

        For HTTP, a base endpoint (from settings or ``OTEL_EXPORTER_OTLP_ENDPOINT``) gets
        ``/v1/<signal>`` appended; a signal-specific variable is used as it is."""
        base = self.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        specific = None if self.otlp_endpoint else os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        if specific:
            return specific
        if not base:
            return None
        if self.resolved_protocol() == "grpc":
            return base
        return f"{base.rstrip('/')}/v1/{signal}"

    def resolved_protocol(self) -> Protocol:
        """The live export protocol."""
        proto = self.otlp_protocol or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        if proto not in ("http/protobuf", "grpc"):
            raise ValueError(f"unsupported OTLP protocol {proto!r}: use 'http/protobuf' or 'grpc'")
        return proto  # type: ignore[return-value]

    def resolved_headers(self) -> dict[str, str]:
        """Exporter headers (from settings, else ``OTEL_EXPORTER_OTLP_HEADERS``)."""
        if self.otlp_headers is not None:
            return dict(self.otlp_headers)
        return _env_headers(os.environ.get("OTEL_EXPORTER_OTLP_HEADERS"))
