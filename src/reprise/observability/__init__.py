"""What we see: per-run OpenTelemetry providers, OTLP/JSON files in ``.trace/``, logs, the viewer."""

from reprise.observability.settings import ObservabilitySettings

__all__ = ["ObservabilitySettings"]
