"""Observability (issue 3): what a run writes to ``.trace/``, parsed back and checked.

The span tree, its attributes, failures, cancellations, logs correlated to spans, user spans
and metrics, the OTLP/JSON format against the protobuf definitions, isolation of runs in one
process, bursts, crashes and the terminal viewer. Live export is in test_observability_export.py.

Every element span is an OpenTelemetry SDK span of the run's own provider, written to
``trace.jsonl`` by reprise's exporter; the last section checks what user code does to a node's
span, and that a node runs inside it.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from google.protobuf import json_format
from opentelemetry import trace as trace_api
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from reprise import (
    AgentDefinition,
    AgentRunner,
    FlowDefinition,
    FlowRunner,
    Initial,
    NodeContext,
    ObservabilitySettings,
    Ref,
    RepriseError,
    RunContext,
    RunFailedError,
    RunStatus,
    Var,
    node,
)
from reprise.dsl._paths import HierarchyPath
from reprise.errors import RunSetupError
from reprise.observability._otlp_json import SpanLineEncoder, encode_span
from reprise.observability._telemetry import DURATION_BUCKETS
from reprise.run._trace import SpanRecord, read_spans, render_trace_tree

HEX32 = re.compile(r"[0-9a-f]{32}\Z")
HEX16 = re.compile(r"[0-9a-f]{16}\Z")
ID_FIELDS = {"traceId": HEX32, "spanId": HEX16, "parentSpanId": HEX16}


@pytest.fixture
def make_context(tmp_path: Path) -> Callable[..., RunContext]:
    """As conftest's: a RunContext under ``tmp_path``."""

    def make(root_component_id: str = "root", **kwargs: Any) -> RunContext:
        kwargs.setdefault("project_root", tmp_path)
        return RunContext(root_component_id=root_component_id, **kwargs)

    return make


# -- helpers ---------------------------------------------------------------------------------


def trace_dir(run_dir: Path) -> Path:
    return run_dir / ".trace"


def _no_nan_literals(token: str) -> Any:
    raise AssertionError(f"{token} is not JSON: non-finite doubles must be strings")


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, parsed strictly (no NaN/Infinity literals)."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path.name} does not end with a newline"
    return [json.loads(line, parse_constant=_no_nan_literals) for line in text.splitlines()]


def by_name(spans: list[SpanRecord]) -> dict[str, SpanRecord]:
    names = Counter(s.name for s in spans)
    assert all(n == 1 for n in names.values()), f"duplicate span names: {names}"
    return {s.name: s for s in spans}


def metrics_of(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The metrics in ``metrics.jsonl`` by name (the file holds one request line)."""
    lines = json_lines(trace_dir(run_dir) / "metrics.jsonl")
    assert len(lines) == 1
    out: dict[str, dict[str, Any]] = {}
    for rm in lines[0]["resourceMetrics"]:
        for sm in rm["scopeMetrics"]:
            for m in sm["metrics"]:
                out[m["name"]] = m
    return out


def point_attrs(point: dict[str, Any]) -> dict[str, Any]:
    return {kv["key"]: next(iter(kv["value"].values())) for kv in point.get("attributes", [])}


def counts_by_status(metrics: dict[str, dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in metrics["reprise.node.count"]["sum"]["dataPoints"]:
        status = point_attrs(p)["reprise.status"]
        counts[status] = counts.get(status, 0) + int(p["asInt"])
    return counts


def hex_ids_to_base64(value: Any) -> Any:
    """OTLP/JSON's one deviation from the protobuf JSON mapping undone: hex ids to base64."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ID_FIELDS and isinstance(v, str):
                assert ID_FIELDS[k].match(v), f"{k}={v!r} is not lowercase hex of the right length"
                out[k] = base64.b64encode(bytes.fromhex(v)).decode()
            else:
                out[k] = hex_ids_to_base64(v)
        return out
    if isinstance(value, list):
        return [hex_ids_to_base64(v) for v in value]
    return value


def check_otlp_json_shapes(value: Any, key: str = "") -> None:
    """Times are decimal strings; enums are integers; 64-bit counts are strings."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_otlp_json_shapes(v, k)
        return
    if isinstance(value, list):
        for v in value:
            check_otlp_json_shapes(v, key)
        return
    if key.endswith("UnixNano") or key in ("intValue", "asInt", "count", "bucketCounts", "zeroCount"):
        assert isinstance(value, str) and re.fullmatch(r"-?\d+", value), f"{key}={value!r} is not a decimal string"
    if key in ("kind", "code", "aggregationTemporality", "flags"):
        assert type(value) is int, f"{key}={value!r} is not an integer enum"


def parse_trace_line(line: dict[str, Any]) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    json_format.Parse(json.dumps(hex_ids_to_base64(line)), message, ignore_unknown_fields=False)
    return message


def parse_metrics_line(line: dict[str, Any]) -> ExportMetricsServiceRequest:
    message = ExportMetricsServiceRequest()
    json_format.Parse(json.dumps(hex_ids_to_base64(line)), message, ignore_unknown_fields=False)
    return message


def span_ids(spans: list[SpanRecord]) -> set[tuple[str, str]]:
    return {(s.trace_id, s.span_id) for s in spans}


# -- the tree and its attributes -------------------------------------------------------------


def _hierarchy_agent() -> AgentDefinition:
    async def double(item: int) -> int:
        return item * 2

    async def const() -> int:
        return 1

    loop_body = FlowDefinition().node("double", double, inputs={"item": Var("item")})
    sub = FlowDefinition().node("inner", const)
    flow = (
        FlowDefinition()
        .node("start", const)
        .subflow("sub", FlowDefinition().node("s1", const).subflow("deeper", sub))
        .for_each("loop", [1, 2], loop_body)
        .parallel(
            "par",
            {"left": FlowDefinition().node("l", const), "right": FlowDefinition().node("r", const)},
        )
        .conditional("check", Ref("start"), FlowDefinition().node("yes", const))
    )
    return AgentDefinition().flow("main", flow)


@pytest.mark.anyio
async def test_span_tree_nests_exactly_as_the_hierarchy(make_context: Any) -> None:
    ctx = make_context("agent")
    result = await AgentRunner(_hierarchy_agent(), ctx).run()
    spans = read_spans(result.run_dir)
    named = by_name(spans)
    by_id = {s.span_id: s for s in spans}
    parent_of = {s.name: by_id[s.parent_span_id].name if s.parent_span_id else None for s in spans}
    run = f"run {result.run_id}"
    assert parent_of == {
        run: None,
        "agent agent": run,
        "flow agent.main": "agent agent",
        "node agent.main.start": "flow agent.main",
        "subflow agent.main.sub": "flow agent.main",
        "node agent.main.sub.s1": "subflow agent.main.sub",
        "subflow agent.main.sub.deeper": "subflow agent.main.sub",
        "node agent.main.sub.deeper.inner": "subflow agent.main.sub.deeper",
        "loop agent.main.loop": "flow agent.main",
        "iteration agent.main.loop.0": "loop agent.main.loop",
        "iteration agent.main.loop.1": "loop agent.main.loop",
        "node agent.main.loop.0.double": "iteration agent.main.loop.0",
        "node agent.main.loop.1.double": "iteration agent.main.loop.1",
        "parallel agent.main.par": "flow agent.main",
        "branch agent.main.par.left": "parallel agent.main.par",
        "branch agent.main.par.right": "parallel agent.main.par",
        "node agent.main.par.left.l": "branch agent.main.par.left",
        "node agent.main.par.right.r": "branch agent.main.par.right",
        "conditional agent.main.check": "flow agent.main",
        "node agent.main.check.then.yes": "conditional agent.main.check",
    }
    assert len({s.trace_id for s in spans}) == 1, "one trace per run"
    # A child lies within its parent in time.
    for s in spans:
        if s.parent_span_id:
            parent = next(p for p in spans if p.span_id == s.parent_span_id)
            assert parent.start_ns <= s.start_ns <= s.end_ns <= parent.end_ns, s.name
    assert named[run].attributes["reprise.element_type"] == "run"


@pytest.mark.anyio
async def test_every_span_carries_run_path_type_kind_status_and_attempts(make_context: Any) -> None:
    ctx = make_context("agent")
    result = await AgentRunner(_hierarchy_agent(), ctx).run()
    spans = read_spans(result.run_dir)
    assert len(spans) == 20
    for s in spans:
        attrs = s.attributes
        assert attrs["reprise.run_id"] == result.run_id
        assert attrs["reprise.status"] == "completed"
        assert s.status_code == 0  # UNSET: nothing failed
        element_type, _, path = s.name.partition(" ")
        assert attrs["reprise.element_type"] == element_type
        if element_type == "run":
            assert path == result.run_id and attrs["reprise.hierarchy_path"] == "agent"
            continue
        assert attrs["reprise.hierarchy_path"] == path
        if element_type == "node":
            assert attrs["reprise.node_kind"] == "python"
            assert attrs["reprise.attempts"] == 1
            assert "reprise.reused" not in attrs
        else:
            assert "reprise.node_kind" not in attrs


@pytest.mark.anyio
async def test_failure_sets_error_status_and_records_the_exception(make_context: Any) -> None:
    calls: list[int] = []

    @node(retries=1, backoff=0.001)
    async def explode(ctx: NodeContext) -> int:
        calls.append(ctx.attempt)
        raise ValueError(f"boom {ctx.attempt}")

    async def const() -> int:
        return 1

    flow = FlowDefinition().node("ok", const).node("bad", explode).node("never", const)
    ctx = make_context("flow")
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, ctx).run()
    assert info.value.path == "flow.bad"
    run_dir = ctx.require_run_dir().path
    named = by_name(read_spans(run_dir))
    assert "node flow.never" not in named
    bad = named["node flow.bad"]
    assert bad.status_code == 2 and bad.status == "failed"
    assert bad.status_message == "ValueError: boom 2"
    assert bad.attributes["reprise.attempts"] == 2
    events = {
        e["name"]: {kv["key"]: next(iter(kv["value"].values())) for kv in e.get("attributes", [])} for e in bad.events
    }
    assert events["exception"]["exception.type"] == "ValueError"
    assert events["exception"]["exception.message"] == "boom 2"
    assert "raise ValueError" in events["exception"]["exception.stacktrace"]
    assert events["retry"]["reprise.attempt"] == "1"  # intValue: a decimal string
    assert events["retry"]["exception.message"] == "ValueError: boom 1"
    # The failure shows up the whole way up; the sibling that ran is untouched.
    for name in ("flow flow", f"run {ctx.run_id}"):
        assert named[name].status_code == 2 and named[name].status == "failed", name
    assert named["node flow.ok"].status_code == 0
    # Logs: the retry and the failure carry the node's own span id.
    logs = json_lines(trace_dir(run_dir) / "logs.jsonl")
    bad_span = (bad.trace_id, bad.span_id)
    failed = [line for line in logs if line["event"] == "node failed"]
    retrying = [line for line in logs if line["event"] == "node attempt failed; retrying"]
    assert len(failed) == 1 and len(retrying) == 1
    for line in failed + retrying:
        assert (line["trace_id"], line["span_id"]) == bad_span and line["hierarchy_path"] == "flow.bad"
        assert line["level"] in ("error", "warning")
    assert failed[0]["error"] == "ValueError: boom 2"
    metrics = metrics_of(run_dir)
    assert counts_by_status(metrics) == {"completed": 1, "failed": 1}
    (retry_point,) = metrics["reprise.node.retries"]["sum"]["dataPoints"]
    assert retry_point["asInt"] == "1" and point_attrs(retry_point)["reprise.definition_path"] == "flow.bad"


@pytest.mark.anyio
async def test_a_timeout_is_an_error_with_a_readable_message(make_context: Any) -> None:
    async def hang() -> None:
        await anyio.sleep_forever()

    ctx = make_context("flow")
    with pytest.raises(RunFailedError):
        await FlowRunner(FlowDefinition().node("hang", hang, timeout=0.01), ctx).run()
    span = by_name(read_spans(ctx.require_run_dir().path))["node flow.hang"]
    assert span.status_code == 2
    assert span.status_message is not None and "timed out after 0.01s" in span.status_message


@pytest.mark.anyio
async def test_cancellation_ends_every_span_and_closes_the_files(make_context: Any) -> None:
    started: list[str] = []
    both_started = anyio.Event()

    async def hang(ctx: NodeContext) -> None:
        started.append(str(ctx.path))
        if len(started) == 2:
            both_started.set()
        await anyio.sleep_forever()

    async def const() -> int:
        return 1

    flow = (
        FlowDefinition()
        .node("first", const)
        .parallel("par", {"a": FlowDefinition().node("h", hang), "b": FlowDefinition().node("h", hang)})
    )
    ctx = make_context("flow")
    async with anyio.create_task_group() as tg:
        tg.start_soon(FlowRunner(flow, ctx).run)
        await both_started.wait()
        tg.cancel_scope.cancel()
    assert ctx.status is RunStatus.CANCELLED
    run_dir = ctx.require_run_dir().path
    named = by_name(read_spans(run_dir))
    assert set(named) == {
        f"run {ctx.run_id}",
        "flow flow",
        "node flow.first",
        "parallel flow.par",
        "branch flow.par.a",
        "branch flow.par.b",
        "node flow.par.a.h",
        "node flow.par.b.h",
    }
    for name in ("node flow.par.a.h", "node flow.par.b.h", "parallel flow.par", f"run {ctx.run_id}"):
        assert named[name].status == "cancelled", name
        assert named[name].status_code != 2, "a cancellation is not an error"
    assert named["node flow.first"].status == "completed"
    logs = json_lines(trace_dir(run_dir) / "logs.jsonl")
    assert logs[-1]["event"] == "run finished" and logs[-1]["status"] == "cancelled"
    assert counts_by_status(metrics_of(run_dir)) == {"completed": 1, "cancelled": 2}


# -- element listeners -----------------------------------------------------------------------


class Recorder:
    """An element listener that writes down what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str | None, dict[str, Any]]] = []

    def on_element_start(self, path: HierarchyPath, element_type: str, attributes: Mapping[str, Any]) -> None:
        assert isinstance(path, HierarchyPath)
        self.calls.append(("start", str(path), element_type, None, dict(attributes)))

    def on_element_end(
        self, path: HierarchyPath, element_type: str, status: str, attributes: Mapping[str, Any]
    ) -> None:
        assert isinstance(path, HierarchyPath)
        self.calls.append(("end", str(path), element_type, status, dict(attributes)))

    def elements(self, event: str) -> list[tuple[str, str]]:
        return [(kind, path) for e, path, kind, _, _ in self.calls if e == event]


def _listener_flow(fail: dict[str, bool]) -> FlowDefinition:
    async def const() -> int:
        return 1

    async def double(item: int) -> int:
        return item * 2

    async def user_span(ctx: NodeContext) -> int:
        with ctx.span("inside"):  # a user span: not an element, listeners do not hear of it
            pass
        return 2

    @node(retries=1, backoff=0.001)
    async def bad(x: int) -> int:
        if fail["bad"]:
            raise ValueError("bad refused")
        return x

    return (
        FlowDefinition()
        .node("a", const)
        .node("u", user_span)
        .for_each("loop", [1, 2], FlowDefinition().node("double", double, inputs={"item": Var("item")}))
        .node("bad", bad, inputs={"x": Ref("a")})
    )


@pytest.mark.anyio
async def test_element_listeners_hear_every_element_start_and_end(make_context: Any) -> None:
    """On both span paths: one start and one end per element span, in order, with the span's
    attributes and status; reused nodes too. A listener does not make element spans SDK spans
    (``make_context`` checks the path each run took)."""
    fail = {"bad": True}
    flow = _listener_flow(fail)
    heard = Recorder()
    first = make_context("flow", observability_settings=ObservabilitySettings(element_listeners=[heard]))
    with pytest.raises(RunFailedError):
        await FlowRunner(flow, first).run()

    spans = [s for s in read_spans(first.require_run_dir().path) if s.attributes["reprise.element_type"] != "user_span"]
    in_trace = sorted(
        (str(s.attributes["reprise.element_type"]), str(s.attributes["reprise.hierarchy_path"])) for s in spans
    )
    assert sorted(heard.elements("start")) == in_trace
    assert sorted(heard.elements("end")) == in_trace
    assert ("node", "flow.loop.1.double") in in_trace and ("run", "flow") in in_trace
    # The run starts first and ends last; every element starts before its children and ends after them.
    assert heard.calls[0][:3] == ("start", "flow", "run") and heard.calls[-1][:4] == ("end", "flow", "run", "failed")
    order = {(e, kind, path): i for i, (e, path, kind, _, _) in enumerate(heard.calls)}
    for kind, path in in_trace:
        assert order[("start", kind, path)] < order[("end", kind, path)]
    assert order[("start", "loop", "flow.loop")] < order[("start", "iteration", "flow.loop.0")]
    assert order[("end", "iteration", "flow.loop.1")] < order[("end", "loop", "flow.loop")]
    # Statuses and attributes are the span's own.
    status_of = {
        (s.attributes["reprise.element_type"], s.attributes["reprise.hierarchy_path"]): s.status for s in spans
    }
    ends = {(kind, path): (status, attrs) for e, path, kind, status, attrs in heard.calls if e == "end"}
    assert {key: status for key, (status, _) in ends.items()} == status_of
    assert ends[("node", "flow.bad")][0] == "failed" and ends[("node", "flow.bad")][1]["reprise.attempts"] == 2
    assert ends[("node", "flow.a")][1]["reprise.node_kind"] == "python"
    starts = {(kind, path): attrs for e, path, kind, _, attrs in heard.calls if e == "start"}
    assert starts[("node", "flow.a")]["reprise.run_id"] == first.run_id
    assert "reprise.status" not in starts[("node", "flow.a")]

    # A re-run: the reused nodes start and end at once, marked reused, in their place.
    fail["bad"] = False
    heard_again = Recorder()
    again = make_context(
        "flow",
        previous_run_id=first.run_id,
        start_hierarchy_path="flow.bad",
        observability_settings=ObservabilitySettings(element_listeners=[heard_again]),
    )
    await FlowRunner(flow, again).run()
    ends = {(kind, path): (status, attrs) for e, path, kind, status, attrs in heard_again.calls if e == "end"}
    for reused in ("flow.a", "flow.u", "flow.loop.0.double", "flow.loop.1.double"):
        status, attrs = ends[("node", reused)]
        assert status == "completed" and attrs["reprise.reused"] is True, reused
        assert attrs["reprise.reused_from"] == first.run_id
    assert "reprise.reused" not in ends[("node", "flow.bad")][1] and ends[("node", "flow.bad")][0] == "completed"
    assert heard_again.calls[-1][:4] == ("end", "flow", "run", "completed")
    assert sorted(heard_again.elements("start")) == sorted(heard_again.elements("end"))


class Broken:
    """A listener that raises from one of its methods, every time."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.calls = 0

    def _maybe_raise(self, method: str) -> None:
        if method == self.method:
            self.calls += 1
            raise RuntimeError(f"listener broken in {method} ({self.calls})")

    def on_element_start(self, path: HierarchyPath, element_type: str, attributes: Mapping[str, Any]) -> None:
        self._maybe_raise("on_element_start")

    def on_element_end(
        self, path: HierarchyPath, element_type: str, status: str, attributes: Mapping[str, Any]
    ) -> None:
        self._maybe_raise("on_element_end")

    def __repr__(self) -> str:
        return f"Broken({self.method})"


@pytest.mark.anyio
async def test_a_failing_listener_is_logged_once_and_never_breaks_the_run(make_context: Any) -> None:
    flow = _listener_flow({"bad": False})
    broken_start, broken_end, heard = Broken("on_element_start"), Broken("on_element_end"), Recorder()
    settings = ObservabilitySettings(element_listeners=[broken_start, broken_end, heard])
    ctx = make_context("flow", observability_settings=settings)
    result = await FlowRunner(flow, ctx).run()
    assert result.status is RunStatus.COMPLETED and result.outcome == 1
    run_dir = ctx.require_run_dir().path
    spans = read_spans(run_dir)
    elements = [s for s in spans if s.attributes["reprise.element_type"] != "user_span"]
    assert all(s.status == "completed" for s in elements) and all(s.status_code == 0 for s in spans)
    # Called for every element all along; the listener after them heard everything.
    assert broken_start.calls == broken_end.calls == len(elements) == len(heard.elements("end"))
    logs = json_lines(trace_dir(run_dir) / "logs.jsonl")
    failures = [line for line in logs if line["event"].startswith("element listener failed")]
    assert [(f["listener"], f["method"], f["level"]) for f in failures] == [
        ("Broken(on_element_start)", "on_element_start", "error"),
        ("Broken(on_element_end)", "on_element_end", "error"),
    ]
    assert failures[0]["error"] == "RuntimeError: listener broken in on_element_start (1)"
    assert failures[0]["hierarchy_path"] == "flow"  # the run's start, the first element
    assert "Traceback" in failures[0]["exception"] and "_maybe_raise" in failures[0]["exception"]
    assert logs[-1]["event"] == "run finished" and logs[-1]["status"] == "completed"


def test_element_listener_settings_are_checked() -> None:
    with pytest.raises(RunSetupError, match="on_element_start and on_element_end"):
        ObservabilitySettings(element_listeners=[object()])  # type: ignore[list-item]
    with pytest.raises(RunSetupError, match="need tracing"):
        ObservabilitySettings(tracing=False, element_listeners=[Recorder()])
    assert ObservabilitySettings(element_listeners=[Recorder()]).element_listeners


# -- logs, user spans and metrics -------------------------------------------------------------


@pytest.mark.anyio
async def test_logs_correlate_to_spans(make_context: Any) -> None:
    async def talk(item: int, ctx: NodeContext) -> int:
        ctx.logger.info("working", item=item)
        ctx.logger.debug("too detailed for the default level")
        return item

    def talk_in_thread(ctx: NodeContext) -> str:
        ctx.logger.warning("from a worker thread", where="thread")
        return "ok"

    flow = (
        FlowDefinition()
        .for_each("loop", [1, 2, 3], FlowDefinition().node("talk", talk, inputs={"item": Var("item")}))
        .node("threaded", talk_in_thread)
    )
    result = await FlowRunner(flow, make_context("flow")).run()
    spans = read_spans(result.run_dir)
    known = span_ids(spans)
    logs = json_lines(trace_dir(result.run_dir) / "logs.jsonl")
    for line in logs:
        for key in ("timestamp", "level", "event", "run_id", "hierarchy_path", "trace_id", "span_id"):
            assert key in line, (key, line)
        assert line["run_id"] == result.run_id
        assert (line["trace_id"], line["span_id"]) in known, line
    named = by_name(spans)
    working = [line for line in logs if line["event"] == "working"]
    assert [(w["hierarchy_path"], w["item"]) for w in working] == [(f"flow.loop.{i}.talk", i + 1) for i in range(3)]
    for w in working:
        assert w["span_id"] == named[f"node {w['hierarchy_path']}"].span_id
    (threaded,) = [line for line in logs if line["event"] == "from a worker thread"]
    assert threaded["span_id"] == named["node flow.threaded"].span_id and threaded["level"] == "warning"
    assert not [line for line in logs if line["event"] == "too detailed for the default level"]
    assert logs[0]["event"] == "run started"


@pytest.mark.anyio
async def test_debug_level_and_logging_off(make_context: Any) -> None:
    async def talk(ctx: NodeContext) -> None:
        ctx.logger.debug("detail")

    flow = FlowDefinition().node("talk", talk)
    debug = await FlowRunner(
        flow, make_context("flow", observability_settings=ObservabilitySettings(log_level="debug"))
    ).run()
    assert "detail" in {line["event"] for line in json_lines(trace_dir(debug.run_dir) / "logs.jsonl")}
    quiet = await FlowRunner(
        flow, make_context("flow", observability_settings=ObservabilitySettings(logging=False))
    ).run()
    assert not (trace_dir(quiet.run_dir) / "logs.jsonl").exists()
    assert (trace_dir(quiet.run_dir) / "trace.jsonl").exists()
    off = await FlowRunner(flow, make_context("flow", observability_settings=ObservabilitySettings.disabled())).run()
    assert not {p.name for p in trace_dir(off.run_dir).iterdir()} & {"trace.jsonl", "metrics.jsonl", "logs.jsonl"}


@pytest.mark.anyio
async def test_user_spans_nest_and_user_metrics_are_recorded(make_context: Any) -> None:
    async def work(ctx: NodeContext) -> int:
        with ctx.span("parse", size=3) as outer:
            assert trace_api.get_current_span() is outer  # third-party instrumentation nests here
            with ctx.span("tokenize"):
                ctx.metric("tokens", 120, model="small")
            ctx.logger.info("parsed")
        with pytest.raises(KeyError), ctx.span("lookup"):
            raise KeyError("missing")
        ctx.metric("tokens", 30, model="small")
        return 1

    result = await FlowRunner(FlowDefinition().node("work", work), make_context("flow")).run()
    named = by_name(read_spans(result.run_dir))
    work_span = named["node flow.work"]
    assert named["parse"].parent_span_id == work_span.span_id
    assert named["tokenize"].parent_span_id == named["parse"].span_id
    assert named["lookup"].parent_span_id == work_span.span_id
    assert named["parse"].attributes["size"] == 3
    for name in ("parse", "tokenize", "lookup"):
        attrs = named[name].attributes
        assert attrs["reprise.element_type"] == "user_span"
        assert attrs["reprise.hierarchy_path"] == "flow.work" and attrs["reprise.run_id"] == result.run_id
    assert named["lookup"].status_code == 2
    assert [e["name"] for e in named["lookup"].events] == ["exception"]
    assert named["parse"].status_code == 0
    (point,) = metrics_of(result.run_dir)["tokens"]["histogram"]["dataPoints"]
    assert (point["count"], point["sum"], point["min"], point["max"]) == ("2", 150, 30, 120)
    assert point_attrs(point) == {"reprise.definition_path": "flow.work", "model": "small"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("bad name!", 1, "invalid metric name"),
        ("reprise.node.count", 1, "reserved"),
        ("ok", "12", "must be a number"),
    ],
)
async def test_a_bad_user_metric_fails_the_node_naming_it(
    make_context: Any, name: str, value: Any, message: str
) -> None:
    async def measure(ctx: NodeContext) -> None:
        ctx.metric(name, value)

    with pytest.raises(RunFailedError) as info:
        await FlowRunner(FlowDefinition().node("measure", measure), make_context("flow")).run()
    assert info.value.path == "flow.measure"
    cause = info.value.__cause__
    assert isinstance(cause, RepriseError) and message in str(cause) and cause.path == "flow.measure"


@pytest.mark.anyio
async def test_metrics_file_has_durations_counts_and_retries(make_context: Any) -> None:
    attempts: dict[int, int] = {}

    @node(retries=2, backoff=0.001)
    async def flaky(item: int) -> int:
        attempts[item] = attempts.get(item, 0) + 1
        if item == 2 and attempts[item] < 3:
            raise ConnectionError("try again")
        return item

    flow = FlowDefinition().for_each(
        "loop", [1, 2, 3], FlowDefinition().node("flaky", flaky, inputs={"item": Var("item")})
    )
    result = await FlowRunner(flow, make_context("flow")).run()
    metrics = metrics_of(result.run_dir)
    (duration,) = metrics["reprise.node.duration"]["histogram"]["dataPoints"]
    assert metrics["reprise.node.duration"]["unit"] == "s"
    assert duration["count"] == "3"
    assert duration["explicitBounds"] == list(DURATION_BUCKETS)
    assert sum(int(c) for c in duration["bucketCounts"]) == 3
    assert point_attrs(duration) == {"reprise.status": "completed", "reprise.node_kind": "python"}
    assert counts_by_status(metrics) == {"completed": 3}
    assert metrics["reprise.node.count"]["sum"]["isMonotonic"] is True
    (retries,) = metrics["reprise.node.retries"]["sum"]["dataPoints"]
    assert retries["asInt"] == "2"
    assert point_attrs(retries)["reprise.definition_path"] == "flow.loop.*.flaky"
    resource = {
        kv["key"]: kv["value"]
        for kv in json_lines(trace_dir(result.run_dir) / "metrics.jsonl")[0]["resourceMetrics"][0]["resource"][
            "attributes"
        ]
    }
    assert resource["reprise.run_id"] == {"stringValue": result.run_id}


def test_metrics_come_from_the_runs_own_meter_provider_once_at_the_end(tmp_path: Path) -> None:
    """Node counts, durations and user metrics are SDK instruments of the run's own providers
    (never the global ones, never another run's), written as one collection when the run ends."""
    from opentelemetry import metrics as metrics_api

    def measured(x: int, ctx: NodeContext) -> int:
        ctx.metric("work.size", 5)
        ctx.metric("work.size", 7)
        return x

    flow = FlowDefinition().node("a", measured, inputs={"x": Initial("x")}).node("b", lambda: 2)
    contexts = [RunContext("root", tmp_path, initial_inputs={"x": 1}) for _ in range(2)]
    results = [FlowRunner(flow, ctx).run_sync() for ctx in contexts]
    tels = [ctx.telemetry for ctx in contexts]
    assert tels[0] is not None and tels[1] is not None
    assert tels[0].meter_provider is not tels[1].meter_provider
    assert tels[0].tracer_provider is not tels[1].tracer_provider
    assert metrics_api.get_meter_provider() not in {t.meter_provider for t in tels}
    assert trace_api.get_tracer_provider() not in {t.tracer_provider for t in tels}
    metrics = metrics_of(results[0].run_dir)
    assert set(metrics) == {"reprise.node.duration", "reprise.node.count", "work.size"}
    (point,) = metrics["work.size"]["histogram"]["dataPoints"]
    assert point["count"] == "2" and point["sum"] == 12
    assert counts_by_status(metrics) == {"completed": 2}
    times = {
        p["timeUnixNano"]
        for m in metrics.values()
        for kind in ("sum", "histogram")
        for p in m.get(kind, {}).get("dataPoints", [])
    }
    assert len(times) == 1  # one collection
    assert len(json_lines(trace_dir(results[0].run_dir) / "metrics.jsonl")) == 1


# -- the format, against the protobuf definitions --------------------------------------------


@pytest.mark.anyio
async def test_every_line_is_otlp_json_per_the_spec(make_context: Any) -> None:
    @node(retries=1, backoff=0.001)
    async def odd(ctx: NodeContext) -> None:
        with ctx.span(
            "odd values",
            ratio=float("nan"),
            big=float("inf"),
            small=float("-inf"),
            tags=["a", "b"],
            flags=[True, False],
            nums=[1, 2],
            text='héllo ☃ "quoted" \\ back\nslash',
            yes=True,
            n=-(2**62),
        ):
            ctx.metric("odd.nan", float("nan"))
            ctx.metric("odd.value", 2.5)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        raise TimeoutError()

    ctx = make_context("flow")
    with pytest.raises(RunFailedError):
        await FlowRunner(FlowDefinition().node("odd", odd).node("never", odd), ctx).run()
    run_dir = ctx.require_run_dir().path
    trace_lines = json_lines(trace_dir(run_dir) / "trace.jsonl")
    parsed_spans = 0
    for line in trace_lines:
        check_otlp_json_shapes(line)
        message = parse_trace_line(line)
        for rs in message.resource_spans:
            for ss in rs.scope_spans:
                assert ss.scope.name == "reprise"
                for span in ss.spans:
                    parsed_spans += 1
                    assert len(span.trace_id) == 16 and len(span.span_id) == 8
                    assert span.kind == 1  # SPAN_KIND_INTERNAL
                    assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    assert parsed_spans == len(trace_lines) == 5  # run, flow, node, and "odd values" per attempt
    odd_values = [s for s in read_spans(run_dir) if s.name == "odd values"]
    assert len(odd_values) == 2
    attrs = odd_values[0].attributes
    assert math.isnan(attrs["ratio"]) and attrs["big"] == math.inf and attrs["small"] == -math.inf
    assert attrs["tags"] == ["a", "b"] and attrs["flags"] == [True, False] and attrs["nums"] == [1, 2]
    assert attrs["text"] == 'héllo ☃ "quoted" \\ back\nslash' and attrs["n"] == -(2**62) and attrs["yes"] is True
    # The ids the protobuf parser decoded are the hex ids of the file.
    first = trace_lines[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    decoded = parse_trace_line(trace_lines[0]).resource_spans[0].scope_spans[0].spans[0]
    assert decoded.trace_id.hex() == first["traceId"] and decoded.span_id.hex() == first["spanId"]

    (metrics_line,) = json_lines(trace_dir(run_dir) / "metrics.jsonl")
    check_otlp_json_shapes(metrics_line)
    metrics_message = parse_metrics_line(metrics_line)
    names = {m.name for rm in metrics_message.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"reprise.node.duration", "reprise.node.count", "reprise.node.retries", "odd.value"} <= names
    # A non-finite metric value is dropped (the SDK would too), with a warning in the run's log.
    assert "odd.nan" not in names
    dropped = [line for line in json_lines(trace_dir(run_dir) / "logs.jsonl") if line.get("metric") == "odd.nan"]
    assert len(dropped) == 2 and dropped[0]["level"] == "warning" and dropped[0]["hierarchy_path"] == "flow.odd"


def test_a_span_line_is_one_ascii_line_of_the_span_encoding(tmp_path: Path) -> None:
    """Awkward names and values (control characters, lone surrogates, NaN, non-ASCII) give one
    ASCII line (valid UTF-8 whatever the attributes hold) holding the span's OTLP encoding."""
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}), shutdown_on_exit=False)
    tracer = provider.get_tracer("reprise", "1")
    encoder = SpanLineEncoder(provider.resource, InstrumentationScope("reprise", "1"))
    parent = tracer.start_span("parent")
    span = tracer.start_span(
        'naïve \u2028 "name"',
        context=trace_api.set_span_in_context(parent),
        attributes={"s": "\x00ctl\ud800", "f": 0.1, "i": 7, "b": False, "l": ("x",), "nan": float("nan")},
    )
    span.add_event("e", {"k": "v"})
    span.set_status(trace_api.Status(trace_api.StatusCode.ERROR, "bad ☃"))
    span.end()
    line = encoder.line((span,))
    line.decode("ascii")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    (written,) = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert written == json.loads(json.dumps(encode_span(span)))
    assert {"key": "nan", "value": {"doubleValue": "NaN"}} in written["attributes"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_trace_write_that_fails_is_kept_for_the_run_to_raise() -> None:
    """The SDK's span processor logs an exporter's exception and goes on; the exporter keeps the
    first one, which the run raises when it ends, so a lost span never goes unnoticed."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

    from reprise.observability._telemetry import JsonlSink, TraceFileExporter

    provider = TracerProvider(shutdown_on_exit=False)
    exporter = TraceFileExporter(JsonlSink(Path("/dev/full")), SpanLineEncoder(provider.resource, None))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("reprise").start_span("lost").end()
    assert isinstance(exporter.error, OSError) and "No space left" in str(exporter.error)
    assert exporter.export([]) is SpanExportResult.FAILURE
    provider.shutdown()


# -- isolation -------------------------------------------------------------------------------


def _isolation_flow(size: int) -> FlowDefinition:
    async def work(item: int, ctx: NodeContext) -> int:
        ctx.logger.info("item", item=item)
        ctx.metric("work.item", item)
        await anyio.sleep(0)  # let the other run interleave
        return item

    body = FlowDefinition().node("work", work, inputs={"item": Var("item")})
    return FlowDefinition().for_each("loop", Initial("items"), body, max_iterations=size, max_concurrency=4)


def _check_only_own(result: Any, root: str, size: int, others: list[str]) -> str:
    spans = read_spans(result.run_dir)
    assert len(spans) == 3 + 2 * size  # run, flow, loop, and per item an iteration and a node
    assert {s.attributes["reprise.run_id"] for s in spans} == {result.run_id}
    (trace_id,) = {s.trace_id for s in spans}
    logs = json_lines(trace_dir(result.run_dir) / "logs.jsonl")
    assert {line["run_id"] for line in logs} == {result.run_id}
    assert {line["trace_id"] for line in logs} == {trace_id}
    assert sorted(line["item"] for line in logs if line["event"] == "item") == list(range(size))
    metrics = metrics_of(result.run_dir)
    assert counts_by_status(metrics) == {"completed": size}
    # One series for the loop's node (its definition path), holding every iteration's value.
    (point,) = metrics["work.item"]["histogram"]["dataPoints"]
    assert point_attrs(point) == {"reprise.definition_path": f"{root}.loop.*.work"}
    assert int(point["count"]) == size and float(point["sum"]) == sum(range(size))
    raw = "".join(p.read_text() for p in trace_dir(result.run_dir).glob("*.jsonl"))
    for other in others:
        assert other not in raw
    return trace_id


@pytest.mark.anyio
async def test_runs_one_after_the_other_see_only_their_own_telemetry(make_context: Any) -> None:
    global_provider = trace_api.get_tracer_provider()
    first = await FlowRunner(_isolation_flow(5), make_context("flow", initial_inputs={"items": list(range(5))})).run()
    second = await FlowRunner(_isolation_flow(7), make_context("flow", initial_inputs={"items": list(range(7))})).run()
    t1 = _check_only_own(first, "flow", 5, [second.run_id])
    t2 = _check_only_own(second, "flow", 7, [first.run_id])
    assert t1 != t2
    assert trace_api.get_tracer_provider() is global_provider


@pytest.mark.anyio
async def test_concurrent_runs_in_one_event_loop_see_only_their_own_telemetry(make_context: Any) -> None:
    global_provider = trace_api.get_tracer_provider()
    results: dict[str, Any] = {}

    async def run(key: str, size: int) -> None:
        ctx = make_context(key, initial_inputs={"items": list(range(size))})
        results[key] = await FlowRunner(_isolation_flow(size), ctx).run()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "alpha", 20)
        tg.start_soon(run, "beta", 30)
    alpha, beta = results["alpha"], results["beta"]
    assert _check_only_own(alpha, "alpha", 20, [beta.run_id]) != _check_only_own(beta, "beta", 30, [alpha.run_id])
    assert trace_api.get_tracer_provider() is global_provider
    # Log lines interleaved in time, yet each file holds only its own run's.
    alpha_logs = json_lines(trace_dir(alpha.run_dir) / "logs.jsonl")
    assert all(line["hierarchy_path"].startswith("alpha") for line in alpha_logs)


# -- bursts and crashes ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_10000_span_burst_loses_nothing(make_context: Any) -> None:
    async def burst(ctx: NodeContext) -> None:
        for i in range(5_000):
            with ctx.span("burst", i=i):
                pass

    def burst_in_thread(ctx: NodeContext) -> None:
        for i in range(2_500):
            with ctx.span("burst", i=i):
                pass

    # Spans end on the event loop and on two worker threads at once.
    flow = FlowDefinition().parallel(
        "par",
        {
            "loop": FlowDefinition().node("async_burst", burst),
            "t1": FlowDefinition().node("thread_burst", burst_in_thread),
            "t2": FlowDefinition().node("thread_burst", burst_in_thread),
        },
    )
    result = await FlowRunner(flow, make_context("flow")).run()
    lines = (trace_dir(result.run_dir) / "trace.jsonl").read_bytes().splitlines()
    spans = read_spans(result.run_dir)
    assert len(lines) == len(spans) == 10_000 + 9  # run, flow, parallel, 3 branches, 3 nodes
    assert len({s.span_id for s in spans}) == len(spans)
    bursts = Counter(s.attributes["reprise.hierarchy_path"] for s in spans if s.name == "burst")
    assert bursts == {
        "flow.par.loop.async_burst": 5_000,
        "flow.par.t1.thread_burst": 2_500,
        "flow.par.t2.thread_burst": 2_500,
    }


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from opentelemetry.sdk.trace import SpanProcessor
    from reprise import FlowDefinition, FlowRunner, ObservabilitySettings, RunContext, Var

    async def quick(item: int) -> int:
        return item

    def hang(ctx) -> int:
        ctx.logger.info("about to hang")
        with ctx.span("before the hang"):
            pass
        Path(sys.argv[2]).write_text(ctx.run_id)
        time.sleep(600)
        return 0

    async def first() -> int:
        return 1

    body = FlowDefinition().node("quick", quick, inputs={"item": Var("item")})
    flow = FlowDefinition().node("first", first).for_each("loop", [1, 2, 3], body).node("hang", hang)
    FlowRunner(flow, RunContext("crash", project_root=sys.argv[1])).run_sync()
    """
)


def test_a_killed_run_leaves_every_ended_span_in_the_trace(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    marker = tmp_path / "hanging"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(marker)])
    try:
        deadline = time.monotonic() + 60
        # The script writes the run id into the marker: it may exist, still empty, for a moment.
        while not (marker.exists() and marker.read_text()):
            assert proc.poll() is None, "the run ended before it hung"
            assert time.monotonic() < deadline, "the run never reached its hanging node"
            time.sleep(0.02)
        run_id = marker.read_text()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    run_dir = tmp_path / "runs" / run_id
    for line in json_lines(trace_dir(run_dir) / "trace.jsonl"):
        parse_trace_line(line)
    names = {s.name for s in read_spans(run_dir)}
    ended = {"node crash.first", "loop crash.loop", "before the hang"}
    ended |= {f"iteration crash.loop.{i}" for i in range(3)} | {f"node crash.loop.{i}.quick" for i in range(3)}
    assert names == ended, "every span that ended is there; those still open are not"
    logs = json_lines(trace_dir(run_dir) / "logs.jsonl")
    assert [line["event"] for line in logs] == ["run started", "about to hang"]
    view = render_trace_tree(run_dir)
    assert "(unfinished span" in view and "node crash.loop.2.quick" in view


# -- the viewer ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_viewer_shows_durations_statuses_and_reuse(make_context: Any, tmp_path: Path) -> None:
    fail = {"c": True}

    async def a() -> int:
        return 1

    async def b(x: int) -> int:
        return x + 1

    @node(retries=1, backoff=0.001)
    async def c(x: int) -> int:
        if fail["c"]:
            raise ValueError("c is broken")
        return x + 1

    flow = FlowDefinition().node("a", a).node("b", b, inputs={"x": Ref("a")}).node("c", c, inputs={"x": Ref("b")})
    first_ctx = make_context("flow")
    with pytest.raises(RunFailedError):
        await FlowRunner(flow, first_ctx).run()
    first_view = render_trace_tree(first_ctx.require_run_dir().path)
    lines = first_view.splitlines()
    assert re.fullmatch(rf"run {first_ctx.run_id}  FAILED  [\d.]+ (ms|s)  flow\.c: ValueError: c is broken", lines[0])
    assert re.fullmatch(r"└── flow flow  FAILED  [\d.]+ (ms|s)", lines[1])
    assert re.fullmatch(r"    ├── node flow\.a  \[python\]  completed  [\d.]+ ms", lines[2])
    assert re.fullmatch(
        r"    └── node flow\.c  \[python\]  FAILED  [\d.]+ ms  attempts=2  ValueError: c is broken", lines[4]
    )

    fail["c"] = False
    rerun_ctx = make_context("flow", previous_run_id=first_ctx.run_id, start_hierarchy_path="flow.c")
    rerun = await FlowRunner(flow, rerun_ctx).run()
    spans = by_name(read_spans(rerun.run_dir))
    assert spans["node flow.a"].attributes["reprise.reused"] is True
    assert spans["node flow.a"].attributes["reprise.reused_from"] == first_ctx.run_id
    assert "reprise.reused" not in spans["node flow.c"].attributes
    assert spans[f"run {rerun.run_id}"].attributes["reprise.previous_run_id"] == first_ctx.run_id
    view = render_trace_tree(rerun.run_dir, ascii=True)
    assert f"|-- node flow.a  [python]  reused from {first_ctx.run_id}" in view
    assert f"|-- node flow.b  [python]  reused from {first_ctx.run_id}" in view
    assert re.search(r"`-- node flow\.c  \[python\]  completed  [\d.]+ ms\n", view)

    # `reprise trace` prints the same text; a run without a trace is an error.
    root = rerun.run_dir.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPRISE_")}
    cli = subprocess.run(
        [sys.executable, "-m", "reprise.cli", "trace", rerun.run_id, "--ascii", "--run-root", str(root)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert cli.returncode == 0 and cli.stdout == view, cli.stderr
    (rerun.run_dir / ".trace" / "trace.jsonl").unlink()
    missing = subprocess.run(
        [sys.executable, "-m", "reprise.cli", "trace", rerun.run_id, "--run-root", str(root)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert missing.returncode == 2 and "has no trace" in missing.stderr


@pytest.mark.anyio
async def test_viewer_folds_long_child_lists(make_context: Any) -> None:
    async def one(item: int) -> int:
        return item

    flow = FlowDefinition().for_each(
        "loop", list(range(5)), FlowDefinition().node("one", one, inputs={"item": Var("item")})
    )
    result = await FlowRunner(flow, make_context("flow")).run()
    view = render_trace_tree(result.run_dir, max_children=2)
    assert "iteration flow.loop.1" in view and "iteration flow.loop.2" not in view
    assert "        └── ... 3 more\n" in view
    assert render_trace_tree(read_spans(result.run_dir)) == render_trace_tree(result.run_dir)


# -- a node's span, as user code sees it ----------------------------------------------------


def _parity_flow(fail: dict[str, bool]) -> FlowDefinition:
    @node(retries=1, backoff=0.001)
    async def flaky(ctx: NodeContext) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("once")
        return 1

    async def annotate(ctx: NodeContext) -> int:
        span = ctx.current_span
        assert span is not None
        span.set_attribute("user.text", "v")
        span.set_attribute("user.list", [1, 2])
        span.set_attributes({"user.n": 3, "user.flag": True})
        span.set_attribute("user.text", "v2")  # an update moves the key last
        span.add_event("user.event", {"a": 1})
        span.record_exception(ValueError("handled"))
        span.set_status(trace_api.StatusCode.OK)
        with ctx.span("annotate.child", x=1) as child:
            assert child is not None and trace_api.get_current_span() is child
            child.set_attribute("y", 2.5)
        return 2

    async def const() -> int:
        return 1

    async def item(item: int) -> int:
        return item

    async def bad(x: int) -> int:
        if fail["bad"]:
            raise ValueError("bad") from KeyError("root cause")
        return x

    return (
        FlowDefinition()
        .node("flaky", flaky)
        .node("annotate", annotate)
        .for_each("loop", [1, 2], FlowDefinition().node("item", item, inputs={"item": Var("item")}))
        .parallel("par", {"left": FlowDefinition().node("l", const), "right": FlowDefinition().node("r", const)})
        .conditional("check", Ref("flaky"), FlowDefinition().node("yes", const))
        .node("bad", bad, inputs={"x": Ref("annotate")})
    )


@pytest.mark.anyio
async def test_a_nodes_span_keeps_what_user_code_did_to_it_and_reuse_marks_it(tmp_path: Path) -> None:
    """One flow (retries, user attributes, events, exceptions and status on the node's own span,
    a user span under it, every kind of container, a failure with a cause), then a re-run that
    reuses nodes: every line parses, and the spans hold what was done to them."""
    fail = {"bad": True}
    flow = _parity_flow(fail)
    first = RunContext("flow", project_root=tmp_path)
    with pytest.raises(RunFailedError):
        await FlowRunner(flow, first).run()
    fail["bad"] = False
    again = RunContext("flow", project_root=tmp_path, previous_run_id=first.run_id, start_hierarchy_path="flow.bad")
    await FlowRunner(flow, again).run()
    spans: dict[str, list[dict[str, Any]]] = {}
    for ctx in (first, again):
        lines = json_lines(trace_dir(ctx.require_run_dir().path) / "trace.jsonl")
        for line in lines:
            check_otlp_json_shapes(line)
            parse_trace_line(line)
        spans[ctx.run_id] = [
            sp for line in lines for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]
        ]
    assert len(spans[first.run_id]) == 18 and len(spans[again.run_id]) == 17  # annotate reused: no user span
    named = {sp["name"]: sp for sp in spans[first.run_id]}
    annotate = named["node flow.annotate"]
    keys = [kv["key"] for kv in annotate["attributes"]]
    assert keys[-5:] == ["user.n", "user.flag", "user.text", "reprise.status", "reprise.attempts"]
    assert [e["name"] for e in annotate["events"]] == ["user.event", "exception"]
    assert annotate["status"] == {"code": 1}
    assert named["annotate.child"]["parentSpanId"] == annotate["spanId"]
    assert named["node flow.bad"]["status"] == {"code": 2, "message": "KeyError: 'root cause'"}
    reused = next(sp for sp in spans[again.run_id] if sp["name"] == "node flow.flaky")
    attrs = {kv["key"]: next(iter(kv["value"].values())) for kv in reused["attributes"]}
    assert attrs["reprise.reused"] is True and attrs["reprise.attempts"] == "0"
    assert attrs["reprise.reused_from"] == attrs["reprise.origin_run_id"] == first.run_id
    assert attrs["reprise.status"] == "completed"


@pytest.mark.anyio
async def test_nodes_that_use_their_span_and_nodes_that_do_not_leave_the_same_kind_of_trace(tmp_path: Path) -> None:
    """In one run, a node that logs and opens a child span (its span is made) and nodes that
    never touch theirs (written by the pending span): every node has one span, under the flow's
    span, with the same attributes; the child span and the log line name the node's span."""

    def busy(ctx: NodeContext) -> int:
        ctx.logger.info("working")
        with ctx.span("inner"):
            pass
        return 1

    flow = FlowDefinition().node("quiet", lambda: 0).node("busy", busy).node("after", lambda: 2)
    result = await FlowRunner(flow, RunContext("root", tmp_path, outcome_repo=False)).run()
    spans = [
        s
        for line in json_lines(result.run_dir / ".trace" / "trace.jsonl")
        for rs in line["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]
    by_name = {s["name"]: s for s in spans}
    assert sorted(s["name"] for s in spans if s["name"].startswith("node ")) == [
        "node root.after",
        "node root.busy",
        "node root.quiet",
    ]
    flow_span = by_name["flow root"] if "flow root" in by_name else next(s for s in spans if "parentSpanId" not in s)
    for name in ("node root.quiet", "node root.busy", "node root.after"):
        span = by_name[name]
        assert span["parentSpanId"] == flow_span["spanId"]
        keys = [a["key"] for a in span["attributes"]]
        assert keys == [
            "reprise.run_id",
            "reprise.hierarchy_path",
            "reprise.element_type",
            "reprise.node_kind",
            "reprise.status",
            "reprise.attempts",
        ]
    assert by_name["inner"]["parentSpanId"] == by_name["node root.busy"]["spanId"]
    logs = json_lines(result.run_dir / ".trace" / "logs.jsonl")
    (working,) = [entry for entry in logs if entry.get("event") == "working"]
    assert working["span_id"] == by_name["node root.busy"]["spanId"]


def _node_spans(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {
        s["name"]: s
        for line in json_lines(run_dir / ".trace" / "trace.jsonl")
        for rs in line["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    }


@pytest.mark.anyio
async def test_a_node_logger_first_used_after_the_node_ended_names_the_span_the_trace_holds(tmp_path: Path) -> None:
    """A thread a node started logs through the node's logger only after the node ended (its
    span's line written without the span object): the log line still names that span."""
    import threading

    go = threading.Event()
    threads: list[threading.Thread] = []

    def starts_a_thread(ctx: NodeContext) -> int:
        def later() -> None:
            go.wait()
            ctx.logger.info("late line")

        thread = threading.Thread(target=later)
        thread.start()
        threads.append(thread)
        return 1

    def releases_it() -> int:
        go.set()
        threads[0].join()
        return 2

    flow = FlowDefinition().node("early", starts_a_thread).node("next", releases_it)
    result = await FlowRunner(flow, RunContext("root", tmp_path, outcome_repo=False)).run()
    spans = _node_spans(result.run_dir)
    (late,) = [e for e in json_lines(result.run_dir / ".trace" / "logs.jsonl") if e.get("event") == "late line"]
    assert late["span_id"] == spans["node root.early"]["spanId"]
    assert sum(1 for name in spans if name == "node root.early") == 1


def test_a_node_runs_inside_its_own_span(tmp_path: Path) -> None:
    """The node's span is the current OpenTelemetry span while it runs, so spans libraries open
    with a tracer of their own nest under it."""

    def work() -> str:
        return f"{trace_api.get_current_span().get_span_context().span_id:016x}"

    flow = FlowDefinition().node("work", work)
    result = FlowRunner(flow, RunContext("root", tmp_path, outcome_repo=False)).run_sync()
    assert result.outcome == _node_spans(result.run_dir)["node root.work"]["spanId"]
