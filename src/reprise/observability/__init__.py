"""What we see: per-run OpenTelemetry providers, OTLP/JSON files in ``.trace/``, logs, live export.

See ``docs/observability.md``. Reading a run's trace back is :mod:`reprise.run`'s
(:func:`reprise.run.read_spans`, :func:`reprise.run.render_trace_tree`, ``reprise trace RUN``).
"""

from reprise.observability._settings import ElementListener, ObservabilitySettings

__all__ = ["ElementListener", "ObservabilitySettings"]
