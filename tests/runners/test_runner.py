"""FlowRunner and AgentRunner: the typed RunResult, failing runs, run_sync and explicit set-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from reprise import (
    AgentDefinition,
    AgentRunner,
    FlowDefinition,
    FlowRunner,
    Initial,
    NodeExecutionError,
    Ref,
    RunContext,
    RunFailedError,
    RunResult,
    RunStatus,
)
from reprise.run import RunDirectory


class Summary(BaseModel):
    words: int
    title: str


def split(text: str) -> list[str]:
    return text.split()


def summarise(words: list[str]) -> Summary:
    return Summary(words=len(words), title=words[0].title())


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _flow() -> FlowDefinition:
    return (
        FlowDefinition()
        .node("split", split, inputs={"text": Initial("text")})
        .node("summarise", summarise, inputs={"words": Ref("split")})
    )


@pytest.mark.anyio
async def test_run_returns_a_typed_result(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="flow", project_root=tmp_path, initial_inputs={"text": "hello big world"})
    result = await FlowRunner(_flow(), ctx).run()
    assert isinstance(result, RunResult)
    assert result.run_id == ctx.run_id
    assert result.status is RunStatus.COMPLETED and result.ok
    assert result.run_dir == ctx.require_run_dir().path and result.run_dir.is_dir()
    assert result.outcome == Summary(words=3, title="Hello")
    assert result.outcomes == {
        "flow.split": ["hello", "big", "world"],
        "flow.summarise": Summary(words=3, title="Hello"),
    }
    assert result["flow.summarise"].title == "Hello"
    assert (result.executed, result.reused, result.failed_path, result.error) == (2, 0, None, None)
    assert result.load_outcome("flow.summarise") == {"words": 3, "title": "Hello"}
    assert RunDirectory(result.run_dir).read_metadata().status is RunStatus.COMPLETED


@pytest.mark.anyio
async def test_failing_node_fails_the_run(tmp_path: Path) -> None:
    def explode(words: list[str]) -> int:
        raise RuntimeError(f"cannot handle {len(words)} words")

    marker = tmp_path / "after-ran"

    def after() -> None:
        marker.write_text("should not happen")

    flow = (
        FlowDefinition()
        .node("split", split, inputs={"text": Initial("text")})
        .subflow("analyse", FlowDefinition().node("explode", explode, inputs={"words": Ref("split")}))
        .node("after", after)
    )
    ctx = RunContext(root_component_id="flow", project_root=tmp_path, initial_inputs={"text": "a b"})
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, ctx).run()
    error = info.value
    assert error.path == "flow.analyse.explode"
    assert error.run_id == ctx.run_id
    assert "cannot handle 2 words" in str(error)
    assert isinstance(error.__cause__, NodeExecutionError)
    result: RunResult = error.result  # type: ignore[attr-defined]
    assert result.status is RunStatus.FAILED and not result.ok
    assert result.failed_path == "flow.analyse.explode"
    assert result.outcomes == {"flow.split": ["a", "b"]}

    meta = _json(result.run_dir / ".trace" / "metadata.json")
    assert meta["status"] == "failed"
    assert "cannot handle 2 words" in meta["error_msg"]
    assert ctx.status is RunStatus.FAILED
    # Completed work is kept, the failure is recorded where it happened and up the tree.
    assert _json(result.run_dir / "flow" / "split" / "result.json")["status"] == "completed"
    assert _json(result.run_dir / "flow" / "split" / "outcome.json") == ["a", "b"]
    node = _json(result.run_dir / "flow" / "analyse" / "explode" / "result.json")
    assert node["status"] == "failed" and node["error"]["type"] == "RuntimeError"
    assert _json(result.run_dir / "flow" / "analyse" / "result.json")["status"] == "failed"
    assert _json(result.run_dir / "flow" / "result.json")["status"] == "failed"
    # Nothing after the failure ran.
    assert not (result.run_dir / "flow" / "after").exists() and not marker.exists()


@pytest.mark.anyio
async def test_a_failed_run_is_never_recorded_completed_even_inside_a_context_manager(tmp_path: Path) -> None:
    flow = FlowDefinition().node("bad", _bad)
    with pytest.raises(RunFailedError):
        async with RunContext(root_component_id="flow", project_root=tmp_path) as ctx:
            await FlowRunner(flow, ctx).run()
    assert RunDirectory(ctx.require_run_dir().path).read_metadata().status is RunStatus.FAILED


def _bad() -> None:
    raise ValueError("bad")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_sync(tmp_path: Path, backend: str) -> None:
    ctx = RunContext(root_component_id="flow", project_root=tmp_path, initial_inputs={"text": "sync run"})
    result = FlowRunner(_flow(), ctx).run_sync(backend=backend)
    assert result.ok and result.outcome == Summary(words=2, title="Sync")
    with pytest.raises(RunFailedError, match=r"flow\.bad: run .* failed: ValueError: bad"):
        FlowRunner(FlowDefinition().node("bad", _bad), RunContext("flow", tmp_path)).run_sync(backend=backend)


def test_explicit_setup_with_a_prefix(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="flow", project_root=tmp_path, initial_inputs={"text": "x y"})
    runner = FlowRunner(_flow(), ctx)
    runner.setup_run(run_id_prefix="manual")
    assert ctx.run_id.startswith("manual_run_")
    result = runner.run_sync()
    assert result.run_id == ctx.run_id and result.ok


def test_setup_by_hand_through_the_context(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="flow", project_root=tmp_path, initial_inputs={"text": "x y"})
    ctx.setup_run(run_id_prefix="ctx")
    result = FlowRunner(_flow(), ctx).run_sync()
    assert result.run_id.startswith("ctx_run_") and result.ok
    # The runner completed the run itself; completing again changes nothing.
    ctx.complete_run("failed")
    assert RunDirectory(result.run_dir).read_metadata().status is RunStatus.COMPLETED


@pytest.mark.anyio
async def test_agent_runner(tmp_path: Path) -> None:
    agent = (
        AgentDefinition()
        .flow("read", _flow())
        .subagent(
            "review",
            AgentDefinition().flow("check", FlowDefinition().node("ok", _is_long, inputs=Ref("read.summarise"))),
        )
    )
    ctx = RunContext(root_component_id="agent", project_root=tmp_path, initial_inputs={"text": "one two three four"})
    result = await AgentRunner(agent, ctx).run()
    assert result.outcomes["agent.read.summarise"] == Summary(words=4, title="One")
    assert result.outcomes["agent.review.check.ok"] is True
    assert result.outcome is True
    assert (result.run_dir / "agent" / "review" / "check" / "ok" / "outcome.json").is_file()


def _is_long(s: Summary) -> bool:
    return s.words > 3


@pytest.mark.anyio
async def test_a_timeout_error_from_the_node_itself_is_not_reported_as_a_reprise_timeout(tmp_path: Path) -> None:
    def slow_service() -> int:
        raise TimeoutError("the service did not answer")

    flow = FlowDefinition().node("call", slow_service)
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, RunContext("root", tmp_path)).run()
    result = json.loads((info.value.result.run_dir / "root/call/result.json").read_text())
    assert result["error"]["type"] == "TimeoutError"
    assert result["error"]["message"] == "the service did not answer"
    assert "timed out after" not in str(info.value)
