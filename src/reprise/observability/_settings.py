"""ObservabilitySettings: what a run records and where it sends it; ElementListener: what is
told, in the run's process, when each element starts and ends."""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from reprise.errors import RunSetupError

if TYPE_CHECKING:
    from reprise.dsl._paths import HierarchyPath

__all__ = ["ElementListener", "ObservabilitySettings"]

Protocol = Literal["http/protobuf", "grpc"]
_PROTOCOLS = ("http/protobuf", "grpc")
_SIGNALS = ("traces", "metrics", "logs")


class ElementListener(typing.Protocol):
    """Told when each element of a run (the run itself, flows, loops, iterations, nodes, ...)
    starts and ends, in the run's process, with its hierarchy path and element type at hand:
    simpler to write than a span processor, and told about elements only (not user spans).

    Both methods are called where the element's span starts and ends, on the thread that starts
    or ends it (the event loop's, for the executor), so they must be quick. A reused node starts
    and ends at once, with ``reprise.reused`` true in the end attributes. ``attributes`` is a
    read-only view of the span's attributes at that moment (``reprise.hierarchy_path``,
    ``reprise.element_type``, ``reprise.node_kind``; at the end also ``reprise.status``,
    ``reprise.attempts``, ``reprise.reused``, ...): copy what you keep. The run element has
    ``element_type`` ``"run"`` and the root component's id as its path; it ends last.

    An exception from a listener is caught: the first one of each listener is logged to the
    run's ``logs.jsonl``, and the run goes on as if nothing happened.
    """

    def on_element_start(self, path: HierarchyPath, element_type: str, attributes: Mapping[str, Any]) -> None:
        """The element at ``path`` started."""

    def on_element_end(
        self, path: HierarchyPath, element_type: str, status: str, attributes: Mapping[str, Any]
    ) -> None:
        """The element at ``path`` ended with ``status`` (``completed``, ``failed``,
        ``cancelled``)."""


def _env_headers(raw: str | None) -> dict[str, str]:
    """``key1=value1,key2=value2`` with URL-encoded values, as the OTLP exporter spec says."""
    headers: dict[str, str] = {}
    for item in (raw or "").split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            headers[unquote(k.strip())] = unquote(v.strip())
    return headers


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservabilitySettings:
    """Settings for a run's traces, metrics and logs.

    Everything is written to the run's ``.trace/`` by default. Live OTLP export is off unless
    ``otlp_endpoint`` is set here or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the signal-specific
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` etc.) is set in the environment. Each setting left
    ``None`` falls back to its standard variable (signal-specific first): ``otlp_protocol`` to
    ``OTEL_EXPORTER_OTLP_[SIGNAL_]PROTOCOL`` and then ``http/protobuf``, ``otlp_headers`` to
    ``OTEL_EXPORTER_OTLP_[SIGNAL_]HEADERS``, ``service_name`` to ``OTEL_SERVICE_NAME`` and then
    ``reprise``.

    >>> ObservabilitySettings(otlp_endpoint="http://127.0.0.1:4318",
    ...                       otlp_headers={"authorization": "Bearer ..."})  # doctest: +SKIP

    Args:
        tracing: write spans to ``.trace/trace.jsonl`` (and export them live if configured).
        metrics: write ``.trace/metrics.jsonl`` at the end of the run.
        logging: write ``.trace/logs.jsonl``.
        service_name: the ``service.name`` resource attribute.
        resource_attributes: more resource attributes.
        otlp_endpoint: base URL: ``http://127.0.0.1:4318`` for HTTP (``/v1/<signal>`` is
            appended), ``http://127.0.0.1:4317`` for gRPC (``https://`` or no scheme: TLS).
        otlp_protocol: ``http/protobuf`` or ``grpc``.
        otlp_headers: headers for the exporter (e.g. an auth token). Never written to the run
            directory, and left out of ``repr()``.
        span_processors: extra SDK span processors for this run's provider (e.g. the one of
            your own tracing pipeline). They are flushed when the run ends but not shut down:
            the caller owns them and may reuse them.
        element_listeners: :class:`ElementListener` objects told when each element starts and
            ends (needs ``tracing``).
        log_level: minimum level for ``logs.jsonl`` (``debug``, ``info``, ``warning``, ``error``).
    """

    tracing: bool = True
    metrics: bool = True
    logging: bool = True
    service_name: str | None = None
    resource_attributes: Mapping[str, Any] = field(default_factory=dict)
    otlp_endpoint: str | None = None
    otlp_protocol: Protocol | None = None
    otlp_headers: Mapping[str, str] | None = field(default=None, repr=False)
    span_processors: Sequence[Any] = ()
    element_listeners: Sequence[ElementListener] = ()
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.otlp_protocol is not None and self.otlp_protocol not in _PROTOCOLS:
            raise RunSetupError(f"unsupported OTLP protocol {self.otlp_protocol!r}: use 'http/protobuf' or 'grpc'")
        if self.log_level.lower() not in ("debug", "info", "warning", "warn", "error", "critical"):
            raise RunSetupError(f"unknown log level {self.log_level!r}: use debug, info, warning or error")
        for listener in self.element_listeners:
            if not (
                callable(getattr(listener, "on_element_start", None))
                and callable(getattr(listener, "on_element_end", None))
            ):
                raise RunSetupError(f"element listener {listener!r} needs on_element_start and on_element_end methods")
        if self.element_listeners and not self.tracing:
            # Elements start and end where their spans do: without spans nothing would call them.
            raise RunSetupError("element_listeners need tracing=True")

    @classmethod
    def disabled(cls) -> ObservabilitySettings:
        """No trace, metrics or log files at all (the run directory files are still written)."""
        return cls(tracing=False, metrics=False, logging=False)

    def resolved_endpoint(self, signal: str) -> str | None:
        """The live export endpoint for ``signal`` (``traces``, ``metrics``, ``logs``), if any.

        For HTTP, a base endpoint (from settings or ``OTEL_EXPORTER_OTLP_ENDPOINT``) gets
        ``/v1/<signal>`` appended; a signal-specific variable is used as it is."""
        _check_signal(signal)
        base = self.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        specific = None if self.otlp_endpoint else os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        if specific:
            return specific
        if not base:
            return None
        if self.resolved_protocol(signal) == "grpc":
            return base
        return f"{base.rstrip('/')}/v1/{signal}"

    def resolved_protocol(self, signal: str | None = None) -> Protocol:
        """The live export protocol (for ``signal``, if given)."""
        proto = self.otlp_protocol or _env(signal, "PROTOCOL") or "http/protobuf"
        if proto not in _PROTOCOLS:
            raise RunSetupError(f"unsupported OTLP protocol {proto!r}: use 'http/protobuf' or 'grpc'")
        return proto  # type: ignore[return-value]

    def resolved_headers(self, signal: str | None = None) -> dict[str, str]:
        """Exporter headers (from settings, else ``OTEL_EXPORTER_OTLP_[SIGNAL_]HEADERS``)."""
        headers = dict(self.otlp_headers) if self.otlp_headers is not None else _env_headers(_env(signal, "HEADERS"))
        # gRPC metadata keys must be lowercase; HTTP header names are case-insensitive.
        return {k.lower(): v for k, v in headers.items()}

    def resolved_service_name(self) -> str:
        """``service_name``, else ``OTEL_SERVICE_NAME``, else ``reprise``."""
        return self.service_name or os.environ.get("OTEL_SERVICE_NAME") or "reprise"


def _check_signal(signal: str) -> None:
    if signal not in _SIGNALS:
        raise ValueError(f"unknown signal {signal!r}: use one of {', '.join(_SIGNALS)}")


def _env(signal: str | None, what: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_<SIGNAL>_<WHAT>``, else ``OTEL_EXPORTER_OTLP_<WHAT>``."""
    if signal is not None:
        _check_signal(signal)
        value = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{what}")
        if value:
            return value
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{what}")
