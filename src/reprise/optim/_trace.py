"""Spans of the backward pass and the optimiser step, in the trace of the forward run.

A forward pass is a reprise run; its trace (``.trace/trace.jsonl``) is complete when the run
ends, before any feedback exists. The backward pass and the step come later, so their spans are
appended to that file afterwards: same trace id, each under the span of the node it is about
(a step under the run's span), written by a ``TracerProvider`` of their own through the same
file exporter the run used. Readers of the trace, ``reprise view`` and ``reprise trace``, then
show the model calls of the forward pass, of backward and of the step in one tree.

A run recorded with tracing off has no trace: nothing is appended then.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from reprise._version import __version__
from reprise.errors import RepriseError
from reprise.observability import ObservabilitySettings
from reprise.observability._otlp_json import SpanLineEncoder
from reprise.observability._telemetry import TRACE_FILE, JsonlSink, TraceFileExporter
from reprise.run import read_spans

__all__ = ["ForwardTrace", "origin_of", "set_origin"]

#: The forward run each feedback Variable came from (set by backward, read by the step).
_ORIGINS: weakref.WeakKeyDictionary[Any, ForwardTrace] = weakref.WeakKeyDictionary()


class ForwardTrace:
    """The trace of one finished forward run: its trace id and the span ids of its run and
    nodes, read back from ``trace.jsonl``. :meth:`under` opens a span in it."""

    def __init__(self, run_dir: Path, run_id: str, *, trace_id: int, run_span: int, nodes: Mapping[str, int]) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self.trace_id = trace_id
        self.run_span = run_span
        self.nodes = dict(nodes)

    @classmethod
    def read(cls, run_dir: Path, run_id: str) -> ForwardTrace | None:
        """The trace of the run in ``run_dir``; ``None`` when it has none (tracing off) or it
        cannot be read (backward must not fail over its record)."""
        if not (run_dir / ".trace" / TRACE_FILE).is_file():
            return None
        try:
            spans = read_spans(run_dir, [])
        except (RepriseError, OSError):
            return None
        run_span = next((s for s in spans if s.attributes.get("reprise.element_type") == "run"), None)
        if run_span is None:
            return None
        nodes = {
            str(s.attributes.get("reprise.hierarchy_path")): int(s.span_id, 16)
            for s in spans
            if s.attributes.get("reprise.element_type") == "node" and s.trace_id == run_span.trace_id
        }
        return cls(
            run_dir, run_id, trace_id=int(run_span.trace_id, 16), run_span=int(run_span.span_id, 16), nodes=nodes
        )

    @contextlib.contextmanager
    def under(
        self, name: str, *, path: str | None, element_type: str, attributes: Mapping[str, Any]
    ) -> Iterator[trace_api.Tracer]:
        """A span ``name`` under the node ``path`` (``None``: under the run's span), appended to
        the run's ``trace.jsonl`` when it ends. It is the current span inside the block, and the
        tracer yielded writes to the same file: spans it starts there (the model calls, through
        :class:`~reprise.optim.CallRecord`) nest under it. An exception marks it as an error and
        propagates."""
        parent_id = self.nodes.get(path, self.run_span) if path is not None else self.run_span
        parent = NonRecordingSpan(
            SpanContext(self.trace_id, parent_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        )
        resource = Resource(
            {
                "service.name": ObservabilitySettings().resolved_service_name(),
                "service.version": __version__,
                "reprise.run_id": self.run_id,
            }
        )
        scope = InstrumentationScope("reprise.optim", __version__)
        sink = JsonlSink(self.run_dir / ".trace" / TRACE_FILE)
        provider = TracerProvider(sampler=ALWAYS_ON, resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(TraceFileExporter(sink, SpanLineEncoder(resource, scope))))
        tracer = provider.get_tracer(scope.name, scope.version)
        attrs: dict[str, Any] = {
            "reprise.run_id": self.run_id,
            "reprise.hierarchy_path": path or "",
            "reprise.element_type": element_type,
            **attributes,
        }
        try:
            with tracer.start_as_current_span(name, context=trace_api.set_span_in_context(parent), attributes=attrs):
                yield tracer
        finally:
            provider.shutdown()


def set_origin(feedback: Any, trace: ForwardTrace | None) -> None:
    """Remember that ``feedback`` (a Variable) was written in backward through ``trace``'s run."""
    if trace is not None:
        _ORIGINS[feedback] = trace


def origin_of(feedback: Any) -> ForwardTrace | None:
    """The forward run ``feedback`` was written for, if known."""
    return _ORIGINS.get(feedback)
