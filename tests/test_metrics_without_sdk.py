"""Node counts and durations are written without the SDK's meter provider, as the SDK would
write them; the provider is made only when a retry or a user metric needs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from reprise import FlowDefinition, FlowRunner, Initial, NodeContext, Ref, RunContext
from reprise.observability.lean import node_counts_metric
from reprise.observability.otlp_json import metrics_request_line


def _metrics(run_dir: Path) -> dict[str, dict[str, Any]]:
    (line,) = (run_dir / ".trace" / "metrics.jsonl").read_text().splitlines()
    (rm,) = json.loads(line)["resourceMetrics"]
    (sm,) = rm["scopeMetrics"]
    return {m["name"]: m for m in sm["metrics"]}


def _without_times(metric: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(metric))
    for point in out["sum"]["dataPoints"]:
        point.pop("startTimeUnixNano")
        point.pop("timeUnixNano")
    return out


def test_node_counts_are_encoded_as_the_sdks_observable_counter_would_be() -> None:
    counts = [
        ({"reprise.status": "completed", "reprise.node_kind": "python"}, 3),
        ({"reprise.status": "reused", "reprise.node_kind": "python"}, 2),
    ]
    resource = Resource({"service.name": "t"})
    scope = InstrumentationScope("reprise", "1")
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    provider.get_meter(scope.name, scope.version).create_observable_counter(
        "reprise.node.count",
        callbacks=[lambda options: [Observation(n, attrs) for attrs, n in counts]],
        description="Nodes finished, by status",
    )
    by_sdk = json.loads(metrics_request_line(reader.get_metrics_data()) or b"")
    ours = node_counts_metric("reprise.node.count", "Nodes finished, by status", counts, 123)
    assert ours is not None
    mine = json.loads(metrics_request_line(None, first=[ours], resource=resource, scope=scope) or b"")
    sdk_metric = by_sdk["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    my_metric = mine["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]
    assert _without_times(my_metric) == _without_times(sdk_metric)
    assert my_metric["sum"]["dataPoints"][0]["timeUnixNano"] == "123"
    assert (
        by_sdk["resourceMetrics"][0]["scopeMetrics"][0]["scope"]
        == mine["resourceMetrics"][0]["scopeMetrics"][0]["scope"]
    )
    provider.shutdown()


def _flow() -> FlowDefinition:
    flow = FlowDefinition().node("a", lambda x: x + 1, inputs={"x": Initial("x")})
    return flow.node("b", lambda v: v * 2, inputs={"v": Ref("a")})


def test_a_run_without_retries_or_user_metrics_makes_no_meter_provider(tmp_path: Path) -> None:
    ctx = RunContext("root", tmp_path, initial_inputs={"x": 1})
    result = FlowRunner(_flow(), ctx).run_sync()
    assert ctx.telemetry is not None and ctx.telemetry.meter_provider is None
    metrics = _metrics(result.run_dir)
    assert list(metrics) == ["reprise.node.duration", "reprise.node.count"]
    (point,) = metrics["reprise.node.count"]["sum"]["dataPoints"]
    assert point["asInt"] == "2"
    (duration,) = metrics["reprise.node.duration"]["histogram"]["dataPoints"]
    assert duration["timeUnixNano"] == point["timeUnixNano"]  # one collection time


def test_a_user_metric_brings_the_sdk_in_and_follows_reprises_metrics(tmp_path: Path) -> None:
    def measured(x: int, ctx: NodeContext) -> int:
        ctx.metric("work.size", 5)
        ctx.metric("work.size", 7)
        return x

    flow = FlowDefinition().node("a", measured, inputs={"x": Initial("x")})
    ctx = RunContext("root", tmp_path, initial_inputs={"x": 1})
    result = FlowRunner(flow, ctx).run_sync()
    assert ctx.telemetry is not None and ctx.telemetry.meter_provider is not None
    metrics = _metrics(result.run_dir)
    assert list(metrics) == ["reprise.node.duration", "reprise.node.count", "work.size"]
    (point,) = metrics["work.size"]["histogram"]["dataPoints"]
    assert point["count"] == "2" and point["sum"] == 12
    # reprise's own carry the SDK's collection time.
    assert metrics["reprise.node.count"]["sum"]["dataPoints"][0]["timeUnixNano"] == point["timeUnixNano"]
