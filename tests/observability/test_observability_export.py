"""Observability (issue 3): live OTLP export to receivers started on loopback, and opting in to
a user's own global OpenTelemetry setup.

The receivers are real: an ``http.server`` decoding protobuf bodies at ``/v1/traces``,
``/v1/metrics`` and ``/v1/logs``, and a gRPC server implementing the collector's
TraceService, MetricsService and LogsService from ``opentelemetry-proto``.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from reprise import FlowDefinition, FlowRunner, NodeContext, ObservabilitySettings, RunContext, RunSetupError
from reprise.run._trace import read_spans

SECRET = "s3cr3t-token-do-not-store"


@dataclass
class Collected:
    """What a receiver got: decoded requests and the headers (metadata) of each."""

    traces: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = field(default_factory=list)
    logs: list[logs_service_pb2.ExportLogsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, signal: str, message: Any, headers: dict[str, str]) -> None:
        with self.lock:
            getattr(self, signal).append(message)
            self.headers.append({k.lower(): v for k, v in headers.items()})

    def spans(self) -> dict[str, Any]:
        return {
            span.span_id.hex(): span
            for request in self.traces
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        }

    def metric_names(self) -> set[str]:
        return {
            m.name for r in self.metrics for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }

    def log_records(self) -> list[Any]:
        return [lr for r in self.logs for rl in r.resource_logs for sl in rl.scope_logs for lr in sl.log_records]


@dataclass
class Receiver:
    protocol: str
    endpoint: str
    collected: Collected


_HTTP_PATHS: dict[str, tuple[str, Any, Any]] = {
    "/v1/traces": (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": ("logs", logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}


def _http_receiver() -> Iterator[Receiver]:
    collected = Collected()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path not in _HTTP_PATHS or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            signal, request_cls, response_cls = _HTTP_PATHS[self.path]
            message = request_cls()
            message.ParseFromString(body)
            collected.add(signal, message, dict(self.headers.items()))
            reply = response_cls().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver("http/protobuf", f"http://127.0.0.1:{server.server_address[1]}", collected)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _grpc_receiver() -> Iterator[Receiver]:
    collected = Collected()

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            collected.add("traces", request, dict(context.invocation_metadata()))
            return trace_service_pb2.ExportTraceServiceResponse()

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            collected.add("metrics", request, dict(context.invocation_metadata()))
            return metrics_service_pb2.ExportMetricsServiceResponse()

    class Logs(logs_service_pb2_grpc.LogsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            collected.add("logs", request, dict(context.invocation_metadata()))
            return logs_service_pb2.ExportLogsServiceResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        # http:// tells the exporter to use a plaintext channel (https or no scheme: TLS).
        yield Receiver("grpc", f"http://127.0.0.1:{port}", collected)
    finally:
        server.stop(grace=None).wait()


@pytest.fixture(params=["http/protobuf", "grpc"])
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    yield from (_http_receiver() if request.param == "http/protobuf" else _grpc_receiver())


@pytest.fixture
def http_receiver() -> Iterator[Receiver]:
    yield from _http_receiver()


def _exported_flow() -> FlowDefinition:
    async def work(ctx: NodeContext) -> int:
        ctx.logger.info("hello from the node", detail=3)
        ctx.metric("work.size", 42)
        with ctx.span("inner step"):
            pass
        return 1

    async def second() -> int:
        return 2

    return FlowDefinition().node("work", work).node("second", second)


def _run(tmp_path: Path, settings: ObservabilitySettings | None) -> tuple[RunContext, Any]:
    ctx = RunContext("live", project_root=tmp_path, observability_settings=settings)
    result = FlowRunner(_exported_flow(), ctx).run_sync()
    assert ctx.telemetry is not None and ctx.telemetry.wait_exported(timeout=60), "export did not finish"
    return ctx, result


def _no_secret_in(run_dir: Path) -> None:
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "trace.jsonl" for p in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), f"the OTLP header leaked into {path}"


@pytest.mark.parametrize("via", ["settings", "environment"])
def test_live_export_delivers_spans_metrics_and_logs(
    receiver: Receiver, via: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if via == "settings":
        settings: ObservabilitySettings | None = ObservabilitySettings(
            otlp_endpoint=receiver.endpoint,
            otlp_protocol=receiver.protocol,  # type: ignore[arg-type]
            otlp_headers={"Authorization": f"Bearer {SECRET}"},
        )
    else:
        settings = None
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", receiver.protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{SECRET}")  # URL-encoded, per spec
    _ctx, result = _run(tmp_path, settings)
    got = receiver.collected

    # Spans: exactly those in trace.jsonl, same ids.
    file_spans = {s.span_id: s for s in read_spans(result.run_dir)}
    exported = got.spans()
    assert set(exported) == set(file_spans)
    for span_id, span in exported.items():
        assert span.name == file_spans[span_id].name
        assert span.trace_id.hex() == file_spans[span_id].trace_id
    resource = {kv.key: kv.value.string_value for kv in got.traces[0].resource_spans[0].resource.attributes}
    assert resource["reprise.run_id"] == result.run_id and resource["service.name"] == "reprise"

    # Metrics: ours and the node's.
    assert {"reprise.node.duration", "reprise.node.count", "work.size"} <= got.metric_names()

    # Logs: records with the trace and span ids of the node that logged.
    records = got.log_records()
    hello = [r for r in records if r.body.string_value == "hello from the node"]
    assert len(hello) == 1
    node_span = next(s for s in file_spans.values() if s.name == "node live.work")
    assert hello[0].trace_id.hex() == node_span.trace_id and hello[0].span_id.hex() == node_span.span_id
    assert hello[0].severity_text == "INFO" and hello[0].severity_number == 9
    attrs = {kv.key: kv.value for kv in hello[0].attributes}
    assert attrs["reprise.hierarchy_path"].string_value == "live.work"
    assert attrs["reprise.run_id"].string_value == result.run_id and attrs["detail"].int_value == 3
    assert {"run started", "run finished"} <= {r.body.string_value for r in records}

    # The auth header reached the collector on every request, and no file of the run.
    assert got.headers and all(h.get("authorization") == f"Bearer {SECRET}" for h in got.headers)
    _no_secret_in(result.run_dir)
    assert SECRET not in repr(settings)


def test_a_signal_specific_variable_exports_that_signal_only(
    http_receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{http_receiver.endpoint}/v1/traces")
    _ctx, result = _run(tmp_path, None)
    got = http_receiver.collected
    assert {s.span_id.hex() for s in got.spans().values()} == {s.span_id for s in read_spans(result.run_dir)}
    assert not got.metrics and not got.logs


def test_settings_resolve_endpoints_protocols_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENDPOINT", "PROTOCOL", "HEADERS", "TRACES_ENDPOINT", "LOGS_PROTOCOL", "METRICS_HEADERS"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{name}", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    plain = ObservabilitySettings()
    assert plain.resolved_endpoint("traces") is None and plain.resolved_protocol() == "http/protobuf"
    assert plain.resolved_service_name() == "reprise"

    http = ObservabilitySettings(otlp_endpoint="http://collector:4318/")
    assert http.resolved_endpoint("metrics") == "http://collector:4318/v1/metrics"
    grpc_settings = ObservabilitySettings(otlp_endpoint="http://collector:4317", otlp_protocol="grpc")
    assert grpc_settings.resolved_endpoint("logs") == "http://collector:4317"

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%2Cb,X-Team=core")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "api-key=metrics-only")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-agent")
    env = ObservabilitySettings()
    assert env.resolved_endpoint("traces") == "http://traces:9999/custom"  # used as it is
    assert env.resolved_endpoint("metrics") == "http://base:4318/v1/metrics"
    assert env.resolved_protocol("logs") == "grpc" and env.resolved_endpoint("logs") == "http://base:4318"
    assert env.resolved_headers("traces") == {"api-key": "a,b", "x-team": "core"}
    assert env.resolved_headers("metrics") == {"api-key": "metrics-only"}
    assert env.resolved_service_name() == "my-agent"
    # Settings win over the environment.
    explicit = ObservabilitySettings(otlp_endpoint="http://mine:4318", otlp_headers={"K": "v"}, service_name="svc")
    assert explicit.resolved_endpoint("traces") == "http://mine:4318/v1/traces"
    assert explicit.resolved_headers("traces") == {"k": "v"} and explicit.resolved_service_name() == "svc"

    with pytest.raises(RunSetupError, match="unsupported OTLP protocol"):
        ObservabilitySettings(otlp_protocol="http/json")  # type: ignore[arg-type]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with pytest.raises(RunSetupError, match="carrier-pigeon"):
        ObservabilitySettings().resolved_protocol("traces")


FORWARD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from reprise import FlowDefinition, FlowRunner, ObservabilitySettings, RunContext

    # The application's own OpenTelemetry setup.
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)

    async def work(ctx) -> int:
        with ctx.span("mine"):
            # A library instrumented with the global tracer, called inside the node.
            with trace.get_tracer("library").start_as_current_span("library call"):
                pass
        with trace.get_tracer("library").start_as_current_span("library call outside"):
            pass
        return 1

    flow = FlowDefinition().node("work", work)
    root = sys.argv[1]
    settings = ObservabilitySettings(span_processors=[processor])
    opted_in = FlowRunner(flow, RunContext("fwd", project_root=root, observability_settings=settings)).run_sync()
    not_opted = FlowRunner(flow, RunContext("plain", project_root=root)).run_sync()
    with trace.get_tracer("app").start_as_current_span("after the runs"):
        pass
    print(json.dumps({
        "spans": [
            {"name": s.name, "span_id": f"{s.context.span_id:016x}",
             "parent": f"{s.parent.span_id:016x}" if s.parent else None,
             "run_id": s.resource.attributes.get("reprise.run_id")}
            for s in exporter.get_finished_spans()
        ],
        "same_provider": trace.get_tracer_provider() is provider,
        "opted_in": opted_in.run_id,
        "opted_in_dir": str(opted_in.run_dir),
        "not_opted": not_opted.run_id,
    }))
    """
)


def test_span_processors_deliver_a_runs_spans_to_the_users_pipeline(tmp_path: Path) -> None:
    # The global provider can be set once per process: the application runs in its own.
    script = tmp_path / "app.py"
    script.write_text(FORWARD_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["same_provider"] is True
    spans = out["spans"]
    ours = {s["name"]: s for s in spans if s["run_id"] == out["opted_in"]}
    assert set(ours) == {f"run {out['opted_in']}", "flow fwd", "node fwd.work", "mine"}
    # The opted-in run's spans are the very spans of its trace.jsonl.
    assert {s["span_id"] for s in ours.values()} == {s.span_id for s in read_spans(out["opted_in_dir"])}
    assert not [s for s in spans if s["run_id"] == out["not_opted"]], "a run that did not opt in leaked spans"
    # Library spans made with the global tracer nest under the node's user span; the user's
    # pipeline still works after our runs ended (we never shut it down).
    library = [s for s in spans if s["name"] == "library call"]
    assert ours["mine"]["span_id"] in {s["parent"] for s in library}
    # Outside a user span, they nest under the node's span: the node runs inside it.
    outside = [s for s in spans if s["name"] == "library call outside"]
    assert ours["node fwd.work"]["span_id"] in {s["parent"] for s in outside}
    assert "after the runs" in {s["name"] for s in spans}


def test_a_bad_export_configuration_fails_the_run_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    ctx = RunContext("live", project_root=tmp_path)
    with pytest.raises(RunSetupError, match="unsupported OTLP protocol 'http/json'"):
        FlowRunner(_exported_flow(), ctx).run_sync()
    # Checked before anything was opened or started.
    assert not list(tmp_path.rglob("trace.jsonl")) and ctx.telemetry is None
