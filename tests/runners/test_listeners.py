"""Run listeners: what the executor and RunContext tell them, in which order, and what a
failing one costs (nothing but its own error)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reprise import FlowDefinition, FlowRunner, RunContext
from reprise.run import RunStatus
from reprise.run._lifecycle import ElementFinished, ElementStarted, RunFinished, RunStarted

pytestmark = pytest.mark.anyio


class Recorder:
    """Implements all four Protocols; keeps what it was told and what the run looked like."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def run_started(self, *, run: RunContext) -> None:
        self.events.append(("run_started", run.run_id, run.telemetry is not None))

    def element_started(self, *, path: str, started_at: str, input: Any) -> None:
        self.events.append(("element_started", path, input))

    def element_finished(
        self,
        *,
        path: str,
        status: Any,
        outcome_json: bytes | None,
        reused: bool = False,
        declares_files: bool = False,
    ) -> None:
        self.events.append(("element_finished", path, str(status), outcome_json, reused))

    def run_finished(self, *, run: RunContext, status: RunStatus, error_msg: str | None) -> None:
        meta = json.loads((run.require_run_dir().trace_dir / "metadata.json").read_text())
        # Told before the run's record is final, while its trace is still open, after the
        # inner listeners wrote outcomes.json.
        outcomes = (run.require_run_dir().trace_dir / "outcomes.json").is_file()
        self.events.append(("run_finished", str(status), meta["status"], outcomes))


def flow() -> FlowDefinition:
    return FlowDefinition().node("a", lambda: 2).node("b", lambda: 3)


def test_the_recorder_implements_every_protocol() -> None:
    recorder = Recorder()
    for protocol in (RunStarted, ElementStarted, ElementFinished, RunFinished):
        assert isinstance(recorder, protocol)


async def test_a_listener_is_told_the_run_in_order(tmp_path: Path) -> None:
    ctx = RunContext("flow", tmp_path)
    recorder = Recorder()
    ctx.add_listener(recorder)
    result = await FlowRunner(flow(), ctx).run()
    assert recorder.events == [
        ("run_started", result.run_id, True),
        ("element_started", "flow.a", None),
        ("element_finished", "flow.a", "completed", b"2\n", False),
        ("element_started", "flow.b", None),
        ("element_finished", "flow.b", "completed", b"3\n", False),
        ("run_finished", "completed", "running", True),
    ]
    meta = json.loads((result.run_dir / ".trace" / "metadata.json").read_text())
    assert meta["status"] == "completed" and meta["outcome_commit"]


async def test_a_rerun_tells_reused_nodes(tmp_path: Path) -> None:
    first = await FlowRunner(flow(), RunContext("flow", tmp_path)).run()
    ctx = RunContext("flow", tmp_path, previous_run_id=first.run_id, start_hierarchy_path="flow.b")
    recorder = Recorder()
    ctx.add_listener(recorder)
    await FlowRunner(flow(), ctx).run()
    finished = [e for e in recorder.events if e[0] == "element_finished"]
    assert finished == [
        ("element_finished", "flow.a", "completed", None, True),
        ("element_finished", "flow.b", "completed", b"3\n", False),
    ]


async def test_a_failing_listener_costs_neither_the_commit_nor_the_trace(tmp_path: Path) -> None:
    class Broken:
        def run_finished(self, *, run: RunContext, status: RunStatus, error_msg: str | None) -> None:
            raise RuntimeError("the listener broke")

    ctx = RunContext("flow", tmp_path)
    ctx.add_listener(Broken())
    with pytest.raises(RuntimeError, match="the listener broke"):
        await FlowRunner(flow(), ctx).run()
    trace_dir = ctx.require_run_dir().trace_dir
    meta = json.loads((trace_dir / "metadata.json").read_text())
    assert meta["status"] == "completed" and meta["outcome_commit"]
    assert "Broken: the listener broke" in meta["completion_hook_error"]
    logs = [json.loads(line) for line in (trace_dir / "logs.jsonl").read_text().splitlines()]
    assert logs[-1]["event"] == "run finished"
    assert any(line["event"] == "completion hook failed" for line in logs)
    spans = (trace_dir / "trace.jsonl").read_text()
    assert "run " + ctx.run_id in spans  # the run's span was ended and written


def test_a_plain_script_gets_the_standard_listeners(tmp_path: Path) -> None:
    with RunContext("job", tmp_path) as ctx:
        assert ctx.telemetry is not None
    meta = json.loads((ctx.require_run_dir().trace_dir / "metadata.json").read_text())
    assert meta["status"] == "completed" and meta["outcome_commit"]


def test_something_that_is_no_listener_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="no run listener"):
        RunContext("job", tmp_path).add_listener(object())
