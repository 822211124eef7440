"""Plain Python functions as nodes: sync and async, model-typed and annotation-typed input,
validation of input and outcome at run time, and what lands in the node's files."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel, Field

from reprise import (
    FlowDefinition,
    FlowRunner,
    FunctionNode,
    Initial,
    NodeContext,
    NodeExecutionError,
    NodeInputError,
    RunContext,
    RunFailedError,
    RunResult,
    node,
)

pytestmark = pytest.mark.anyio


class Text(BaseModel):
    text: str
    lower: bool = False


class Counts(BaseModel):
    words: int = Field(ge=0)
    lines: int


def count_sync(inp: Text) -> Counts:
    text = inp.text.lower() if inp.lower else inp.text
    return Counts(words=len(text.split()), lines=text.count("\n") + 1)


async def count_async(inp: Text) -> Counts:
    await anyio.sleep(0)
    return count_sync(inp)


def shout(text: str, times: int = 1) -> str:
    return (text.upper() + "!") * times


async def shout_async(text: str, times: int = 1) -> str:
    await anyio.sleep(0)
    return shout(text, times)


def read(path: Path) -> Path:
    return path


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


async def _run(flow: FlowDefinition, tmp_path: Path, **kwargs: Any) -> RunResult:
    ctx = RunContext(root_component_id="flow", project_root=tmp_path, **kwargs)
    return await FlowRunner(flow, ctx).run()


@pytest.mark.parametrize("fn", [count_sync, count_async], ids=["sync", "async"])
async def test_model_typed_node(fn: Callable[..., Any], tmp_path: Path) -> None:
    flow = FlowDefinition().node("count", fn, inputs={"text": Initial("text"), "lower": True})
    result = await _run(flow, tmp_path, initial_inputs={"text": "One two\nthree"})
    assert result.outcomes["flow.count"] == Counts(words=3, lines=2)
    node_dir = result.run_dir / "flow" / "count"
    assert _json(node_dir / "input.json") == {"text": "One two\nthree", "lower": True}
    assert _json(node_dir / "outcome.json") == {"words": 3, "lines": 2}
    res = _json(node_dir / "result.json")
    assert res["status"] == "completed"
    assert res["node_kind"] == "python"
    assert res["node"] == fn.__qualname__
    assert res["attempts"] == 1


@pytest.mark.parametrize("fn", [shout, shout_async], ids=["sync", "async"])
async def test_annotation_typed_node_with_default(fn: Callable[..., Any], tmp_path: Path) -> None:
    flow = FlowDefinition().node("a", fn, inputs={"text": "hi"}).node("b", fn, inputs={"text": "yo", "times": "2"})
    result = await _run(flow, tmp_path)
    assert result.outcomes["flow.a"] == "HI!"
    # Annotation-style input is validated like a model: "2" is coerced to the int 2.
    assert result.outcomes["flow.b"] == "YO!YO!"
    assert _json(result.run_dir / "flow" / "b" / "input.json") == {"text": "yo", "times": 2}
    node_obj = FunctionNode(fn)
    assert node_obj.input_model is not None
    assert set(node_obj.input_model.model_fields) == {"text", "times"}


async def test_node_without_input_and_without_return_annotation(tmp_path: Path) -> None:
    def hello():  # type: ignore[no-untyped-def]  # no annotations at all: outcome is not checked
        return {"greeting": "hello", "n": [1, 2]}

    flow = FlowDefinition().node("hello", hello).node("lam", lambda: 7)
    result = await _run(flow, tmp_path)
    assert result.outcomes["flow.hello"] == {"greeting": "hello", "n": [1, 2]}
    assert result.outcomes["flow.lam"] == 7
    assert _json(result.run_dir / "flow" / "hello" / "input.json") is None
    assert _json(result.run_dir / "flow" / "hello" / "outcome.json") == {"greeting": "hello", "n": [1, 2]}


async def test_decorator_forms_and_context_parameter(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    @node
    async def plain(x: int) -> int:
        return x + 1

    @node(retries=2, timeout=30)
    async def with_ctx(x: int, ctx: NodeContext) -> str:
        seen["path"] = str(ctx.path)
        seen["attempt"] = ctx.attempt
        seen["run_id"] = ctx.run_id
        (ctx.node_dir / "note.txt").write_text("written by the node")
        ctx.annotate_result(tokens=12)
        return f"{x}@{ctx.path.name}"

    assert isinstance(plain, FunctionNode) and isinstance(with_ctx, FunctionNode)
    assert with_ctx.settings.retries == 2 and with_ctx.settings.timeout == 30
    assert with_ctx.input_model is not None and set(with_ctx.input_model.model_fields) == {"x"}
    flow = FlowDefinition().node("plain", plain, inputs={"x": 1}).node("ctx_node", with_ctx, inputs={"x": 5})
    result = await _run(flow, tmp_path)
    assert result.outcomes["flow.ctx_node"] == "5@ctx_node"
    assert seen == {"path": "flow.ctx_node", "attempt": 1, "run_id": result.run_id}
    node_dir = result.run_dir / "flow" / "ctx_node"
    assert (node_dir / "note.txt").read_text() == "written by the node"
    assert _json(node_dir / "result.json")["tokens"] == 12


async def test_sync_nodes_run_off_the_event_loop_thread(tmp_path: Path) -> None:
    loop_thread = threading.get_ident()
    threads: dict[str, int] = {}

    def in_thread() -> int:
        threads["default"] = threading.get_ident()
        return 1

    def inline() -> int:
        threads["inline"] = threading.get_ident()
        return 2

    flow = FlowDefinition().node("t", in_thread).node("i", node(thread=False)(inline))
    await _run(flow, tmp_path)
    assert threads["default"] != loop_thread
    assert threads["inline"] == loop_thread


# -- validation at run time ----------------------------------------------------------------------


async def test_invalid_input_is_a_node_input_error_naming_the_path(tmp_path: Path) -> None:
    marker = tmp_path / "called"

    def never(inp: Text) -> int:
        marker.write_text("called")
        return 0

    flow = (
        FlowDefinition()
        .node("ok", lambda: 1)
        .subflow("sub", FlowDefinition().node("count", never, inputs={"text": Initial("n")}))
    )
    with pytest.raises(RunFailedError) as info:
        await _run(flow, tmp_path, initial_inputs={"n": 12})
    error = info.value
    assert error.path == "flow.sub.count"
    cause = error.__cause__
    assert isinstance(cause, NodeInputError)
    assert cause.path == "flow.sub.count"
    assert "does not validate against Text" in cause.message
    assert "text: Input should be a valid string" in cause.message
    assert str(cause).startswith("flow.sub.count: ")
    assert not marker.exists()
    result = error.result  # type: ignore[attr-defined]
    res = _json(result.run_dir / "flow" / "sub" / "count" / "result.json")
    assert res["status"] == "failed"
    assert res["attempts"] == 0
    assert res["error"]["type"] == "NodeInputError"
    assert "flow.sub.count" in res["error"]["message"]


async def test_missing_required_field_and_missing_initial_input(tmp_path: Path) -> None:
    flow = FlowDefinition().node("s", shout)  # 'text' has no binding and no default
    with pytest.raises(RunFailedError) as info:
        await _run(flow, tmp_path)
    assert isinstance(info.value.__cause__, NodeInputError)
    assert "text: Field required" in info.value.__cause__.message

    flow = FlowDefinition().node("s", shout, inputs={"text": Initial("nope")})
    with pytest.raises(RunFailedError) as info:
        await _run(flow, tmp_path, initial_inputs={"a": 1, "b": 2})
    cause = info.value.__cause__
    assert isinstance(cause, NodeInputError) and cause.path == "flow.s"
    assert "initial input 'nope' was not given (given: a, b)" in cause.message


async def test_invalid_outcome_is_a_node_execution_error_naming_the_path(tmp_path: Path) -> None:
    def negative() -> Counts:
        return {"words": -1, "lines": 1}  # type: ignore[return-value]

    def other_model() -> Counts:
        return Text(text="not counts")  # type: ignore[return-value]

    def wrong_type() -> int:
        return "many"  # type: ignore[return-value]

    cases: list[tuple[Callable[[], Any], str]] = [
        (negative, "words: Input should be greater than or equal to 0"),
        (other_model, "valid dictionary or instance of Counts"),
        (wrong_type, "valid integer"),
    ]
    for fn, fragment in cases:
        flow = FlowDefinition().node("bad", fn)
        with pytest.raises(RunFailedError) as info:
            await _run(flow, tmp_path)
        cause = info.value.__cause__
        assert isinstance(cause, NodeExecutionError)
        assert cause.path == "flow.bad"
        assert "outcome does not validate" in cause.message and fragment in cause.message
        run_dir = info.value.result.run_dir  # type: ignore[attr-defined]
        assert not (run_dir / "flow" / "bad" / "outcome.json").exists()
        assert _json(run_dir / "flow" / "bad" / "result.json")["status"] == "failed"


async def test_outcome_is_coerced_to_the_return_annotation(tmp_path: Path) -> None:
    def as_dict() -> Counts:
        return {"words": "3", "lines": 1}  # type: ignore[return-value]

    def as_str() -> int:
        return "42"  # type: ignore[return-value]

    result = await _run(FlowDefinition().node("d", as_dict).node("s", as_str), tmp_path)
    assert result.outcomes["flow.d"] == Counts(words=3, lines=1)
    assert result.outcomes["flow.s"] == 42


async def test_exception_in_a_node_is_wrapped_with_its_path(tmp_path: Path) -> None:
    def explode() -> int:
        raise KeyError("missing thing")

    with pytest.raises(RunFailedError) as info:
        await _run(FlowDefinition().node("explode", explode), tmp_path)
    cause = info.value.__cause__
    assert isinstance(cause, NodeExecutionError)
    assert cause.path == "flow.explode"
    assert "KeyError" in cause.message
    assert isinstance(cause.__cause__, KeyError)
    run_dir = info.value.result.run_dir  # type: ignore[attr-defined]
    error = _json(run_dir / "flow" / "explode" / "result.json")["error"]
    assert error["type"] == "KeyError"
    assert "missing thing" in error["message"]
    assert "in explode" in error["traceback"] and 'raise KeyError("missing thing")' in error["traceback"]


def test_outcome_dump_and_load_round_trip() -> None:
    model_node = FunctionNode(count_sync)
    data = model_node.dump_outcome(Counts(words=2, lines=1))
    assert data == {"words": 2, "lines": 1}
    assert model_node.load_outcome(data) == Counts(words=2, lines=1)
    path_node = FunctionNode(read)
    assert path_node.dump_outcome(Path("/tmp/x")) == "/tmp/x"
    assert path_node.load_outcome("/tmp/x") == Path("/tmp/x")
    assert repr(path_node) == "FunctionNode(read)"
