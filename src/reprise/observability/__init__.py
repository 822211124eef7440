"""What we see: per-run OpenTelemetry providers, OTLP/JSON files in ``.trace/``, logs, the viewer.

See ``docs/observability.md``. The trace viewer is :func:`render_trace_tree` (and
``reprise trace RUN_ID``); :func:`read_spans` reads a run's spans back.
"""

from reprise.observability.settings import ElementListener, ObservabilitySettings
from reprise.observability.view import SpanRecord, read_spans, render_trace_tree

__all__ = ["ElementListener", "ObservabilitySettings", "SpanRecord", "read_spans", "render_trace_tree"]
